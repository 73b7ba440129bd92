"""One client connection of fakeiot's broker: amqtt's protocol handler with AWS IoT's per-client limits.

amqtt 0.12.1 hands every message for a subscriber to
``ProtocolHandler.mqtt_publish`` in a task of its own (``Broker._run_broadcast``),
all at once: a subscriber that does not acknowledge, or does not read its
socket, gets (or has waiting in tasks) everything the broker has for it.  For
QoS 1 each task waits 5 s for the PUBACK, then gives up and forgets the
message, so even the unacknowledged messages do not hold anything back.
:class:`FakeIotProtocolHandler` changes three things (the limits themselves
are in :mod:`fakeiot.limits`):

* ``mqtt_publish`` only puts the message in the client's
  :class:`~fakeiot.limits.Outbox` and returns; the handler sends what the
  outbox lets through, in order, from tasks it owns (cancelled when the
  connection ends).
* An outgoing QoS 1 message stays in flight until its PUBACK or the end of
  the connection, without amqtt's 5 s give-up (AWS IoT keeps retrying an
  unacknowledged message for an hour; Mosquitto keeps it until the client
  reconnects).  Its PUBACK waiter is registered before the PUBLISH is
  written, so a PUBACK that comes at once is not lost.  When a persistent
  session's connection ends, its unacknowledged and still queued QoS 1
  messages go to the session's offline queue, and its next connection gets
  them again.
* ``handle_publish`` refuses a payload over :data:`~fakeiot.limits.MAX_PAYLOAD`
  as AWS IoT does: no PUBACK, no delivery, the connection closed
  (``disconnectReason`` ``CLIENT_ERROR``).

:class:`BoundedStreamReader` puts a :class:`~fakeiot.limits.PacketSizeGuard`
in front of amqtt's reads: a packet announcing more than
:data:`~fakeiot.limits.MAX_PACKET` bytes ends the connection before its body
is read.

Everything here runs on the broker's asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import StreamReaderAdapter
from amqtt.broker import RetainedApplicationMessage
from amqtt.errors import AMQTTError, ProtocolHandlerError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import (
    OUTGOING,
    ApplicationMessage,
    OutgoingApplicationMessage,
    Session,
)

from . import presence
from .limits import (
    MAX_PACKET,
    MAX_PAYLOAD,
    DeliveryLimits,
    DeliveryStats,
    Outbox,
    Outgoing,
    PacketRefused,
    PacketSizeGuard,
)

log = logging.getLogger(__name__)

# (client id, its unacknowledged shared-subscription messages) -> those no other member took
HandOn = Callable[[str, list[Outgoing]], Awaitable[list[Outgoing]]]

CLIENT_ERROR = presence.CLIENT_ERROR  # AWS IoT's disconnectReason for a payload over the limit


@dataclass
class LimitCounters:
    """Broker-wide counts of what the limits refused (read them on the broker's loop)."""

    dropped: int = 0  # messages dropped because a client's queue was full
    oversized: int = 0  # connections closed for a payload or packet over the limit
    # Messages taken from a client's outbox to be written to it.  Bumped on the broker's loop
    # only: one writer, so a plain int is safe to read from another thread (a scrape).
    delivered: int = 0


class BoundedStreamReader(StreamReaderAdapter):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's stream reader behind a :class:`PacketSizeGuard`: once it refuses, every read is end-of-stream."""

    def __init__(self, reader: asyncio.StreamReader, *, peer: str, counters: LimitCounters) -> None:
        super().__init__(reader)
        self.label = peer  # the client id, once the CONNECT has been read
        self._guard = PacketSizeGuard(MAX_PACKET)
        self._counters = counters
        self._refused = False

    async def read(self, n: int = -1) -> bytes:
        if not self._refused:
            try:
                self._guard.before_read(n)
                data: bytes = await super().read(n)
                self._guard.after_read(data)
                return data
            except PacketRefused as refused:
                self._refused = True
                self._counters.oversized += 1
                log.warning("%s: %s: closing the connection", self.label, refused.reason)
        raise asyncio.IncompleteReadError(
            b"", n if n > 0 else None
        )  # amqtt: no more data, the connection ends


class FakeIotProtocolHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's broker-side handler with a bounded outbox, an in-flight window and the payload limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._outbox = Outbox(DeliveryLimits())
        self._counters = LimitCounters()
        # Taken from the outbox, not yet done (written, acknowledged or abandoned), in the order sent.
        self._deliveries: dict[asyncio.Task[None], Outgoing] = {}
        self._closed = False
        self._refused = False
        self._dropping = False
        self._hand_on: HandOn | None = None

    def configure(
        self,
        limits: DeliveryLimits,
        counters: LimitCounters,
        hand_on: HandOn | None = None,
    ) -> None:
        """Called once, right after the CONNECT (amqtt constructs the handler itself); ``hand_on``
        takes the shared-subscription messages this connection leaves unacknowledged."""
        self._outbox = Outbox(limits)
        self._counters = counters
        self._hand_on = hand_on

    @property
    def _client_id(self) -> str:
        return self.session.client_id if self.session is not None else "?"

    def delivery_stats(self) -> DeliveryStats:
        return self._outbox.stats()

    async def mqtt_publish(
        self,
        topic: str,
        data: bytes | bytearray,
        qos: int | None,
        retain: bool,
        ack_timeout: int | None = None,
    ) -> OutgoingApplicationMessage:
        """Queue a message for this client and return at once; it is sent when the window allows."""
        self._offer(Outgoing(topic, data, qos or 0, retain))
        return OutgoingApplicationMessage(None, topic, qos, data, retain)

    def publish_shared(self, message: Outgoing) -> None:
        """Queue a message delivered through a shared subscription (``message.group``): one this
        connection does not acknowledge before it ends goes to another member of the group."""
        self._offer(message)

    @property
    def is_closing(self) -> bool:
        """The connection is ending: it takes no more messages."""
        return self._closed

    def _offer(self, message: Outgoing) -> None:
        if self._closed:
            pass  # the connection is ending; amqtt drops what it still had for it too
        elif self._outbox.offer(message):
            if self._dropping:
                self._dropping = False
                log.info(
                    "%s: outgoing queue has room again (%d messages dropped so far)",
                    self._client_id,
                    self._outbox.dropped,
                )
        else:
            self._counters.dropped += 1
            if not self._dropping:
                self._dropping = True
                stats = self._outbox.stats()
                log.warning(
                    "%s: outgoing queue full (%d messages, %d bytes; %d unacknowledged, %d being written): "
                    "dropping messages for this client",
                    self._client_id,
                    stats.queued,
                    stats.queued_bytes,
                    stats.in_flight,
                    stats.writing,
                )
        self._pump()

    def _pump(self) -> None:
        """Start sending what the outbox lets through (tasks created in order keep the order on the wire)."""
        while not self._closed and (message := self._outbox.take()) is not None:
            self._counters.delivered += 1
            task = asyncio.get_running_loop().create_task(self._deliver(message))
            self._deliveries[task] = message
            task.add_done_callback(self._delivery_done)

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._deliveries.pop(task, None)

    async def _deliver(self, message: Outgoing) -> None:
        try:
            session = self.session
            if session is None:
                return
            packet_id = session.next_packet_id if message.qos else None
            outgoing = OutgoingApplicationMessage(
                packet_id, message.topic, message.qos, message.data, message.retain
            )
            await self._handle_message_flow(outgoing)
        except (AMQTTError, ProtocolHandlerError, TimeoutError, OSError) as exc:
            # The connection went (amqtt turns a cancelled write into ProtocolHandlerError), or, QoS 2 only,
            # amqtt's own flow timed out.
            log.debug("%s: message to %r not delivered: %r", self._client_id, message.topic, exc)
        finally:
            self._outbox.done(message)
            self._pump()

    async def _handle_qos1_message_flow(self, app_message: ApplicationMessage) -> None:
        session = self.session
        if app_message.direction != OUTGOING or session is None or app_message.packet_id is None:
            await super()._handle_qos1_message_flow(app_message)
            return
        # As amqtt's, without its 5 s give-up (see the module docstring), and with the waiter registered first.
        packet_id = app_message.packet_id
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        session.inflight_out[packet_id] = app_message
        try:
            packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
            await self._send_packet(packet)
            app_message.publish_packet = packet
            app_message.puback_packet = await waiter
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                del self._puback_waiters[packet_id]
            session.inflight_out.pop(packet_id, None)

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        if self._refused:
            return  # sent after a refused PUBLISH, before the connection closed
        size = len(publish_packet.data or b"")
        if size > MAX_PAYLOAD:
            self._refused = True
            self._counters.oversized += 1
            log.warning(
                "%s: PUBLISH to %r with a payload of %d bytes (the limit is %d): closing the connection",
                self._client_id,
                (publish_packet.topic_name or "")[:80],
                size,
                MAX_PAYLOAD,
            )
            if self.session is not None:
                setattr(self.session, presence.REASON_ATTRIBUTE, CLIENT_ERROR)
            await self.handle_connection_closed()  # the broker's message loop ends the connection
            return
        await super().handle_publish(publish_packet)

    async def stop(self) -> None:
        if not self._closed:
            self._closed = True
            session = self.session
            # Sent (or being sent) but not acknowledged, then not sent yet: all in the order sent.
            unfinished = [message for message in self._deliveries.values() if message.qos]
            waiting = self._outbox.clear()
            if session is not None and self._hand_on is not None:
                # Shared-subscription messages go to another member of their group first (what makes
                # a killed member lose nothing); what no other member can take stays here, below.
                shared = [m for m in (*unfinished, *waiting) if m.qos and m.group is not None]
                if shared:
                    kept = {id(m) for m in await self._hand_on(session.client_id, shared)}
                    unfinished = [m for m in unfinished if m.group is None or id(m) in kept]
                    waiting = [m for m in waiting if m.group is None or id(m) in kept]
            if session is not None and not session.clean_session:
                # A persistent session keeps its QoS 1 messages for its next connection, which
                # sends them again (MQTT-4.4.0-1), unacknowledged ones included.
                for message in (*unfinished, *waiting):
                    if message.qos:
                        queue_offline(session, message, self._outbox.limits, self._counters)
            tasks = list(self._deliveries)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        await super().stop()


_OFFLINE_BYTES_ATTRIBUTE = "fakeiot_offline_bytes"
_OFFLINE_DROPPING_ATTRIBUTE = "fakeiot_offline_dropping"


def queue_offline(
    session: Session, message: Outgoing, limits: DeliveryLimits, counters: LimitCounters
) -> bool:
    """Keep a QoS 1 message for a disconnected persistent session, within the same bounds as the outbox
    (amqtt's queue for it, ``session.retained_messages``, has none); False: dropped and counted."""
    queue = session.retained_messages
    held = getattr(session, _OFFLINE_BYTES_ATTRIBUTE, 0) if not queue.empty() else 0
    if not queue.empty() and (
        queue.qsize() >= limits.max_queued_messages or held + message.size > limits.max_queued_bytes
    ):
        counters.dropped += 1
        if not getattr(session, _OFFLINE_DROPPING_ATTRIBUTE, False):
            setattr(session, _OFFLINE_DROPPING_ATTRIBUTE, True)
            log.warning(
                "%s: offline queue full (%d messages, %d bytes): dropping messages for this persistent session",
                session.client_id,
                queue.qsize(),
                held,
            )
        return False
    queue.put_nowait(RetainedApplicationMessage(None, message.topic, message.data, message.qos))
    setattr(session, _OFFLINE_BYTES_ATTRIBUTE, held + message.size)
    return True


def offline_queue_drained(session: Session) -> None:
    """The session's offline queue was handed to its new connection."""
    setattr(session, _OFFLINE_BYTES_ATTRIBUTE, 0)
    setattr(session, _OFFLINE_DROPPING_ATTRIBUTE, False)
