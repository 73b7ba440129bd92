"""Hostile subscribers against fakeiot's broker, over a raw MQTT socket: what one client can make the
broker hold (subscriptions, share groups) and match every message against is bounded, and a
device's ``$share/`` subscriptions reach nothing but its own topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from fakeiot.limits import MAX_SUBSCRIPTIONS
from fakeiot.policy import BACKEND_USERNAME, GATEWAY_USERNAME
from gateway.mqtt_link import MqttDriver

from .waiting import until

FAILURE = 0x80


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _packet(first_byte: int, body: bytes) -> bytes:
    out, length = bytearray([first_byte]), len(body)
    while True:
        digit, length = length % 128, length // 128
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out) + body


class RawClient:
    """A bare MQTT 3.1.1 client: SUBSCRIBE and UNSUBSCRIBE, one packet at a time, answers read back."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""
        self._packet_id = 0

    async def _read_packet(self) -> tuple[int, bytes]:
        with trio.fail_after(10):
            while True:
                if len(self._buffer) >= 2:
                    length, shift, index = 0, 0, 1
                    while index < len(self._buffer):
                        byte = self._buffer[index]
                        length |= (byte & 0x7F) << shift
                        shift += 7
                        index += 1
                        if not byte & 0x80:
                            break
                    else:
                        index = -1
                    if index > 0 and len(self._buffer) >= index + length:
                        first, body = self._buffer[0], self._buffer[index : index + length]
                        self._buffer = self._buffer[index + length :]
                        return first, body
                chunk = await self.stream.receive_some()
                if not chunk:
                    raise ConnectionError("the broker closed the connection")
                self._buffer += chunk

    async def _expect(self, kind: int) -> bytes:
        while True:
            first, body = await self._read_packet()
            if first >> 4 == kind:
                return body

    def _next_id(self) -> bytes:
        self._packet_id = self._packet_id % 65535 + 1
        return self._packet_id.to_bytes(2, "big")

    async def subscribe(self, *filters: str) -> list[int]:
        """The SUBACK return codes (granted QoS, or 0x80)."""
        body = self._next_id() + b"".join(_utf8(f) + b"\x01" for f in filters)
        await self.stream.send_all(_packet(0x82, body))
        return list((await self._expect(9))[2:])

    async def unsubscribe(self, *filters: str) -> None:
        body = self._next_id() + b"".join(_utf8(f) for f in filters)
        await self.stream.send_all(_packet(0xA2, body))
        await self._expect(11)

    async def ping(self) -> None:
        await self.stream.send_all(b"\xc0\x00")
        await self._expect(13)


@asynccontextmanager
async def raw_client(
    iot: FakeIot, client_id: str, *, username: str, password: str
) -> AsyncIterator[RawClient]:
    async with await trio.open_tcp_stream("127.0.0.1", iot.mqtt_port) as stream:
        payload = _utf8(client_id) + _utf8(username) + _utf8(password)
        connect = _utf8("MQTT") + bytes([4, 0x80 | 0x40 | 0x02]) + (60).to_bytes(2, "big")
        await stream.send_all(_packet(0x10, connect + payload))
        client = RawClient(stream)
        connack = await client._expect(2)
        assert connack[1] == 0, f"CONNECT refused: {connack!r}"
        yield client
        await stream.send_all(b"\xe0\x00")  # DISCONNECT


def _device(iot: FakeIot, client_id: str) -> Any:
    return raw_client(iot, client_id, username=GATEWAY_USERNAME, password=iot.gateway_password)


def _backend(iot: FakeIot, client_id: str) -> Any:
    return raw_client(iot, client_id, username=BACKEND_USERNAME, password=iot.backend_password)


async def _on_broker(iot: FakeIot, read: Any) -> Any:
    """``read(broker)`` on the broker's loop (its tables are only consistent there)."""
    loop, broker = iot._loop, iot.broker
    assert loop is not None and broker is not None

    async def call() -> Any:
        return read(broker)

    return await trio.to_thread.run_sync(
        lambda: asyncio.run_coroutine_threadsafe(call(), loop).result(5)
    )


async def test_subscribe_unsubscribe_churn_leaves_nothing_behind(fakeiot: FakeIot) -> None:
    """amqtt kept every filter ever unsubscribed in its table (and matched each message against
    it): a device cycling through distinct shadow filters grew it without bound."""
    before = await _on_broker(fakeiot, lambda b: len(b._subscriptions))
    async with _device(fakeiot, "CP1") as cp:
        for i in range(300):
            filters = (f"$aws/things/CP1/shadow/x{i}", f"$share/g{i}/CP1/out")
            assert await cp.subscribe(*filters) == [1, 1]
            await cp.unsubscribe(*filters)
        await cp.ping()
        tables = await _on_broker(
            fakeiot, lambda b: (len(b._subscriptions), len(b.shared_subscriptions))
        )
    assert tables == (before, 0)


async def test_a_client_holds_at_most_fifty_subscriptions_shared_ones_included(
    fakeiot: FakeIot,
) -> None:
    async with _device(fakeiot, "CP1") as cp:
        own = [f"$aws/things/CP1/shadow/s{i}" for i in range(MAX_SUBSCRIPTIONS - 10)]
        own += [f"$share/g{i}/CP1/out" for i in range(10)]
        for start in range(0, len(own), 8):
            assert set(await cp.subscribe(*own[start : start + 8])) == {1}
        assert await cp.subscribe("$share/one-more/CP1/out", "CP1/out") == [FAILURE, FAILURE]
        assert await cp.subscribe(own[0]) == [1]  # again: still one subscription
        await cp.unsubscribe(own[0])
        assert await cp.subscribe("CP1/out") == [1]  # room again
        await cp.ping()  # refused subscriptions do not end the connection
    async with _backend(fakeiot, "cpo:many") as backend:
        codes = await cp_subscribe_many(backend, [f"$share/g{i}/+/in" for i in range(60)])
        assert codes.count(1) == MAX_SUBSCRIPTIONS and codes[MAX_SUBSCRIPTIONS:] == [FAILURE] * 10
    # The sessions ended (amqtt removes a clean one within a second): their subscriptions went too.
    left: list[int] = []

    async def none_left() -> bool:
        left[:] = [await _on_broker(fakeiot, lambda b: len(b.shared_subscriptions))]
        return left == [0]

    with trio.fail_after(5):
        while not await none_left():
            await trio.sleep(0.1)
    assert await _on_broker(fakeiot, lambda b: b.subscription_book.count("CP1")) == 0


async def cp_subscribe_many(client: RawClient, filters: list[str]) -> list[int]:
    codes: list[int] = []
    for start in range(0, len(filters), 8):
        codes += await client.subscribe(*filters[start : start + 8])
    return codes


@pytest.mark.parametrize(
    "topic_filter",
    [
        "$aws/things/CP1/shadow/" + "x" * 240,  # a filter over 256 bytes
        "$share/g/$aws/things/CP1/shadow/" + "x" * 240,  # a shared one's filter over 256 bytes
        "$share/" + "g" * 129 + "/CP1/out",  # a share name over 128 bytes
        "$share/" + "g" * 60000 + "/CP1/out",
    ],
    ids=["filter", "shared-filter", "share-name", "huge-share-name"],
)
async def test_oversized_filters_and_share_names_are_refused(
    fakeiot: FakeIot, topic_filter: str
) -> None:
    async with _device(fakeiot, "CP1") as cp:
        assert await cp.subscribe(topic_filter) == [FAILURE]
        assert await cp.subscribe("$share/" + "g" * 128 + "/CP1/out") == [1]  # at the bound
        await cp.ping()


@pytest.mark.parametrize(
    "topic_filter",
    [
        "$share/g/+/in",  # every CP's CALLs
        "$share/processors/+/in",  # the processor's own group
        "$share/g/#",
        "$share//CP2/in",
        "$share/g/CP2/out",
        "$share/g/CP1/../CP2/out",
        "$share/g/CP1/+",
        "$share/$aws/CP2/out",
        "$share/g+/CP1/out",
        "$share/g/$share/h/+/in",
        "$share/g/$aws/things/+/shadow/#",
        "$share/g/$aws/events/presence/+/+",
    ],
)
async def test_a_device_cannot_share_subscribe_to_others_topics(
    fakeiot: FakeIot, mqtt_driver: MqttDriver, topic_filter: str
) -> None:
    received: list[bytes] = []
    async with _device(fakeiot, "CP1") as cp:
        assert await cp.subscribe(topic_filter) == [FAILURE]
        # ... so a processor member keeps getting every CALL.
        async with mqtt_driver.link("cpo:processor") as processor, mqtt_driver.link("CP2") as cp2:
            await processor.subscribe("$share/processors/+/in")
            await cp2.publish("CP2/in", b"call")
            await cp2.publish("CP2/out", b"answer")
            with trio.fail_after(5):
                received.append((await processor.receive())[1])
        assert await _on_broker(fakeiot, lambda b: b.subscription_book.count("CP1")) == 0
    assert received == [b"call"]


async def test_a_member_that_never_acknowledges_holds_at_most_the_window(
    fakeiot: FakeIot, mqtt_driver: MqttDriver, nursery: trio.Nursery
) -> None:
    """A processor replica that stops acknowledging keeps at most 100 CALLs in flight; the rest of
    its turn waits in its bounded queue, and the other member keeps getting its own turn."""
    got: list[bytes] = []
    async with (
        _backend(fakeiot, "cpo:stuck") as stuck,
        mqtt_driver.link("cpo:ok") as ok,
        mqtt_driver.link("cp") as cp,
    ):
        assert await stuck.subscribe("$share/p/+/in") == [1]
        await ok.subscribe("$share/p/+/in")

        async def collect() -> None:
            while True:
                got.append((await ok.receive())[1])

        nursery.start_soon(collect)
        for i in range(300):
            await cp.publish("CP1/in", f"m{i}".encode())
        await until(lambda: len(got) == 150, timeout=20)
        stats = await _on_broker(fakeiot, lambda b: b.delivery_stats("cpo:stuck"))
        assert stats.in_flight == 100 and stats.queued == 50
        nursery.cancel_scope.cancel()
