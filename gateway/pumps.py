"""A bridged connection: its own MQTT link, the two pumps and the keepalive.

:func:`bridge` waits for the MQTT connect pacer, connects the CP's paho
client (client id = CP id), subscribes to ``<cp-id>/out``, records the
subprotocol in the shadow and runs the tasks.  Frames are copied verbatim, WebSocket -> ``<cp-id>/in`` and ``<cp-id>/out``
-> WebSocket.  Each task records why it ended in the session's
:class:`~.local_sessions.Ending` (the first cause wins) and cancels ``done``,
the bridge's nursery, so whichever side ends first ends the other.
"""

from __future__ import annotations

import json
import logging

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .admission import SessionSettings
from .calls import CallTimeouts
from .errors import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_UNSUPPORTED_DATA,
    MqttBacklogExceeded,
    MqttConnectError,
    MqttConnectionLost,
)
from .lifecycle import Event
from .local_sessions import ChargePointSession
from .mqtt_link import MqttDriver, MqttLink
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)

FROM_GATEWAY = "$gateway/local"  # the "topic" of frames the gateway itself queues for a CP (never an MQTT topic)
BACKLOG_REASON = "Charge point does not read its messages; too much waiting for it"
MQTT_ENDED_REASON = (
    "MQTT session ended (taken over by a newer connection, or the broker went away); reconnect"
)
BINARY_REASON = "Binary frames are not allowed: OCPP-J uses text frames"


async def bridge(
    ws: WebSocketConnection,
    session: ChargePointSession,
    driver: MqttDriver,
    settings: SessionSettings,
    calls: CallTimeouts,
) -> None:
    """Run an accepted CP's bridge until either side ends; raises MqttBacklogExceeded, MqttError."""
    identity = session.identity
    if not await _wait_for_turn(ws, session, driver):
        log.info("%s: left while waiting for its turn to connect to MQTT", identity.cp_id)
        return
    async with driver.link(identity.cp_id, admitted=True) as link:
        session.lifecycle.advance(Event.MQTT_CONNECTED)
        await link.subscribe(identity.out_topic, 1)
        session.link = link
        record = {"state": {"reported": {"ocppProtocol": session.subprotocol}}}
        await link.publish(
            f"$aws/things/{identity.thing_name}/shadow/update", json.dumps(record).encode(), 1
        )
        # Constant task names: trio would otherwise build one name string per task, per CP.
        async with trio.open_nursery() as nursery:
            done = nursery.cancel_scope
            # A CP that does not read while its /out fills: the pump may be stuck in a send to it,
            # so the link ends the whole bridge at once (MqttBacklogExceeded, raised below).
            link.on_backlog_exceeded = done.cancel
            nursery.start_soon(mqtt_to_cp, ws, link, session, done, calls, name="mqtt->cp")
            if settings.ping_interval > 0:
                nursery.start_soon(keepalive, ws, session, done, settings, name="ws keepalive")
            # The CP -> MQTT pump runs in this task (one task fewer per CP); whichever pump ends
            # first cancels the nursery, and with it the other pump.
            await cp_to_mqtt(ws, link, session, done, settings, calls)
        backlog = link.close_reason if link.backlog_exceeded else None
    if backlog is not None:
        raise MqttBacklogExceeded(backlog)


async def _wait_for_turn(
    ws: WebSocketConnection, session: ChargePointSession, driver: MqttDriver
) -> bool:
    """Wait for the MQTT connect pacer; False if the CP left meanwhile (its slot goes to the next)."""
    wait_closed = getattr(ws, "wait_closed", None)
    if wait_closed is None:  # not from our server (no way to watch for the close): just wait
        await driver.admit(session.identity.cp_id)
        return True
    async with trio.open_nursery() as nursery:

        async def cancel_when_closed() -> None:
            await wait_closed()
            nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_when_closed, name="admission watch")
        refused: MqttConnectError | None = None
        try:
            await driver.admit(session.identity.cp_id)
        except MqttConnectError as exc:  # raised as itself, not wrapped in the nursery's group
            refused = exc
        nursery.cancel_scope.cancel()
    if refused is not None:
        raise refused
    return ws.closed is None


async def keepalive(
    ws: WebSocketConnection,
    session: ChargePointSession,
    done: trio.CancelScope,
    settings: SessionSettings,
) -> None:
    """Ping the CP; one that does not answer in time is closed and its MQTT session released."""
    while True:
        await trio.sleep(settings.ping_interval)
        with trio.move_on_after(settings.pong_timeout) as waited:
            try:
                await ws.ping()
            except ConnectionClosed:
                return  # the reader task reports the close
        if waited.cancelled_caught:
            log.info(
                "%s: no pong within %g s; closing", session.identity.cp_id, settings.pong_timeout
            )
            session.ending.set(
                CLOSE_INTERNAL_ERROR,
                f"Keepalive timeout: no pong within {settings.pong_timeout:g} s",
            )
            done.cancel()
            return


async def cp_to_mqtt(
    ws: WebSocketConnection,
    link: MqttLink,
    session: ChargePointSession,
    done: trio.CancelScope,
    settings: SessionSettings,
    calls: CallTimeouts,
) -> None:
    """WebSocket -> ``<cp-id>/in``: text frames only, at most ``max_message_rate`` per second."""
    cp_id = session.identity.cp_id
    topic = session.identity.in_topic
    rate = settings.max_message_rate
    bucket = TokenBucket(rate, settings.max_message_burst) if rate > 0 else None
    try:
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                session.ending.set(CLOSE_UNSUPPORTED_DATA, BINARY_REASON)
                break
            if bucket is not None and not bucket.take(trio.current_time()):
                log.warning("%s: more than %g messages/s; closing", cp_id, rate)
                session.ending.set(
                    CLOSE_POLICY_VIOLATION, f"Message rate limit exceeded ({rate:g}/s)"
                )
                break
            log.debug("%s: CP -> %s: %s", cp_id, topic, message)
            await link.publish(topic, message.encode("utf-8"), 1)
            calls.sent_by_cp(session, message, trio.current_time())
    except ConnectionClosed as exc:
        session.ending.set(*close_of(exc))
    except MqttConnectionLost as exc:
        session.ending.set(*mqtt_ending(exc))
    done.cancel()


async def mqtt_to_cp(
    ws: WebSocketConnection,
    link: MqttLink,
    session: ChargePointSession,
    done: trio.CancelScope,
    calls: CallTimeouts,
) -> None:
    """``<cp-id>/out`` (and the gateway's own answers) -> WebSocket, UTF-8 text only."""
    cp_id = session.identity.cp_id
    out_topic = session.identity.out_topic
    try:
        while True:
            topic, payload = await link.receive()
            local = topic == FROM_GATEWAY
            if topic != out_topic and not local:
                continue
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                log.error(
                    "%s: dropped a message on %s that is not UTF-8 text (%d bytes)",
                    cp_id,
                    topic,
                    len(payload),
                )
                continue
            if not local and not calls.sent_to_cp(session, text):
                log.warning(
                    "%s: dropped a late answer (the CP already got a time-out CALLERROR): %s",
                    cp_id,
                    text[:200],
                )
                continue
            try:
                await ws.send_message(text)
            except ConnectionClosed as exc:
                log.warning(
                    "%s: CP left before a message could be delivered: %s", cp_id, text[:200]
                )
                session.ending.set(*close_of(exc))
                break
            log.debug("%s: %s -> CP: %s", cp_id, topic, text)
    except MqttConnectionLost as exc:
        log.info("%s: MQTT connection ended: %s", cp_id, exc)
        session.ending.set(*mqtt_ending(exc))
    done.cancel()


def mqtt_ending(exc: MqttConnectionLost) -> tuple[int, str]:
    """The close code and reason for a CP whose MQTT connection ended."""
    if isinstance(exc, MqttBacklogExceeded):
        return CLOSE_POLICY_VIOLATION, BACKLOG_REASON
    return CLOSE_NORMAL, MQTT_ENDED_REASON


def close_of(exc: ConnectionClosed) -> tuple[int, str]:
    """The close code and reason the CP sent (1006 when it sent none)."""
    if exc.reason is None:
        return CLOSE_ABNORMAL, "connection lost"
    return exc.reason.code, exc.reason.reason or ""
