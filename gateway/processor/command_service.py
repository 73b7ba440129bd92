"""Sending CSMS-initiated CALLs to charge points over MQTT, and correlating their answers.

:meth:`CommandService.call` checks a command, queues it and returns the CP's answer; the rules
(validation, matching, queueing, presence) are pure, in :mod:`.commands`.  Here:

* **Who the CP is.**  DescribeThing (no Thing: :class:`UnknownChargePoint`) and GetThingShadow:
  the gateway records the OCPP subprotocol in ``state.reported.ocppProtocol`` when a CP
  connects, so no shadow or no protocol there means the CP has never connected
  (:class:`ChargePointOffline`), and the payload is validated against that version's schema.
* **Whether it is online.**  With ``watch_presence`` (the long-running processor), a link
  subscribed to AWS IoT's lifecycle events (``$aws/events/presence/connected|disconnected/+``,
  which fakeiot publishes too) records each CP's state; a CP known to be disconnected is
  refused at once.  A CP not heard of since the service started (and every CP for the
  one-shot CLI) is tried, bounded by the timeout.
* **Correlation, with any number of processor replicas.**  The component that sends a command
  reads the answer itself: while a CP has commands queued, one MQTT link of this service (its
  own client id, clean session) subscribes non-shared, QoS 1, to ``<cp-id>/in`` and matches
  frames by message id; the link closes once the CP's queue is empty.  The processor's own
  ``+/in`` handling logs CALLRESULTs/CALLERRORs and answers nothing, so a replica that sees the
  answer too does no harm.
* **One outstanding CALL per CP** (OCPP-J): the link's task sends the queue's head, waits for
  its answer (``timeout``), then the next.  A caller that gives up while its command waits is
  taken out of the queue; one already sent is waited for by the link's task regardless.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio
from botocore.exceptions import BotoCoreError, ClientError

from .. import ocppj
from ..errors import MqttError, MqttSubscriptionRefused
from ..identity import thing_name_for
from ..logformat import CURRENT_CP
from ..mqtt_link import MqttDriver, MqttLink
from .actions import known_actions
from .commands import (
    PRESENCE_TOPICS,
    BrokerUnavailable,
    CallAnswered,
    CallRejected,
    ChargePointOffline,
    Command,
    CommandFailed,
    CommandQueues,
    CommandTimedOut,
    InvalidCommand,
    Outcome,
    Presence,
    QueueFull,
    UnknownChargePoint,
    build_call,
    check_command,
    check_target,
    match_answer,
    version_from_shadow,
)

log = logging.getLogger(__name__)

# Command outcomes as the metrics count them (docs/operations.md).
ACCEPTED = "accepted"  # the CP answered with a valid CALLRESULT
REJECTED = "rejected"  # the CP answered with a CALLERROR
INVALID_RESPONSE = "invalid_response"  # a CALLRESULT that breaks the response schema
TIMEOUT = "timeout"  # sent, no answer in time
REFUSED = "refused"  # never sent: invalid, unknown or offline CP, queue full
ERROR = "error"  # broker unavailable, internal error


def command_action_label(action: str) -> str:
    """``action`` as a metric label: an action of OCPP 1.6 or 2.0.1, else ``other``."""
    return action if action in known_actions("1.6") or action in known_actions("2.0.1") else "other"


def failure_outcome(error: CommandFailed) -> str:
    if isinstance(error, CommandTimedOut):
        return TIMEOUT
    if isinstance(error, InvalidCommand | UnknownChargePoint | ChargePointOffline | QueueFull):
        return REFUSED
    return ERROR


def answer_outcome(outcome: Outcome) -> str:
    if isinstance(outcome, CallAnswered):
        return ACCEPTED
    if isinstance(outcome, CallRejected):
        return REJECTED
    return INVALID_RESPONSE


@dataclass(frozen=True)
class CommandSettings:
    client_id: str = "cpo:processor"  # prefix of this service's MQTT client ids
    timeout: float = 30.0  # seconds a sent CALL may wait for its answer
    max_waiting: int = 10  # commands per CP queued behind the outstanding one


@dataclass(eq=False)
class _Ticket:
    command: Command
    done: trio.Event = field(default_factory=trio.Event)
    outcome: Outcome | None = None
    error: CommandFailed | None = None
    sent: bool = False


class CommandService:
    """Runs in a nursery (:meth:`run`); :meth:`call` sends one command and returns its outcome."""

    def __init__(
        self,
        driver: MqttDriver,
        iot: Any,
        iot_data: Any,
        settings: CommandSettings,
        *,
        watch_presence: bool = True,
    ) -> None:
        self._driver = driver
        self._iot = iot
        self._iot_data = iot_data
        self.settings = settings
        self._watch_presence = watch_presence
        self.presence = Presence()
        self._queues = CommandQueues(settings.max_waiting)
        self._nursery: trio.Nursery | None = None
        self.sent = 0  # CALLs published
        # The metrics (gateway/processor/metrics.py): (action label, outcome) -> commands.
        self.outcomes: Counter[tuple[str, str]] = Counter()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve :meth:`call` until cancelled; ``started()`` once presence is watched (if asked)."""
        async with trio.open_nursery() as nursery:
            if self._watch_presence:
                await nursery.start(self._watch)
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def call(self, cp_id: str, action: str, payload: dict[str, Any]) -> Outcome:
        """Send ``action`` to ``cp_id`` and return its answer; raises :class:`CommandFailed`."""
        label = command_action_label(action)
        try:
            outcome = await self._call(cp_id, action, payload)
        except CommandFailed as exc:
            self.outcomes[label, failure_outcome(exc)] += 1
            raise
        self.outcomes[label, answer_outcome(outcome)] += 1
        return outcome

    async def _call(self, cp_id: str, action: str, payload: dict[str, Any]) -> Outcome:
        if self._nursery is None:
            raise BrokerUnavailable("the command service is not running")
        check_target(cp_id, action)
        version = await self._version_of(cp_id)
        if self.presence.online(cp_id) is False:
            raise ChargePointOffline(f"{cp_id} is not connected")
        ticket = _Ticket(check_command(cp_id, action, payload, version))
        if self._queues.enter(cp_id, ticket):
            self._nursery.start_soon(self._serve_cp, cp_id, name=f"commands {cp_id}")
        waiting = self._queues.waiting(cp_id)
        # The link's task finishes every ticket; this bound only guards against a bug there.
        guard = (waiting + 1) * (self.settings.timeout + self._driver.settings.connect_timeout)
        try:
            with trio.move_on_after(guard):
                await ticket.done.wait()
        finally:
            if not ticket.sent:  # given up while it waited: it must never be sent
                self._queues.leave(cp_id, ticket)
        if ticket.error is not None:
            raise ticket.error
        if ticket.outcome is None:
            raise CommandTimedOut(f"{cp_id}: no answer to {action} in time")
        return ticket.outcome

    # -- who and where the CP is ----------------------------------------------------------

    async def _version_of(self, cp_id: str) -> str:
        thing = thing_name_for(cp_id)
        try:
            await trio.to_thread.run_sync(lambda: self._iot.describe_thing(thingName=thing))
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise UnknownChargePoint(f"{cp_id} is not a registered charge point") from None
            raise BrokerUnavailable(f"registry lookup of {cp_id} failed: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise BrokerUnavailable(f"registry lookup of {cp_id} failed: {exc}") from None
        try:
            response = await trio.to_thread.run_sync(
                lambda: self._iot_data.get_thing_shadow(thingName=thing)
            )
            document = ocppj.strict_loads(response["payload"].read().decode("utf-8"))
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise ChargePointOffline(f"{cp_id} has never connected (no shadow)") from None
            raise BrokerUnavailable(f"shadow lookup of {cp_id} failed: {_code(exc)}") from None
        except (BotoCoreError, ValueError, KeyError, TypeError) as exc:
            raise BrokerUnavailable(f"shadow lookup of {cp_id} failed: {exc}") from None
        version = version_from_shadow(document)
        if version is None:
            raise ChargePointOffline(f"{cp_id} has never connected (no ocppProtocol in its shadow)")
        return version

    async def _watch(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow presence events; reconnects after a lost connection (state kept meanwhile)."""
        started = False
        while True:
            try:
                async with self._driver.link(self._client_id("presence")) as link:
                    for topic in PRESENCE_TOPICS:
                        await link.subscribe(topic, 1)
                    if not started:
                        started = True
                        task_status.started()
                    while True:
                        topic, payload = await link.receive()
                        self.presence.apply(topic, payload)
            except MqttSubscriptionRefused:
                raise
            except MqttError as exc:
                if not started:
                    raise
                log.warning("commands: presence watch lost (%s); reconnecting in 1 s", exc)
            await trio.sleep(1.0)

    # -- one link per CP with commands ----------------------------------------------------

    async def _serve_cp(self, cp_id: str) -> None:
        """Send the CP's queued commands one at a time until its queue is empty."""
        CURRENT_CP.set(cp_id)  # this task is the CP's: its log lines carry the id
        try:
            async with self._driver.link(self._client_id("cmd")) as link:
                await link.subscribe(f"{cp_id}/in", 1)
                while (ticket := self._queues.head(cp_id)) is not None:
                    assert isinstance(ticket, _Ticket)
                    try:
                        await self._send_one(link, ticket)
                    finally:
                        self._queues.leave(cp_id, ticket)
                        ticket.done.set()
        except MqttError as exc:
            self._fail_all(cp_id, BrokerUnavailable(f"{cp_id}: MQTT broker unavailable: {exc}"))
        except Exception:  # a bug: answer the callers, never end the service
            log.exception("%s: command sender failed", cp_id)
            self._fail_all(cp_id, CommandFailed(f"{cp_id}: internal error while sending"))

    async def _send_one(self, link: MqttLink, ticket: _Ticket) -> None:
        command = ticket.command
        message_id, frame = build_call(command)
        ticket.sent = True
        await link.publish(f"{command.cp_id}/out", frame.encode(), 1)
        self.sent += 1
        log.info("%s: sent %s (message %s)", command.cp_id, command.action, message_id)
        with trio.move_on_after(self.settings.timeout):
            while True:
                _, payload = await link.receive()
                outcome = match_answer(command, message_id, payload)
                if outcome is not None:
                    ticket.outcome = outcome
                    log.info(
                        "%s: %s answered (%s)",
                        command.cp_id,
                        command.action,
                        type(outcome).__name__,
                    )
                    return
        ticket.error = CommandTimedOut(
            f"{command.cp_id}: no answer to {command.action} within {self.settings.timeout:g} s"
        )

    def _fail_all(self, cp_id: str, error: CommandFailed) -> None:
        while (ticket := self._queues.head(cp_id)) is not None:
            assert isinstance(ticket, _Ticket)
            ticket.sent = True  # it is finished: its caller must not touch the queue again
            if ticket.outcome is None and ticket.error is None:
                ticket.error = error
            self._queues.leave(cp_id, ticket)
            ticket.done.set()

    def _client_id(self, role: str) -> str:
        # Unique per link: replicas of the processor (and CLI runs) never take over each other's session.
        return f"{self.settings.client_id}:{role}:{uuid.uuid4().hex[:12]}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Error"))
