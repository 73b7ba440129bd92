"""A bridged connection: its own MQTT link and the two directions.

:func:`bridge` waits for the MQTT connect pacer, connects the CP's paho
client (client id = CP id), subscribes to ``<cp-id>/out``, records the
subprotocol in the shadow and forwards frames verbatim: WebSocket ->
``<cp-id>/in`` in the WebSocket's reader task (:class:`CpToMqtt`), and
``<cp-id>/out`` -> WebSocket in the connection's own task
(:func:`mqtt_to_cp`).  Whatever ends one direction records why in the
session's :class:`~.local_sessions.Ending` (the first cause wins) and ends
the session, and with it the other direction.  Keepalive pings come from
one task per process (:mod:`.keepalive`), which starts :func:`ping`.
"""

from __future__ import annotations

import json
import logging
from functools import partial

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
from .redact import redact_frame

log = logging.getLogger(__name__)

FROM_GATEWAY = "$gateway/local"  # the "topic" of frames the gateway itself queues for a CP (never an MQTT topic)
BACKLOG_REASON = "Charge point does not read its messages; too much waiting for it"
MQTT_ENDED_REASON = (
    "MQTT session ended (taken over by a newer connection, or the broker went away); reconnect"
)
BINARY_REASON = "Binary frames are not allowed: OCPP-J uses text frames"


class Traffic:
    """Frames and bytes forwarded each way, for the whole process (:mod:`.metrics` reads them).

    Plain ints bumped where a frame is forwarded: no lock, no Prometheus object on the hot path.
    """

    __slots__ = ("bytes_from_cp", "bytes_to_cp", "frames_from_cp", "frames_to_cp")

    def __init__(self) -> None:
        self.frames_from_cp = 0  # WebSocket -> <cp-id>/in, published
        self.bytes_from_cp = 0
        self.frames_to_cp = 0  # <cp-id>/out (and the gateway's own answers) -> WebSocket, sent
        self.bytes_to_cp = 0


async def bridge(
    ws: WebSocketConnection,
    session: ChargePointSession,
    driver: MqttDriver,
    settings: SessionSettings,
    calls: CallTimeouts,
    traffic: Traffic,
) -> None:
    """Run an accepted CP's bridge until either side ends; raises MqttError.

    Two tasks per CP: the WebSocket's reader task forwards each frame to
    MQTT itself (:class:`CpToMqtt`, handed to the connection with
    ``route_messages``), and this task forwards what MQTT delivers to the CP
    (:func:`mqtt_to_cp`) beside the link's reader.  Either side ending ends
    the session's cancel scope, and with it this function.
    """
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
        # A CP that does not read while its /out fills: the pump may be stuck in a send to it,
        # so the link ends the whole session at once.
        link.on_backlog_exceeded = partial(_backlog_exceeded, link, session)
        route = getattr(ws, "route_messages", None)
        if route is not None:
            route(
                CpToMqtt(link, session, settings, calls, traffic), partial(_cp_closed, ws, session)
            )
            await mqtt_to_cp(ws, link, session, calls, traffic)
        else:  # a connection not from our server (tests): a second task reads it
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _read_into, ws, CpToMqtt(link, session, settings, calls, traffic)
                )
                await mqtt_to_cp(ws, link, session, calls, traffic)


async def _read_into(ws: WebSocketConnection, sink: CpToMqtt) -> None:
    try:
        while True:
            await sink(await ws.get_message())
    except ConnectionClosed as exc:
        sink.session.end(*close_of(exc))


def _backlog_exceeded(link: MqttLink, session: ChargePointSession) -> None:
    log.warning(
        "%s: closing, the CP does not read what is sent to it: %s",
        session.identity.cp_id,
        link.close_reason,
    )
    session.end(CLOSE_POLICY_VIOLATION, BACKLOG_REASON)


def _cp_closed(ws: WebSocketConnection, session: ChargePointSession) -> None:
    """The WebSocket closed (the CP's close frame, or its TCP connection gone): end the session."""
    reason = ws.closed
    if reason is None:
        # The reader was cancelled (the gateway is stopping): whoever cancelled it says why.
        session.cancel_scope.cancel()
    else:
        session.end(reason.code, reason.reason or "")


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


async def ping(ws: WebSocketConnection, session: ChargePointSession, pong_timeout: float) -> None:
    """One keepalive ping (started by :class:`.keepalive.Keepalive`); no pong in time ends the session."""
    with trio.move_on_after(pong_timeout) as waited:
        try:
            await ws.ping()
        except ConnectionClosed:
            return  # the reader reports the close
    if waited.cancelled_caught:
        # Runs in the keepalive's task (one per process), not the CP's: the id is given.
        log.info(
            "%s: no pong within %g s; closing",
            session.identity.cp_id,
            pong_timeout,
            extra={"cp_id": session.identity.cp_id},
        )
        session.end(CLOSE_INTERNAL_ERROR, f"Keepalive timeout: no pong within {pong_timeout:g} s")


class CpToMqtt:
    """WebSocket -> ``<cp-id>/in``: text frames only, at most ``max_message_rate`` per second.

    Called by the WebSocket's reader task with each complete message; it
    never raises (whatever goes wrong ends the session, with its reason).
    """

    __slots__ = ("_bucket", "_calls", "_link", "_rate", "_topic", "_traffic", "session")

    def __init__(
        self,
        link: MqttLink,
        session: ChargePointSession,
        settings: SessionSettings,
        calls: CallTimeouts,
        traffic: Traffic,
    ) -> None:
        self._link = link
        self.session = session
        self._calls = calls
        self._traffic = traffic
        self._topic = session.identity.in_topic
        self._rate = rate = settings.max_message_rate
        self._bucket = TokenBucket(rate, settings.max_message_burst) if rate > 0 else None

    async def __call__(self, message: str | bytes) -> None:
        session = self.session
        if session.ending.code is not None:
            return  # ending: nothing more is forwarded
        if isinstance(message, bytes):
            session.end(CLOSE_UNSUPPORTED_DATA, BINARY_REASON)
            return
        if self._bucket is not None and not self._bucket.take(trio.current_time()):
            log.warning("%s: more than %g messages/s; closing", session.identity.cp_id, self._rate)
            session.end(CLOSE_POLICY_VIOLATION, f"Message rate limit exceeded ({self._rate:g}/s)")
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: CP -> %s: %s", session.identity.cp_id, self._topic, redact_frame(message)
            )
        payload = message.encode("utf-8")
        try:
            await self._link.publish(self._topic, payload, 1)
        except MqttConnectionLost as exc:
            session.end(*mqtt_ending(exc))
            return
        except Exception:  # a bug costs this connection only, never the reader (and the server)
            log.exception("%s: unexpected error forwarding a frame", session.identity.cp_id)
            session.end(CLOSE_INTERNAL_ERROR, "Internal error in the gateway")
            return
        traffic = self._traffic
        traffic.frames_from_cp += 1
        traffic.bytes_from_cp += len(payload)
        self._calls.sent_by_cp(session, message, trio.current_time())


async def mqtt_to_cp(
    ws: WebSocketConnection,
    link: MqttLink,
    session: ChargePointSession,
    calls: CallTimeouts,
    traffic: Traffic,
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
            if not local and not calls.sent_to_cp(session, text, trio.current_time()):
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
                    "%s: CP left before a message could be delivered: %s",
                    cp_id,
                    redact_frame(text, limit=200),
                )
                session.ending.set(*close_of(exc))
                break
            traffic.frames_to_cp += 1
            traffic.bytes_to_cp += len(payload)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: %s -> CP: %s", cp_id, topic, redact_frame(text))
    except MqttConnectionLost as exc:
        log.info("%s: MQTT connection ended: %s", cp_id, exc)
        session.ending.set(*mqtt_ending(exc))


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
