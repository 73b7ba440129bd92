"""Per-client limits of fakeiot's broker, as AWS IoT Core's message broker has them (pure: no I/O).

* :data:`MAX_PAYLOAD`: AWS IoT's message size quota, 128 KB of payload per
  PUBLISH.  A client that publishes more is disconnected (presence
  ``disconnectReason`` ``CLIENT_ERROR``) and the message is not delivered.
* :class:`PacketSizeGuard`: amqtt reads whatever remaining length a fixed
  header announces (up to 256 MB) into memory before looking at it.  The
  guard follows the MQTT framing of everything a connection reads and
  refuses a packet whose remaining length is over :data:`MAX_PACKET` (the
  largest PUBLISH allowed: a 128 KiB payload, the longest MQTT topic and a
  packet id; a CONNECT is smaller still) before its body is read.
* :class:`Outbox`: the messages on their way to one client.  At most
  ``max_inflight`` QoS 1 messages are unacknowledged at a time (AWS IoT: 100;
  Mosquitto's ``max_inflight_messages``: 20); the rest wait in a queue of at
  most ``max_queued_messages`` messages and ``max_queued_bytes`` bytes, and
  what comes beyond that is dropped and counted.  QoS 0 messages share the
  queue, and at most ``max_inflight`` of them are being written at a time, so
  a client that does not read its socket holds a bounded amount of memory.
* :class:`SubscriptionBook`: at most :data:`MAX_SUBSCRIPTIONS` topic filters
  per client (AWS IoT's "subscriptions per connection", 50), shared ones
  included, each at most :data:`MAX_FILTER_BYTES` long (AWS IoT's topic
  size) with a share name of at most :data:`MAX_SHARE_NAME_BYTES`: what one
  client can make the broker hold, and match every message against, is
  bounded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .shared_subscriptions import SHARE_PREFIX, SharedFilter

MAX_PAYLOAD = 128 * 1024  # bytes; AWS IoT Core's "Message size" quota
MAX_TOPIC_BYTES = 65535  # an MQTT UTF-8 string (AWS IoT itself allows 256 bytes)
MAX_PACKET = (
    MAX_PAYLOAD + 2 + MAX_TOPIC_BYTES + 2
)  # remaining length of the largest PUBLISH allowed
MAX_PACKET_ID = 65535
MAX_SUBSCRIPTIONS = 50  # AWS IoT Core: "Subscriptions per connection"
MAX_FILTER_BYTES = (
    256  # AWS IoT Core's topic size quota, for a topic filter (a $share/ one: its filter)
)
MAX_SHARE_NAME_BYTES = 128  # fakeiot's bound on the <group> of $share/<group>/<filter>


@dataclass(frozen=True)
class DeliveryLimits:
    """What fakeiot keeps for one connected client (``--max-inflight`` ...)."""

    max_inflight: int = 100  # AWS IoT: 100 unacknowledged outbound messages per client
    max_queued_messages: int = 1000
    max_queued_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.max_inflight <= MAX_PACKET_ID:
            raise ValueError(
                f"max_inflight must be between 1 and {MAX_PACKET_ID}, not {self.max_inflight}"
            )
        if self.max_queued_messages < 0 or self.max_queued_bytes < 0:
            raise ValueError("max_queued_messages and max_queued_bytes must not be negative")


@dataclass(frozen=True)
class DeliveryStats:
    """A snapshot of one client's :class:`Outbox`."""

    in_flight: int  # QoS 1/2 messages sent (or being sent) and not yet acknowledged
    writing: int  # QoS 0 messages being written
    queued: int
    queued_bytes: int
    dropped: int  # since the connection was made


@dataclass(frozen=True)
class Outgoing:
    topic: str
    data: bytes | bytearray
    qos: int
    retain: bool
    # The shared-subscription group it was delivered for (fakeiot.shared_subscriptions); None: any other.
    group: SharedFilter | None = None

    @property
    def size(self) -> int:
        return len(self.data) + len(self.topic)


class Outbox:
    """The messages on their way to one client: a window, a bounded queue behind it, drops beyond.

    :meth:`offer` a message, then :meth:`take` what may be sent now; report
    each taken message :meth:`done` once it is acknowledged (QoS 1/2),
    written (QoS 0) or abandoned.  Messages leave in the order offered.
    """

    def __init__(self, limits: DeliveryLimits) -> None:
        self.limits = limits
        self._queue: deque[Outgoing] = deque()
        self._queued_bytes = 0
        self.in_flight = 0
        self.writing = 0
        self.dropped = 0

    def offer(self, message: Outgoing) -> bool:
        """Queue ``message``; False (and counted as dropped) when the queue is full.

        An empty queue always takes one message, so a message larger than the
        byte bound still goes out when the client keeps up.
        """
        queue, limits = self._queue, self.limits
        if queue and (
            len(queue) >= limits.max_queued_messages
            or self._queued_bytes + message.size > limits.max_queued_bytes
        ):
            self.dropped += 1
            return False
        queue.append(message)
        self._queued_bytes += message.size
        return True

    def take(self) -> Outgoing | None:
        """The next message to send now, or None while the queue is empty or the window is full."""
        if not self._queue:
            return None
        head = self._queue[0]
        if head.qos:
            if self.in_flight >= self.limits.max_inflight:
                return None
            self.in_flight += 1
        else:
            if self.writing >= self.limits.max_inflight:
                return None
            self.writing += 1
        self._queue.popleft()
        self._queued_bytes -= head.size
        return head

    def done(self, message: Outgoing) -> None:
        if message.qos:
            self.in_flight -= 1
        else:
            self.writing -= 1

    def clear(self) -> list[Outgoing]:
        """Empty the queue (the connection ended): what was waiting, in order."""
        waiting = list(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        return waiting

    def stats(self) -> DeliveryStats:
        return DeliveryStats(
            self.in_flight, self.writing, len(self._queue), self._queued_bytes, self.dropped
        )


class PacketRefused(Exception):
    """What a connection sent may not be read any further: ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PacketSizeGuard:
    """Follows the MQTT framing of the bytes a connection reads, and refuses oversized packets.

    Call :meth:`before_read` with the size of every read and :meth:`after_read`
    with what it returned.  Besides a remaining length over the bound, reads
    that do not line up with the framing are refused: amqtt reads a fixed
    header one byte at a time and never reads across the end of a well-formed
    packet, so such a read means the packet lied about its length (and amqtt
    and the guard would otherwise no longer agree on where packets start).
    """

    def __init__(self, max_remaining_length: int = MAX_PACKET) -> None:
        self.max_remaining_length = max_remaining_length
        self._body_left = 0
        self._in_header = (
            False  # the type byte has been read, the remaining length not yet complete
        )
        self._length = 0
        self._shift = 0

    def before_read(self, n: int) -> None:
        if n < 0:
            raise PacketRefused("a read of unbounded size")
        if n == 0:
            return
        if self._body_left:
            if n > self._body_left:
                raise PacketRefused(
                    f"a field of {n} bytes runs past the end of its packet ({self._body_left} bytes left)"
                )
        elif n != 1:
            raise PacketRefused(f"a read of {n} bytes where a fixed header starts")

    def after_read(self, data: bytes) -> None:
        if not data:
            return
        if self._body_left:
            self._body_left -= len(data)
            return
        if not self._in_header:
            self._in_header, self._length, self._shift = True, 0, 0
            return
        byte = data[0]
        self._length |= (byte & 0x7F) << self._shift
        self._shift += 7
        if byte & 0x80:
            if self._shift >= 28:
                raise PacketRefused("a remaining length of more than four bytes")
            return
        self._in_header = False
        if self._length > self.max_remaining_length:
            raise PacketRefused(
                f"a packet of {self._length} bytes (the limit is {self.max_remaining_length})"
            )
        self._body_left = self._length


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class SubscriptionBook:
    """The topic filters each client holds (normal and ``$share/`` ones, as subscribed), bounded.

    :meth:`refusal` says why a SUBSCRIBE to a filter must get the failure code
    (None: it may be added); :meth:`add` / :meth:`remove` / :meth:`remove_all`
    follow what the broker did.
    """

    def __init__(self, max_subscriptions: int = MAX_SUBSCRIPTIONS) -> None:
        self.max_subscriptions = max_subscriptions
        self._filters: dict[str, set[str]] = {}

    def refusal(self, client_id: str, topic_filter: str) -> str | None:
        shared = parse_shared_lenient(topic_filter)
        group, underlying = shared if shared is not None else ("", topic_filter)
        if _utf8_len(underlying) > MAX_FILTER_BYTES:
            return f"a topic filter longer than {MAX_FILTER_BYTES} bytes"
        if _utf8_len(group) > MAX_SHARE_NAME_BYTES:
            return f"a share name longer than {MAX_SHARE_NAME_BYTES} bytes"
        held = self._filters.get(client_id, ())
        if topic_filter not in held and len(held) >= self.max_subscriptions:
            return f"more than {self.max_subscriptions} subscriptions on one client"
        return None

    def add(self, client_id: str, topic_filter: str) -> None:
        self._filters.setdefault(client_id, set()).add(topic_filter)

    def remove(self, client_id: str, topic_filter: str) -> None:
        held = self._filters.get(client_id)
        if held is not None:
            held.discard(topic_filter)
            if not held:
                del self._filters[client_id]

    def remove_all(self, client_id: str) -> None:
        self._filters.pop(client_id, None)

    def count(self, client_id: str) -> int:
        return len(self._filters.get(client_id, ()))


def parse_shared_lenient(topic_filter: str) -> tuple[str, str] | None:
    """(group, filter) of anything starting ``$share/``, well-formed or not (for size checks)."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, _, rest = topic_filter[len(SHARE_PREFIX) :].partition("/")
    return group, rest
