"""Hostile WebSocket clients: any frame at any point of a connection's life, connections that never
close, one id reconnecting in a loop, a CP that never reads.  The gateway must survive (an exception
escaping the server would fail the test through the nursery) and bystanders must keep working."""

from __future__ import annotations

import logging
import os
import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import ChargePoint, connect, heartbeat
from gateway.mqtt_link import MqttDriver

from .conftest import gateway_config
from .test_gateway_loop import closed_with
from .waiting import until

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked client frame, built by hand (wsproto refuses to send most of these when closing)."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


FRAMES = {
    "ping": client_frame(OP_PING, b"hi"),
    "pong": client_frame(OP_PONG, b"unsolicited"),
    "text": client_frame(OP_TEXT, b'[2,"1","Heartbeat",{}]'),
    "binary": client_frame(OP_BINARY, b"\x00\x01"),
    "close": client_frame(OP_CLOSE, struct.pack("!H", 1000)),
    "bad close": client_frame(OP_CLOSE, b"\x00"),  # a 1-byte close payload is a protocol error
    "garbage": b"\xff\x00\x13\x37 not a frame \r\n\r\n" * 4,
    "fragment": client_frame(OP_TEXT, b"[2,", fin=False),
}


def upgrade_request(port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n"
    ).encode()


class RawClient:
    """A client that speaks WebSocket by hand, so it can send anything at any time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def read_response_head(self) -> bytes:
        with trio.fail_after(5):
            while b"\r\n\r\n" not in self.buffer:
                if not await self._fill():
                    raise EOFError("closed before the HTTP response")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    async def read_frame(self) -> tuple[int, bytes]:
        """The next server frame (opcode, payload); EOFError when the TCP connection ends."""
        with trio.fail_after(5):
            while True:
                if len(self.buffer) >= 2:
                    opcode, n = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
                    offset = 2
                    if n == 126:
                        n, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
                    elif n == 127:
                        n, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
                    if len(self.buffer) >= offset + n:
                        payload = self.buffer[offset : offset + n]
                        self.buffer = self.buffer[offset + n :]
                        return opcode, payload
                if not await self._fill():
                    raise EOFError("connection closed")

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except trio.BrokenResourceError:
            pass  # the gateway may already have hung up: that is an allowed answer

    async def wait_eof(self, timeout: float = 5.0) -> None:
        """Read until the gateway ends the TCP connection."""
        with trio.fail_after(timeout):
            try:
                while await self._fill():
                    self.buffer = b""
            except trio.BrokenResourceError:
                pass


@asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawClient]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        yield RawClient(stream)
    finally:
        await trio.aclose_forcefully(stream)


async def bystander_works(cp: ChargePoint) -> None:
    assert "currentTime" in await cp.call(*heartbeat())


@pytest.fixture
async def hostile_gateway(fakeiot: FakeIot, nursery: trio.Nursery, register: Any) -> RunningGateway:
    register("CP1", "BYSTANDER")
    return await nursery.start(
        run_gateway,
        gateway_config(fakeiot, close_timeout=0.5, cp_reconnect_rate=0, handshake_timeout=1.0),
    )


@pytest.mark.parametrize("frame", sorted(FRAMES))
async def test_any_frame_at_any_point_leaves_the_gateway_serving(
    hostile_gateway: RunningGateway, frame: str
) -> None:
    """Before the upgrade, after a refusal's close frame, after the gateway's own close of a registered
    CP, and in the middle of a session: every kind of frame, and the server and a bystander live on."""
    gateway = hostile_gateway
    data = FRAMES[frame]
    async with connect(gateway.url, "BYSTANDER") as bystander:
        await bystander_works(bystander)
        # 1. before the upgrade: bytes instead of an HTTP request
        async with raw_client(gateway.port) as raw:
            await raw.send(data)
            await raw.wait_eof(timeout=5)  # --handshake-timeout (1 s here)
        # 2. after a refusal close (trio-websocket issue 184: a Ping here ended the server)
        async with raw_client(gateway.port) as raw:
            await raw.send(upgrade_request(gateway.port, "/no-such-charge-point"))
            assert b" 101 " in await raw.read_response_head()
            opcode, payload = await raw.read_frame()
            assert opcode == OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1008
            await raw.send(data * 3)
            await raw.wait_eof()  # answered or not, the gateway hangs up within --close-timeout
        # 3. after the gateway's own close of a registered CP (a binary frame: close 1003)
        async with raw_client(gateway.port) as raw:
            await raw.send(upgrade_request(gateway.port, "/CP1"))
            assert b" 101 " in await raw.read_response_head()
            await raw.send(FRAMES["binary"])
            opcode, payload = await raw.read_frame()
            assert opcode == OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1003
            await raw.send(data * 3)
            await raw.wait_eof()
        # 4. in the middle of a session
        async with raw_client(gateway.port) as raw:
            await raw.send(upgrade_request(gateway.port, "/CP1"))
            assert b" 101 " in await raw.read_response_head()
            await raw.send(data)
            await raw.send(FRAMES["ping"])
        await bystander_works(bystander)
    async with connect(gateway.url, "CP1") as cp:  # and new connections are served
        await bystander_works(cp)


@pytest.mark.parametrize("frame", ["ping", "garbage", "bad close", "text"])
async def test_frames_during_drain_do_not_break_it(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any, frame: str
) -> None:
    register("CP1", "CP2")
    stop = trio.CancelScope()
    stopped = trio.Event()

    async def gateway_until_stopped(task_status: trio.TaskStatus[RunningGateway]) -> None:
        with stop:
            await run_gateway(
                gateway_config(fakeiot, close_timeout=0.5, drain_timeout=1.0),
                task_status=task_status,
            )
        stopped.set()

    gateway: RunningGateway = await nursery.start(gateway_until_stopped)
    async with raw_client(gateway.port) as raw, connect(gateway.url, "CP2") as cp2:
        await raw.send(upgrade_request(gateway.port, "/CP1"))
        assert b" 101 " in await raw.read_response_head()
        nursery.start_soon(gateway.bridge.drain)
        opcode, payload = await raw.read_frame()
        assert opcode == OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1001
        await raw.send(FRAMES[frame] * 3)
        assert await closed_with(cp2.ws) == (1001, "Gateway shutting down")
        await raw.wait_eof()
    stop.cancel()
    with trio.fail_after(5):
        await stopped.wait()  # the gateway ended by our cancel, not by an error


async def test_chaos_many_clients_random_frames(hostile_gateway: RunningGateway) -> None:
    """A bounded, seeded storm: 40 clients, random frames at random moments (well under a minute)."""
    gateway = hostile_gateway
    rng = random.Random(1234)
    kinds = sorted(FRAMES)

    async def one(n: int) -> None:
        path = rng.choice(["/CP1", "/no-such-cp", "/bad id", "/" + "x" * 300, "/CP1/../BYSTANDER"])
        async with raw_client(gateway.port) as raw:
            if rng.random() < 0.8:
                await raw.send(upgrade_request(gateway.port, path))
            for _ in range(rng.randint(1, 6)):
                await trio.sleep(rng.random() * 0.05)  # seeded random pauses: the storm's input
                await raw.send(FRAMES[rng.choice(kinds)])

    async with connect(gateway.url, "BYSTANDER") as bystander:
        with trio.fail_after(40):
            async with trio.open_nursery() as storm:
                for n in range(40):
                    storm.start_soon(one, n)
                    await bystander_works(bystander)
        await bystander_works(bystander)


async def test_refused_clients_that_never_close_are_cut_off_and_do_not_take_capacity(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    register("CP1")
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, max_connections=1, close_timeout=0.5)
    )
    async with (
        raw_client(gateway.port) as a,
        raw_client(gateway.port) as b,
        raw_client(gateway.port) as c,
    ):
        for raw in (a, b, c):
            await raw.send(upgrade_request(gateway.port, "/nobody"))
            assert b" 101 " in await raw.read_response_head()
            assert (await raw.read_frame())[0] == OP_CLOSE  # ... and never answered
        async with connect(gateway.url, "CP1") as cp:  # they do not hold the one place
            await bystander_works(cp)
        for raw in (a, b, c):
            await raw.wait_eof(timeout=3)  # aborted after --close-timeout, not held for ever


async def test_one_id_reconnecting_in_a_loop_is_throttled_and_others_are_served(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any, caplog: pytest.LogCaptureFixture
) -> None:
    register("CP1", "CP2")
    gateway: RunningGateway = await nursery.start(run_gateway, gateway_config(fakeiot))
    codes = []
    for _ in range(6):
        async with connect(gateway.url, "CP1") as cp:
            try:
                await bystander_works(cp)
                codes.append(0)
            except Exception:
                codes.append((await closed_with(cp.ws))[0])
    assert codes[:3] == [0, 0, 0] and 1013 in codes[3:], codes
    assert (
        sum("CP1: connecting more often than 1/s" in r.getMessage() for r in caplog.records) == 1
    )  # logged once
    async with connect(gateway.url, "CP2") as cp2:
        await bystander_works(cp2)


async def test_a_connection_that_leaves_while_waiting_to_be_admitted_gives_its_slot_back(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    ids = [f"CP{n}" for n in range(5)]
    register(*ids)
    gateway: RunningGateway = await nursery.start(
        run_gateway,
        gateway_config(
            fakeiot, mqtt_connect_rate=1.0, mqtt_connect_burst=1, mqtt_connect_max_wait=3.0
        ),
    )
    async with connect(gateway.url, "CP0") as first:
        await bystander_works(first)  # took the burst
        # Three CPs book the next three slots (+1 s, +2 s, +3 s) and go away while they wait.
        for cp_id in ids[1:4]:
            async with raw_client(gateway.port) as raw:
                await raw.send(upgrade_request(gateway.port, f"/{cp_id}"))
                assert b" 101 " in await raw.read_response_head()
        # Their slots came back: the next CP is admitted instead of waiting > 3 s and getting 1013.
        with trio.fail_after(3):
            async with connect(gateway.url, "CP4") as cp4:
                await bystander_works(cp4)
    assert gateway.driver.link_count <= 1


async def test_a_cp_that_never_reads_is_closed_before_its_backlog_grows(
    fakeiot: FakeIot,
    nursery: trio.Nursery,
    register: Any,
    mqtt_driver: MqttDriver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    register("CP1", "BYSTANDER")
    gateway: RunningGateway = await nursery.start(
        run_gateway,
        gateway_config(fakeiot, processor=False, max_backlog_bytes=256 * 1024, close_timeout=0.5),
    )
    caplog.set_level(logging.WARNING, logger="gateway.session")
    async with raw_client(gateway.port) as raw, connect(gateway.url, "BYSTANDER") as bystander:
        await raw.send(upgrade_request(gateway.port, "/CP1"))
        assert b" 101 " in await raw.read_response_head()
        await until(lambda: "CP1" in gateway.bridge.sessions, what="CP1 bridged")
        big = b'[2,"x","DataTransfer",{"vendorId":"' + b"A" * 100_000 + b'"}]'
        async with mqtt_driver.link("test:flood") as flood:
            with trio.fail_after(30):
                sent = 0
                while "CP1" in gateway.bridge.sessions:  # and the raw client never reads
                    await flood.publish("CP1/out", big, qos=sent % 2)
                    sent += 1
                    assert sent < 2_000, "the gateway kept buffering for a CP that does not read"
                    await trio.sleep(0)  # a checkpoint: let the gateway's tasks run
            assert any("does not read" in r.getMessage() for r in caplog.records)
            # The bystander's own /out is unaffected.
            await flood.publish("BYSTANDER/out", b'[3,"b1",{}]', qos=1)
            with trio.fail_after(5):
                assert await bystander.receive_text() == '[3,"b1",{}]'


async def test_two_chargers_with_one_id_on_two_gateways_settle_into_a_bounded_visible_state(
    fakeiot: FakeIot,
    nursery: trio.Nursery,
    register: Any,
    caplog: pytest.LogCaptureFixture,
    mqtt_driver: MqttDriver,
) -> None:
    """Each charger reconnects the moment it is closed (the other one took the id over): without a
    bound they flap as fast as the machine allows; with it, at most 1/s per id per gateway (after a
    burst of 3), and a warning names the likely cause."""
    register("CP1")
    gateways = [
        await nursery.start(run_gateway, gateway_config(fakeiot, processor=False)) for _ in range(2)
    ]
    attempts = [0, 0]
    broker_connects = 0

    async def count_connects(link: Any) -> None:
        nonlocal broker_connects
        while True:
            await link.receive()
            broker_connects += 1

    async def charger(n: int) -> None:
        while True:
            attempts[n] += 1
            async with connect(gateways[n].url, "CP1") as cp:
                try:
                    while True:
                        await cp.receive_text()
                except Exception:
                    pass  # closed: taken over, or throttled; reconnect at once

    async with mqtt_driver.link("test:presence") as presence:
        await presence.subscribe("$aws/events/presence/connected/CP1", 1)
        async with trio.open_nursery() as chargers:
            chargers.start_soon(count_connects, presence)
            chargers.start_soon(charger, 0)
            chargers.start_soon(charger, 1)
            # Both connected and one took the id over: the flapping began.
            await until(lambda: broker_connects >= 3, timeout=20, what="3 broker connects")
            start = broker_connects
            # A rate measured over real time: the chargers' reconnects cross paho's threads and
            # the broker, so the autojump clock cannot stand in.  No signal ends a rate window.
            await trio.sleep(6)
            in_window = broker_connects - start
            chargers.cancel_scope.cancel()
    throttled = sum(g.bridge.throttled for g in gateways)
    print(
        f"attempts {attempts}, MQTT CONNECTs for CP1 in 6 s: {in_window}, refused by the throttle: {throttled}"
    )
    assert in_window <= 2 * (3 + 6), (in_window, attempts)  # per gateway: burst 3, then 1/s
    if throttled:
        assert any(
            "two chargers configured with the same id" in r.getMessage() for r in caplog.records
        )
