"""fakeiot's per-client limits, as AWS IoT Core's message broker has them, over real sockets.

* Outgoing QoS 1 in-flight window (AWS IoT: 100 unacknowledged messages per
  client): a subscriber that does not acknowledge gets the window and no
  more; the rest waits in a bounded per-client queue, and beyond that is
  dropped and counted.  QoS 0 messages to a client whose socket is backed up
  are bounded the same way.
* Payload limit (AWS IoT: 128 KB): a larger PUBLISH closes the publisher's
  connection and is never delivered; no packet larger than that is buffered.
* A client held back by any of these does not hold back anyone else.

The tests speak MQTT over raw sockets so that they decide when (and whether)
to acknowledge.  Every wait is bounded; points of synchronisation are
messages to a bystander client published after the flood (the broker
forwards in the order it receives).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from fakeiot import FakeIot, FakeIotConfig, running_fakeiot
from fakeiot.limits import MAX_PAYLOAD, DeliveryStats
from fakeiot.policy import BACKEND_USERNAME, GATEWAY_USERNAME

PUBLISH, PUBACK, SUBACK, PINGRESP, CONNACK = 3, 4, 9, 13, 2

# -- a raw MQTT 3.1.1 client -----------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _varint(length: int) -> bytes:
    out = bytearray()
    while True:
        digit, length = length % 128, length // 128
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 1) -> bytes:
    return _packet(
        0x30 | qos << 1, _utf8(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    )


def connect_packet(client_id: str, username: str, password: str, *, clean: bool = True) -> bytes:
    flags = (0x02 if clean else 0) | 0x80 | 0x40  # clean session, user name, password
    payload = _utf8(client_id) + _utf8(username) + _utf8(password)
    return _packet(0x10, _utf8("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + payload)


class RawClient:
    """One MQTT connection whose every packet the test writes and reads itself."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self._buffer += chunk
        return bool(chunk)

    async def packet(self) -> tuple[int, int, bytes] | None:
        """(type, flags, body) of the next packet; None when the broker closed the connection."""
        while True:
            if len(self._buffer) >= 2:
                length, multiplier, index = 0, 1, 1
                while index < len(self._buffer):
                    byte = self._buffer[index]
                    length += (byte & 0x7F) * multiplier
                    multiplier *= 128
                    index += 1
                    if not byte & 0x80:
                        if len(self._buffer) >= index + length:
                            first = self._buffer[0]
                            body = bytes(self._buffer[index : index + length])
                            del self._buffer[: index + length]
                            return first >> 4, first & 0x0F, body
                        break
            try:
                if not await self._fill():
                    return None
            except trio.BrokenResourceError:  # reset by the broker
                return None

    async def expect(self, kind: int) -> tuple[int, bytes]:
        """The next packet, which must be of ``kind``: (flags, body)."""
        packet = await self.packet()
        assert packet is not None, f"connection closed while waiting for packet type {kind}"
        assert packet[0] == kind, f"expected packet type {kind}, got {packet[0]}"
        return packet[1], packet[2]

    async def next_publish(self) -> tuple[str, bytes, int, int | None]:
        """(topic, payload, qos, packet id) of the next packet, which must be a PUBLISH."""
        flags, body = await self.expect(PUBLISH)
        qos = flags >> 1 & 3
        topic_length = int.from_bytes(body[:2], "big")
        topic, rest = body[2 : 2 + topic_length].decode(), body[2 + topic_length :]
        packet_id = int.from_bytes(rest[:2], "big") if qos else None
        return topic, rest[2:] if qos else rest, qos, packet_id

    async def subscribe(self, topic: str, qos: int) -> None:
        await self.stream.send_all(
            _packet(0x82, (1).to_bytes(2, "big") + _utf8(topic) + bytes([qos]))
        )
        _flags, body = await self.expect(SUBACK)
        assert body[2] == qos, f"SUBSCRIBE to {topic} refused: {body!r}"

    async def puback(self, packet_id: int) -> None:
        await self.stream.send_all(_packet(0x40, packet_id.to_bytes(2, "big")))

    async def ping(self) -> None:
        """PINGREQ, and read up to its PINGRESP (the broker answers in order)."""
        await self.stream.send_all(b"\xc0\x00")
        await self.expect(PINGRESP)


@asynccontextmanager
async def raw_client(
    iot: FakeIot, client_id: str, *, backend: bool = False, clean: bool = True
) -> AsyncIterator[RawClient]:
    username, password = (
        (BACKEND_USERNAME, iot.backend_password)
        if backend
        else (GATEWAY_USERNAME, iot.gateway_password)
    )
    async with await trio.open_tcp_stream("127.0.0.1", iot.mqtt_port) as stream:
        client = RawClient(stream)
        await stream.send_all(connect_packet(client_id, username, password, clean=clean))
        _flags, body = await client.expect(CONNACK)
        assert body[1] == 0, f"CONNECT of {client_id} refused: {body[1]}"
        yield client


async def delivery_stats(iot: FakeIot, client_id: str) -> DeliveryStats:
    """What fakeiot holds for a client, read on the broker's own loop."""
    loop, broker = iot._loop, iot.broker
    assert loop is not None and broker is not None

    async def read() -> DeliveryStats | None:
        return broker.delivery_stats(client_id)

    stats = await trio.to_thread.run_sync(
        lambda: asyncio.run_coroutine_threadsafe(read(), loop).result(5)
    )
    assert stats is not None, f"{client_id} is not connected"
    return stats


async def counter(iot: FakeIot, name: str) -> int:
    loop, broker = iot._loop, iot.broker
    assert loop is not None and broker is not None

    async def read() -> int:
        return int(getattr(broker, name))

    return await trio.to_thread.run_sync(
        lambda: asyncio.run_coroutine_threadsafe(read(), loop).result(5)
    )


@asynccontextmanager
async def fakeiot_with(tmp_path: Path, **limits: int) -> AsyncIterator[FakeIot]:
    config = FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path / "fakeiot", **limits)  # type: ignore[arg-type]
    async with running_fakeiot(config) as iot:
        yield iot


# -- the in-flight window and the queue behind it ------------------------------------------------


async def test_a_subscriber_that_does_not_acknowledge_gets_the_window_and_the_rest_waits_or_is_dropped(
    fakeiot: FakeIot,
) -> None:
    window, queue_bound, dropped = 100, 1000, 50  # the defaults: AWS IoT's window, fakeiot's queue
    total = window + queue_bound + dropped
    with trio.fail_after(60):
        async with (
            raw_client(fakeiot, "CP1") as stalled,
            raw_client(fakeiot, "CP2") as bystander,
            raw_client(fakeiot, "test:publisher", backend=True) as publisher,
        ):
            await stalled.subscribe("CP1/out", 1)
            await bystander.subscribe("CP2/out", 1)
            flood = b"".join(publish_packet("CP1/out", str(i).encode()) for i in range(total))
            await publisher.stream.send_all(flood + publish_packet("CP2/out", b"after the flood"))

            # (c) the bystander is not held back; once it has its message, the flood has been queued
            topic, payload, _qos, packet_id = await bystander.next_publish()
            assert (topic, payload) == ("CP2/out", b"after the flood")
            assert packet_id is not None
            await bystander.puback(packet_id)

            # exactly the window was written: after it, the broker's next packet answers our PINGREQ
            unacknowledged = [await stalled.next_publish() for _ in range(window)]
            assert [int(p[1]) for p in unacknowledged] == list(range(window))
            await stalled.ping()
            stats = await delivery_stats(fakeiot, "CP1")
            assert (stats.in_flight, stats.queued, stats.dropped) == (window, queue_bound, dropped)
            assert stats.queued_bytes <= fakeiot.config.max_queued_bytes
            assert await counter(fakeiot, "dropped_messages") == dropped

            # acknowledging lets the queue through, in order; what was dropped never comes
            received = [int(p[1]) for p in unacknowledged]
            for _topic, _payload, _qos, acked in unacknowledged:
                assert acked is not None
                await stalled.puback(acked)
            while len(received) < window + queue_bound:
                _topic, payload, qos, packet_id = await stalled.next_publish()
                assert qos == 1 and packet_id is not None
                received.append(int(payload))
                await stalled.puback(packet_id)
            assert received == list(range(window + queue_bound))
            await stalled.ping()  # every PUBACK above has been read by now
            stats = await delivery_stats(fakeiot, "CP1")
            assert (stats.in_flight, stats.queued, stats.queued_bytes, stats.dropped) == (
                0,
                0,
                0,
                dropped,
            )


async def test_an_unacknowledged_message_keeps_its_slot_past_amqtts_five_second_timeout(
    tmp_path: Path,
) -> None:
    # amqtt stops waiting for a PUBACK after 5 s and forgets the message, which would free its slot and
    # send the next one; AWS IoT keeps it in flight (and Mosquitto until the connection ends).
    async with (
        fakeiot_with(tmp_path, max_inflight=1) as iot,
        raw_client(iot, "CP1") as stalled,
        raw_client(iot, "test:publisher", backend=True) as publisher,
    ):
        await stalled.subscribe("CP1/out", 1)
        await publisher.stream.send_all(
            publish_packet("CP1/out", b"first") + publish_packet("CP1/out", b"second")
        )
        with trio.fail_after(5):
            _topic, payload, _qos, packet_id = await stalled.next_publish()
        assert payload == b"first" and packet_id is not None
        with trio.move_on_after(
            6.5
        ):  # the one wait on time itself: past amqtt's 5 s PUBACK timeout
            early = await stalled.packet()
            pytest.fail(f"a second message was sent while the first was unacknowledged: {early!r}")
        with trio.fail_after(5):
            stats = await delivery_stats(iot, "CP1")
            assert (stats.in_flight, stats.queued) == (1, 1)
            await stalled.puback(packet_id)
            _topic, payload, _qos, second_id = await stalled.next_publish()
            assert payload == b"second" and second_id is not None
            await stalled.puback(second_id)


async def test_qos0_messages_to_a_client_that_does_not_read_are_bounded(tmp_path: Path) -> None:
    limits = {"max_inflight": 10, "max_queued_messages": 1000, "max_queued_bytes": 1024 * 1024}
    payload = b"x" * 65536
    count = 400  # 25 MiB: more than the kernel's socket buffers, the window and the queue together
    async with fakeiot_with(tmp_path, **limits) as iot:
        with trio.fail_after(60):
            async with (
                raw_client(iot, "CP1") as stalled,  # subscribes, then never reads its socket again
                raw_client(iot, "CP2") as bystander,
                raw_client(iot, "test:publisher", backend=True) as publisher,
            ):
                await stalled.subscribe("CP1/out", 0)
                await bystander.subscribe("CP2/out", 0)
                for _ in range(count):
                    await publisher.stream.send_all(publish_packet("CP1/out", payload))
                await publisher.stream.send_all(publish_packet("CP2/out", b"after the flood"))

                _topic, received, qos, _packet_id = await bystander.next_publish()
                assert (received, qos) == (b"after the flood", 0)
                stats = await delivery_stats(iot, "CP1")
                assert stats.writing <= limits["max_inflight"]
                assert stats.queued_bytes <= limits["max_queued_bytes"]
                assert stats.dropped > 0
                assert stats.dropped + stats.queued + stats.writing <= count
                assert await counter(iot, "dropped_messages") == stats.dropped


async def test_the_queue_of_an_offline_persistent_session_is_bounded_too(tmp_path: Path) -> None:
    limits = {"max_inflight": 10, "max_queued_messages": 200}
    async with fakeiot_with(tmp_path, **limits) as iot:
        with trio.fail_after(30):
            async with (
                raw_client(iot, "test:watcher", backend=True) as watcher,
                raw_client(iot, "test:publisher", backend=True) as publisher,
            ):
                await watcher.subscribe("$aws/events/presence/disconnected/test:persistent", 0)
                async with raw_client(
                    iot, "test:persistent", backend=True, clean=False
                ) as persistent:
                    await persistent.subscribe("jobs/#", 1)
                    await persistent.stream.send_all(b"\xe0\x00")  # DISCONNECT
                    assert await persistent.packet() is None
                await (
                    watcher.next_publish()
                )  # the broker has seen it go: from now on, messages are queued for it
                await publisher.stream.send_all(
                    b"".join(publish_packet("jobs/1", str(i).encode()) for i in range(250))
                    + publish_packet("$aws/events/presence/disconnected/test:persistent", b"marker")
                )
                _topic, marker, _qos, _packet_id = await watcher.next_publish()
                assert marker == b"marker"

                async with raw_client(
                    iot, "test:persistent", backend=True, clean=False
                ) as persistent:
                    received: list[int] = []
                    while len(received) < 200:
                        _topic, payload, qos, packet_id = await persistent.next_publish()
                        assert qos == 1 and packet_id is not None
                        received.append(int(payload))
                        await persistent.puback(packet_id)
                    assert received == list(range(200))
                    await (
                        persistent.ping()
                    )  # and nothing after them: the rest was dropped, and counted
                assert await counter(iot, "dropped_messages") == 50


# -- the payload limit -----------------------------------------------------------------------------


async def test_a_payload_over_128_kib_closes_the_connection_and_is_never_delivered(
    fakeiot: FakeIot,
) -> None:
    assert MAX_PAYLOAD == 131072
    with trio.fail_after(20):
        async with (
            raw_client(fakeiot, "test:spy", backend=True) as spy,
            raw_client(fakeiot, "test:presence", backend=True) as presence,
            raw_client(fakeiot, "CP3") as bystander,
        ):
            await spy.subscribe("+/in", 1)
            await presence.subscribe("$aws/events/presence/disconnected/CP1", 0)
            async with raw_client(fakeiot, "CP1") as device:
                await device.stream.send_all(
                    publish_packet("CP1/in", b"a" * MAX_PAYLOAD, qos=1, packet_id=1)
                )
                await device.expect(PUBACK)
                topic, payload, _qos, packet_id = await spy.next_publish()
                assert (topic, len(payload)) == ("CP1/in", MAX_PAYLOAD)
                assert packet_id is not None
                await spy.puback(packet_id)

                await device.stream.send_all(
                    publish_packet("CP1/in", b"b" * (MAX_PAYLOAD + 1), qos=1, packet_id=2)
                    + publish_packet("CP1/in", b"sent after the oversized one", qos=1, packet_id=3)
                )
                assert await device.packet() is None  # closed, without a PUBACK for either
            assert await counter(fakeiot, "oversized") == 1
            _topic, event, _qos, _packet_id = await presence.next_publish()
            assert json.loads(event)["disconnectReason"] == "CLIENT_ERROR"  # as AWS IoT reports it

            await bystander.stream.send_all(publish_packet("CP3/in", b"marker"))
            topic, payload, _qos, _packet_id = await spy.next_publish()
            assert (topic, payload) == ("CP3/in", b"marker"), (
                "the oversized PUBLISH (or the one after it) was delivered"
            )


@pytest.mark.parametrize("first_byte", [0x30, 0x10], ids=["PUBLISH", "CONNECT"])
async def test_a_packet_announcing_more_than_the_limit_is_refused_before_its_body(
    fakeiot: FakeIot, first_byte: int
) -> None:
    # amqtt would read (and buffer) whatever length a fixed header announces, up to 256 MB.
    huge = 200 * 1024 * 1024
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", fakeiot.mqtt_port) as stream:
            client = RawClient(stream)
            if first_byte == 0x30:
                await stream.send_all(
                    connect_packet("CP1", GATEWAY_USERNAME, fakeiot.gateway_password)
                )
                await client.expect(CONNACK)
                body = _utf8("CP1/in")
            else:  # a CONNECT whose client id would be the rest of it
                body = (
                    _utf8("MQTT")
                    + bytes([4, 0x02])
                    + (60).to_bytes(2, "big")
                    + (65535).to_bytes(2, "big")
                )
            await stream.send_all(bytes([first_byte]) + _varint(huge) + body + b"z" * 4096)
            assert await client.packet() is None, "the connection stayed open"
    assert await counter(fakeiot, "oversized") == 1


async def test_a_packet_that_fits_is_not_refused_by_the_packet_bound(fakeiot: FakeIot) -> None:
    # The largest PUBLISH allowed: a 128 KiB payload with a long topic, at QoS 1.
    with trio.fail_after(10):
        async with raw_client(fakeiot, "test:publisher", backend=True) as publisher:
            topic = "t/" + "x" * 60000
            await publisher.stream.send_all(
                publish_packet(topic, b"p" * MAX_PAYLOAD, qos=1, packet_id=7)
            )
            _flags, body = await publisher.expect(PUBACK)
            assert body == (7).to_bytes(2, "big")
