"""One MQTT connection driven by Trio: :class:`MqttLink` (see :mod:`.mqtt_link` for the design).

The link owns one paho client (:mod:`.mqtt_paho`) and its socket: the
connect (blocking part in a worker thread), the reader task, the writer task
started only while the socket is full, the flush and DISCONNECT on close, and
paho's callbacks, which run in the Trio thread inside ``loop_*`` and only
record what happened.  :class:`.mqtt_link.MqttDriver` creates links, runs
their tasks in the link's nursery and ticks them (``_misc``).
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

import paho.mqtt.client as paho
import trio
from paho.mqtt.enums import MQTTErrorCode

from .errors import (
    MqttBacklogExceeded,
    MqttConnectError,
    MqttConnectionLost,
    MqttConnectRefused,
    MqttSubscriptionRefused,
)
from .mqtt_paho import new_paho_client, pending_bytes

if TYPE_CHECKING:
    from .mqtt_link import MqttDriver

log = logging.getLogger(__name__)

FLUSH_TIMEOUT = 2.0  # seconds a closing link waits for PUBACKs of what it published


@dataclass(frozen=True, slots=True, eq=False)
class Delivery:
    """A message taken with ``receive(ack=False)``: hand it to :meth:`MqttLink.ack` once done with it."""

    topic: str
    payload: bytes
    _link: MqttLink = field(repr=False)
    _mid: int = field(repr=False)
    _qos: int = field(repr=False)


class MqttLink:
    """One paho client (one MQTT connection), used from Trio tasks."""

    def __init__(self, driver: MqttDriver, client_id: str, *, clean_session: bool) -> None:
        settings = driver.settings
        self.client_id = client_id
        self._settings = settings
        self._driver = driver
        self._client = new_paho_client(settings, client_id, clean_session=clean_session)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._sock: Any = None
        self._connack: trio.Event | None = trio.Event()  # dropped once connected
        # paho's ReasonCode objects each carry a copy of every reason name (about 1 KiB): keep plain values only.
        self._connect_refusal: str | None = None
        self._nursery: trio.Nursery | None = None  # the link's own, while connected
        self._writer_running = False
        # A list, not a deque: it is almost always empty, and an empty deque costs 600 bytes per CP.
        self._inbox: list[tuple[str, bytes, int, int]] = []
        self._inbox_bytes = 0
        self.backlog_exceeded = False
        # Called (in the Trio thread) when the backlog bound is passed: the consumer may be stuck
        # elsewhere (a send to a CP that does not read), so waiting for its next receive() is not enough.
        self.on_backlog_exceeded: Callable[[], None] | None = None
        # Events made only while a task waits (one per CP each would cost 300 bytes, and a new
        # one per message signalled would cost time).
        self._inbox_waiter: trio.Event | None = None
        self._unacked: set[int] = set()
        self._acked_waiter: trio.Event | None = None
        self._suback: dict[int, tuple[trio.Event, list[tuple[bool, int]]]] = {}
        self._closed = trio.Event()
        self._close_reason: str | None = None
        self._closing = False

    # -- public API -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return not self._closed.is_set()

    @property
    def close_reason(self) -> str | None:
        """Why the connection ended, once it has."""
        return self._close_reason

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe and wait for the SUBACK; returns the granted QoS."""
        self._check_open()
        rc, mid = self._client.subscribe(topic, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttConnectionLost(f"subscribe to {topic!r} failed: {paho.error_string(rc)}")
        done = trio.Event()
        codes: list[tuple[bool, int]] = []
        self._suback[mid] = (done, codes)
        self._write_now()
        with trio.move_on_after(self._settings.connect_timeout) as waited:
            await done.wait()
        if waited.cancelled_caught:
            raise MqttConnectionLost(
                f"no SUBACK for {topic!r} within {self._settings.connect_timeout:g} s"
            )
        self._check_open()
        if not codes or codes[0][0]:
            raise MqttSubscriptionRefused(f"broker refused subscription to {topic!r}")
        return codes[0][1]

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Hand a message to the broker.

        With QoS 1 this waits while ``max_inflight`` earlier messages are not
        yet acknowledged (PUBACK); it does not wait for this message's own
        PUBACK.  Raises :class:`MqttConnectionLost` if the connection is gone.
        """
        while qos > 0 and len(self._unacked) >= self._settings.max_inflight:
            self._check_open()
            if self._acked_waiter is None:
                self._acked_waiter = trio.Event()
            await self._acked_waiter.wait()
        self._check_open()
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttConnectionLost(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")
        if qos > 0:
            self._unacked.add(info.mid)
        self._write_now()

    def deliver_local(self, topic: str, payload: bytes) -> None:
        """Queue a message for the consumer as if it had been received (QoS 0, nothing to acknowledge).

        The gateway uses it to answer a CP in the CSMS's place, in order with
        what the broker sends, without a task of its own.
        """
        self._enqueue(topic, payload, 0, 0)

    @overload
    async def receive(self, *, ack: Literal[True] = True) -> tuple[str, bytes]: ...

    @overload
    async def receive(self, *, ack: Literal[False]) -> Delivery: ...

    async def receive(self, *, ack: bool = True) -> tuple[str, bytes] | Delivery:
        """The next (topic, payload) received, acknowledged as it is handed over.

        With ``ack=False`` it is not acknowledged: the caller gets a
        :class:`Delivery` and passes it to :meth:`ack` once the message is
        done with (at-least-once: unacknowledged, a QoS 1 message stays the
        broker's to deliver again).  Such messages count in the broker's
        in-flight window until acknowledged, so the window bounds how many a
        consumer holds.

        Messages that arrived before the connection ended are still returned;
        after them, raises :class:`MqttConnectionLost`.
        """
        while not self._inbox:
            self._check_open()
            if self._inbox_waiter is None:
                self._inbox_waiter = trio.Event()
            await self._inbox_waiter.wait()
        topic, payload, mid, qos = self._inbox.pop(0)
        self._inbox_bytes -= len(payload)
        if not ack:
            return Delivery(topic, payload, self, mid, qos)
        self._ack(mid, qos)
        return topic, payload

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a message taken with ``receive(ack=False)`` (PUBACK for QoS 1).

        Acknowledgements may come in any order (see the processor's notes on
        MQTT 3.1.1 section 4.6).  Once the connection has ended this does
        nothing: the broker delivers the message again to the next session.
        Acknowledge each delivery once.
        """
        if delivery._link is not self:
            raise ValueError(
                "a delivery is acknowledged on the link (the connection) that received it"
            )
        self._ack(delivery._mid, delivery._qos)

    def _ack(self, mid: int, qos: int) -> None:
        if qos > 0 and not self._closed.is_set():
            self._client.ack(mid, qos)
            self._write_now()

    # -- connection lifecycle ---------------------------------------------------

    async def _connect(self) -> None:
        settings = self._settings
        where = f"{settings.host}:{settings.port}"
        try:
            sock = await self._open_socket(where)
            # From here on paho runs only in this (the Trio) thread; connect_on queues and
            # writes CONNECT without blocking.
            self._client.on_socket_close = self._on_socket_close
            self._client.connect_on(sock, settings.host, settings.port, settings.keepalive)
            self._sock = self._client.socket()
            if self._sock is None:
                raise MqttConnectError(f"MQTT broker {where} closed the connection during CONNECT")
            # paho leaves Nagle's algorithm on: a PUBACK followed by a PUBLISH (the processor's
            # receive-then-answer) would then wait for the broker's delayed ACK, ~40 ms per round trip.
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._client.want_write():
                self._client.loop_write()
            connack = self._connack
            assert connack is not None
            with trio.move_on_after(settings.connect_timeout):
                while not connack.is_set() and self._sock is not None:
                    await trio.lowlevel.wait_readable(self._sock)
                    self._client.loop_read()
            if not connack.is_set():
                raise MqttConnectError(
                    f"MQTT broker {where} did not accept CONNECT within {settings.connect_timeout:g} s"
                )
            if self._connect_refusal is not None:
                raise MqttConnectRefused(
                    f"MQTT broker {where} refused client {self.client_id!r}: {self._connect_refusal}"
                )
        except BaseException:
            self._close_socket("connect failed")
            raise
        self._connack = None
        log.debug("%s: MQTT connected to %s", self.client_id, where)

    async def _open_socket(self, where: str) -> socket.socket | ssl.SSLSocket:
        """The TCP connection to the broker and its TLS handshake, within ``connect_timeout``.

        TCP is Trio's (a worker thread only to resolve a host name); the TLS
        handshake runs in a worker thread, so that OpenSSL's work does not
        hold up the event loop (one call, which releases the GIL while it
        works).  At most ``connect_limiter`` of these at a time.  Raises
        :class:`MqttConnectError`; the socket is closed on every error path.
        """
        settings = self._settings
        sock: socket.socket | ssl.SSLSocket | None = None
        try:
            async with self._driver.connect_limiter:
                with trio.move_on_after(settings.connect_timeout) as waited:
                    stream = await trio.open_tcp_stream(settings.host, settings.port)
                    raw = stream.socket
                    sock = socket.socket(raw.family, raw.type, raw.proto, raw.detach())
                if sock is None:
                    raise TimeoutError(f"no connection within {settings.connect_timeout:g} s")
                context = settings.ssl_context
                if context is not None:
                    sock = context.wrap_socket(
                        sock, server_hostname=settings.host, do_handshake_on_connect=False
                    )
                    left = waited.deadline - trio.current_time()
                    if left <= 0:
                        raise TimeoutError(
                            f"no TLS handshake within {settings.connect_timeout:g} s"
                        )
                    sock.settimeout(left)
                    await trio.to_thread.run_sync(sock.do_handshake)
                    sock.setblocking(False)
            return sock
        except BaseException as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, OSError):  # ssl.SSLError is one
                raise MqttConnectError(f"cannot reach MQTT broker {where}: {_why(exc)}") from None
            raise

    async def _disconnect(self) -> None:
        """Send DISCONNECT; paho closes the socket once it is written.

        Runs shielded after the link's reader and writer tasks have stopped,
        so it reads (PUBACKs) and writes by itself.
        """
        if self._closed.is_set() or self._sock is None:
            return
        # QoS 1 messages already handed over are not abandoned: wait (bounded) for their PUBACKs,
        # so that a CP's last frames before it leaves still reach the broker.
        with trio.move_on_after(FLUSH_TIMEOUT):
            while self._unacked and self._sock is not None and not self._closed.is_set():
                if self._client.want_write():
                    self._client.loop_write()
                    continue
                await trio.lowlevel.wait_readable(self._sock)
                self._client.loop_read()
        if self._closed.is_set() or self._sock is None:
            return
        self._closing = True
        self._client.disconnect()
        with trio.move_on_after(2.0):
            while self._sock is not None and self._client.want_write():
                self._client.loop_write()
                if self._sock is not None and self._client.want_write():
                    await trio.lowlevel.wait_writable(self._sock)

    def _close_socket(self, reason: str) -> None:
        if self._client.socket() is not None:
            self._client.drop_socket()
        self._mark_closed(reason)

    def _mark_closed(self, reason: str) -> None:
        if self._closed.is_set():
            return
        if self._closing:
            reason = "disconnected by the gateway"
        self._close_reason = reason
        self._closed.set()
        # Wake every task waiting on this link; each one re-checks and raises.
        self._wake_receivers()
        self._wake_publishers()
        for done, _ in self._suback.values():
            done.set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            if self.backlog_exceeded:
                raise MqttBacklogExceeded(self._close_reason or "backlog exceeded")
            raise MqttConnectionLost(self._close_reason or "connection closed")

    # -- the socket tasks and the ticker's hook --------------------------------------

    async def _reader(self) -> None:
        while self._sock is not None:
            try:
                await trio.lowlevel.wait_readable(self._sock)
            except (trio.ClosedResourceError, OSError):
                return
            rc = self._client.loop_read()
            # TLS may hold decrypted bytes that the socket no longer signals.
            while (
                rc == MQTTErrorCode.MQTT_ERR_SUCCESS
                and self._sock is not None
                and pending_bytes(self._sock)
            ):
                rc = self._client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            self._write_now()  # anything paho queued while reading

    def _write_now(self) -> None:
        """Write what paho has queued straight away (the socket is non-blocking).

        Every call that makes paho queue a packet (publish, ack, subscribe,
        loop_misc's PINGREQ, loop_read) is followed by this.  The common
        case - the socket has room - costs no task switch and no epoll
        registration; only when the socket is full is a :meth:`_writer` task
        started (in the link's nursery) to wait until it drains.
        """
        if self._sock is None or not self._client.want_write():
            return
        self._client.loop_write()
        if (
            self._sock is not None
            and self._client.want_write()
            and not self._writer_running
            and self._nursery is not None
        ):
            self._writer_running = True
            self._nursery.start_soon(self._writer, name="mqtt writer")

    async def _writer(self) -> None:
        try:
            while self._sock is not None and self._client.want_write():
                await trio.lowlevel.wait_writable(self._sock)
                self._client.loop_write()
        except (trio.ClosedResourceError, OSError):
            return
        finally:
            self._writer_running = False

    def _misc(self) -> None:
        if self._sock is not None:
            self._client.loop_misc()
            self._write_now()  # a PINGREQ

    # -- paho callbacks (run in the Trio thread, inside loop_*) ------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self._connect_refusal = str(rc) if rc.is_failure else None
        if self._connack is not None:
            self._connack.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self._mark_closed(f"connection to the MQTT broker lost ({rc})")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._enqueue(message.topic, bytes(message.payload), message.mid, message.qos)

    def _enqueue(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        """Hand a message to the consumer; past ``max_backlog_bytes`` not taken, the link ends."""
        if self._closed.is_set():
            return
        limit = self._settings.max_backlog_bytes
        if self._inbox_bytes + len(payload) > limit:
            self.backlog_exceeded = True
            self._inbox.clear()
            self._inbox_bytes = 0
            self._mark_closed(f"more than {limit} bytes received and not taken by the consumer")
            if self.on_backlog_exceeded is not None:
                self.on_backlog_exceeded()
            return
        self._inbox_bytes += len(payload)
        self._inbox.append((topic, payload, mid, qos))
        self._wake_receivers()

    def _wake_receivers(self) -> None:
        waiter = self._inbox_waiter
        if waiter is not None:
            self._inbox_waiter = None  # the next waiter makes a new one: no wake-up is lost
            waiter.set()

    def _wake_publishers(self) -> None:
        waiter = self._acked_waiter
        if waiter is not None:
            self._acked_waiter = None
            waiter.set()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        if mid in self._unacked:
            self._unacked.discard(mid)
            self._wake_publishers()

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, codes: list[Any], props: Any
    ) -> None:
        waiter = self._suback.pop(mid, None)
        if waiter is not None:
            waiter[1].extend((code.is_failure, int(code.value)) for code in codes)
            waiter[0].set()

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        trio.lowlevel.notify_closing(sock)
        self._sock = None
        self._mark_closed("connection to the MQTT broker lost")


def _why(exc: OSError) -> str:
    """What failed in a connect: Trio's "all attempts failed" names each attempt's error in its cause."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        return "; ".join(str(error) for error in cause.exceptions)
    return str(exc) or type(exc).__name__
