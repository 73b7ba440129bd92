"""How a bridged connection ends (no sockets): the close a CP sees for each cause, first cause wins."""

from __future__ import annotations

import trio
from trio_websocket import CloseReason, ConnectionClosed

from gateway.errors import MqttBacklogExceeded, MqttConnectionLost
from gateway.identity import validate_identity
from gateway.local_sessions import REPLACED_REASON, ChargePointSession, Ending, LocalSessions
from gateway.pumps import BACKLOG_REASON, MQTT_ENDED_REASON, close_of, mqtt_ending


def test_mqtt_connection_lost_closes_1000_so_the_cp_reconnects() -> None:
    assert mqtt_ending(MqttConnectionLost("broker gone")) == (1000, MQTT_ENDED_REASON)


def test_a_cp_that_does_not_read_is_closed_1008() -> None:
    assert mqtt_ending(MqttBacklogExceeded("too much")) == (1008, BACKLOG_REASON)


def test_the_cp_s_own_close_is_recorded_and_a_dropped_connection_is_1006() -> None:
    assert close_of(ConnectionClosed(CloseReason(1000, "bye"))) == (1000, "bye")
    assert close_of(ConnectionClosed(None)) == (1006, "connection lost")


def test_the_first_ending_wins_and_is_clipped_to_a_close_frame() -> None:
    ending = Ending()
    ending.set(1011, "x" * 200)
    ending.set(1001, "Gateway shutting down")
    assert ending.code == 1011 and len(ending.reason.encode()) <= 123


async def test_a_newer_connection_replaces_the_older_with_1000() -> None:
    sessions = LocalSessions()
    cp1 = validate_identity("CP1")
    old = ChargePointSession(cp1, "ocpp2.0.1", arrived=1.0)
    new = ChargePointSession(cp1, "ocpp2.0.1", arrived=2.0)
    assert await sessions.claim(old)
    old.finished.set()
    assert await sessions.claim(new)
    assert (old.ending.code, old.ending.reason) == (1000, REPLACED_REASON)
    assert old.cancel_scope.cancel_called and sessions.get("CP1") is new
    sessions.release(old)  # the old one's handler ends later: it must not remove the new one
    assert "CP1" in sessions and len(sessions) == 1


async def test_a_slower_check_does_not_replace_a_connection_that_arrived_after_it() -> None:
    sessions = LocalSessions()
    cp1 = validate_identity("CP1")
    later = ChargePointSession(cp1, "ocpp2.0.1", arrived=5.0)
    earlier = ChargePointSession(cp1, "ocpp2.0.1", arrived=4.0)
    assert await sessions.claim(later)
    assert not await sessions.claim(earlier)
    assert sessions.get("CP1") is later and later.ending.code is None


async def test_the_take_over_waits_for_the_old_connection_at_most_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    sessions = LocalSessions()
    cp1 = validate_identity("CP1")
    await sessions.claim(ChargePointSession(cp1, "ocpp2.0.1", arrived=1.0))
    start = trio.current_time()
    assert await sessions.claim(ChargePointSession(cp1, "ocpp2.0.1", arrived=2.0), timeout=3.0)
    assert trio.current_time() - start == 3.0
