"""A charge point connection's life as one table of states and transitions (pure).

::

    ADMITTING  --HANDSHAKE_DONE--> ACCEPTED, --REFUSED--> REFUSING, --CHALLENGED, LOST--> CLOSED
    ACCEPTED   --MQTT_CONNECTED--> BRIDGING, --REFUSED (reconnect rate)--> REFUSING,
               --ENDED--> CLOSING, --DRAINED--> DRAINING, --LOST--> CLOSED
    BRIDGING   --ENDED--> CLOSING, --DRAINED--> DRAINING, --LOST--> CLOSED
    REFUSING, CLOSING, DRAINING  --CLOSED, LOST--> CLOSED

* ADMITTING: the upgrade request is read; the admission checks run
  (:func:`.admission.decide`: identity, subprotocol, registry, password).
* REFUSING: the handshake was completed only so that a refusal can carry a
  close code and reason (OCPP-J: without a subprotocol when none matches).
* ACCEPTED: the handshake is complete; the CP id is claimed (an older
  connection of the same CP is closed with 1000) and the MQTT connect pacer
  waited for.
* BRIDGING: the CP's own MQTT connection is up and frames are pumped both
  ways; whichever side ends first decides the close.
* CLOSING / DRAINING: the close handshake, bounded by ``close_timeout``, or by
  ``drain_timeout`` while the gateway shuts down.
* CLOSED: nothing left (also after a 401, or when the CP vanished first: LOST).

:func:`transition` is the only way to move; any other move raises
:class:`IllegalTransition`, a bug in the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from .errors import GatewayError


class State(enum.Enum):
    ADMITTING = "admitting"
    REFUSING = "refusing"
    ACCEPTED = "accepted"
    BRIDGING = "bridging"
    CLOSING = "closing"
    DRAINING = "draining"
    CLOSED = "closed"


class Event(enum.Enum):
    REFUSED = "refused"  # admission said no: close code and reason
    CHALLENGED = "challenged"  # HTTP 401 on the upgrade: no WebSocket at all
    HANDSHAKE_DONE = "handshake done"  # 101 sent: a WebSocket now
    MQTT_CONNECTED = "mqtt connected"  # the CP's MQTT link is up: pumps start
    ENDED = "ended"  # the first ending recorded (CP left, MQTT ended, replaced, revoked, error)
    DRAINED = "drained"  # ended while the gateway drains (closed with 1001, longer close wait)
    CLOSED = "closed"  # the close handshake is over (or timed out)
    LOST = "lost"  # the CP went away before or during the handshake


TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (State.ADMITTING, Event.REFUSED): State.REFUSING,
    (State.ADMITTING, Event.CHALLENGED): State.CLOSED,
    (State.ADMITTING, Event.HANDSHAKE_DONE): State.ACCEPTED,
    (State.ADMITTING, Event.LOST): State.CLOSED,
    (State.REFUSING, Event.CLOSED): State.CLOSED,
    (State.REFUSING, Event.LOST): State.CLOSED,
    (State.ACCEPTED, Event.REFUSED): State.REFUSING,
    (State.ACCEPTED, Event.MQTT_CONNECTED): State.BRIDGING,
    (State.ACCEPTED, Event.ENDED): State.CLOSING,
    (State.ACCEPTED, Event.DRAINED): State.DRAINING,
    (State.ACCEPTED, Event.LOST): State.CLOSED,
    (State.BRIDGING, Event.ENDED): State.CLOSING,
    (State.BRIDGING, Event.DRAINED): State.DRAINING,
    (State.BRIDGING, Event.LOST): State.CLOSED,
    (State.CLOSING, Event.CLOSED): State.CLOSED,
    (State.CLOSING, Event.LOST): State.CLOSED,
    (State.DRAINING, Event.CLOSED): State.CLOSED,
    (State.DRAINING, Event.LOST): State.CLOSED,
}


class IllegalTransition(GatewayError):
    """``event`` cannot happen in ``state``: the caller has a bug."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"illegal transition: {event.value!r} in state {state.value!r}")
        self.state = state
        self.event = event


def transition(state: State, event: Event) -> State:
    """The state after ``event``; raises :class:`IllegalTransition` if the table has no such move."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(state, event) from None


class Lifecycle:
    """One connection's current state; moves only through :func:`transition`."""

    __slots__ = ("state",)

    def __init__(self, state: State = State.ADMITTING) -> None:
        self.state = state

    def advance(self, event: Event) -> State:
        self.state = transition(self.state, event)
        return self.state

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def __repr__(self) -> str:
        return f"Lifecycle({self.state.name})"
