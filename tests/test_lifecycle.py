"""A connection's lifecycle table (pure): every legal move, and every other one refused."""

from __future__ import annotations

import itertools

import pytest

from gateway.errors import GatewayError
from gateway.lifecycle import TRANSITIONS, Event, IllegalTransition, Lifecycle, State, transition

S, E = State, Event
LEGAL = [
    (S.ADMITTING, E.REFUSED, S.REFUSING),
    (S.ADMITTING, E.CHALLENGED, S.CLOSED),
    (S.ADMITTING, E.HANDSHAKE_DONE, S.ACCEPTED),
    (S.ADMITTING, E.LOST, S.CLOSED),
    (S.REFUSING, E.CLOSED, S.CLOSED),
    (S.REFUSING, E.LOST, S.CLOSED),
    (S.ACCEPTED, E.REFUSED, S.REFUSING),
    (S.ACCEPTED, E.MQTT_CONNECTED, S.BRIDGING),
    (S.ACCEPTED, E.ENDED, S.CLOSING),
    (S.ACCEPTED, E.DRAINED, S.DRAINING),
    (S.ACCEPTED, E.LOST, S.CLOSED),
    (S.BRIDGING, E.ENDED, S.CLOSING),
    (S.BRIDGING, E.DRAINED, S.DRAINING),
    (S.BRIDGING, E.LOST, S.CLOSED),
    (S.CLOSING, E.CLOSED, S.CLOSED),
    (S.CLOSING, E.LOST, S.CLOSED),
    (S.DRAINING, E.CLOSED, S.CLOSED),
    (S.DRAINING, E.LOST, S.CLOSED),
]
ILLEGAL = sorted(
    set(itertools.product(State, Event)) - {(s, e) for s, e, _ in LEGAL},
    key=lambda pair: (pair[0].value, pair[1].value),
)


@pytest.mark.parametrize(("state", "event", "after"), LEGAL)
def test_legal_transition(state: State, event: Event, after: State) -> None:
    assert transition(state, event) is after


def test_the_table_is_exactly_the_legal_moves() -> None:
    assert dict(TRANSITIONS) == {(s, e): a for s, e, a in LEGAL}


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_illegal_transition_raises(state: State, event: Event) -> None:
    with pytest.raises(IllegalTransition) as raised:
        transition(state, event)
    assert (raised.value.state, raised.value.event) == (state, event)
    assert isinstance(raised.value, GatewayError)
    assert state.value in str(raised.value) and event.value in str(raised.value)


def test_closed_is_final() -> None:
    assert not [e for e in Event if (State.CLOSED, e) in TRANSITIONS]


def test_every_state_is_reachable_and_every_path_ends_closed() -> None:
    reachable, frontier = {State.ADMITTING}, [State.ADMITTING]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(State)
    for state in State:
        assert state is State.CLOSED or any(s is state for s, _ in TRANSITIONS)


@pytest.mark.parametrize(
    "events",
    [
        [E.CHALLENGED],  # HTTP 401
        [E.REFUSED, E.CLOSED],  # refused during admission
        [E.HANDSHAKE_DONE, E.REFUSED, E.CLOSED],  # reconnect rate
        [E.HANDSHAKE_DONE, E.ENDED, E.CLOSED],  # lost the take-over race, or left while waiting
        [E.HANDSHAKE_DONE, E.MQTT_CONNECTED, E.ENDED, E.CLOSED],  # a CP's ordinary life
        [E.HANDSHAKE_DONE, E.MQTT_CONNECTED, E.DRAINED, E.CLOSED],  # gateway drained
        [E.HANDSHAKE_DONE, E.LOST],  # gone before its close
    ],
)
def test_a_connection_s_lives(events: list[Event]) -> None:
    lifecycle = Lifecycle()
    assert lifecycle.state is State.ADMITTING and not lifecycle.closed
    for event in events:
        lifecycle.advance(event)
    assert lifecycle.closed and repr(lifecycle) == "Lifecycle(CLOSED)"


def test_an_illegal_move_leaves_the_state_unchanged() -> None:
    lifecycle = Lifecycle()
    lifecycle.advance(E.HANDSHAKE_DONE)
    with pytest.raises(IllegalTransition):
        lifecycle.advance(E.CHALLENGED)  # a 401 after the 101 cannot happen
    assert lifecycle.state is State.ACCEPTED
