"""Connection limits over real sockets: keepalive, handshake timeout, capacity, SIGTERM."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request

from fakeiot import FakeIot
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import boot_notification, connect

from .conftest import gateway_config
from .processes import free_port, program, run
from .test_gateway_loop import closed_with


async def _raw_handshake(port: int, cp_id: str) -> tuple[trio.SocketStream, WSConnection]:
    """A charge point that completes the handshake and then answers nothing at all."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target=f"/{cp_id}", subprotocols=["ocpp2.0.1"])))
    with trio.fail_after(5):
        while True:
            ws.receive_data(await stream.receive_some())
            if any(isinstance(event, AcceptConnection) for event in ws.events()):
                return stream, ws


async def test_a_cp_that_stops_answering_pings_is_closed_and_its_mqtt_released(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    register("CP1")
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, ping_interval=0.3, pong_timeout=0.5, processor=False)
    )
    stream, ws = await _raw_handshake(gateway.port, "CP1")
    assert fakeiot.broker is not None
    with trio.fail_after(5):
        while "CP1" not in fakeiot.broker.connected_client_ids():
            await trio.sleep(0.02)
    pings = 0
    close: CloseConnection | None = None
    with trio.fail_after(10):
        # Read what the gateway sends, but never answer: the pings go unanswered.
        while close is None:
            data = await stream.receive_some()
            if not data:
                break
            ws.receive_data(data)
            for event in ws.events():
                pings += isinstance(event, Ping)
                if isinstance(event, CloseConnection):
                    close = event
    await stream.aclose()
    assert pings >= 1
    assert close is not None and close.code == 1011 and close.reason.startswith("Keepalive timeout")
    with trio.fail_after(5):
        while "CP1" in fakeiot.broker.connected_client_ids():
            await trio.sleep(0.02)


async def test_pings_answered_keep_the_connection(fakeiot: FakeIot, nursery: trio.Nursery, register: Any) -> None:
    register("CP1")
    gateway = await nursery.start(run_gateway, gateway_config(fakeiot, ping_interval=0.2, pong_timeout=0.5))
    async with connect(gateway.url, "CP1") as cp:  # trio-websocket answers pings by itself
        await trio.sleep(1.0)
        assert (await cp.call(*boot_notification("2.0.1", vendor="V", model="M", serial="S", firmware="F")))["status"] == "Accepted"


async def test_slowloris_handshake_is_cut_off(fakeiot: FakeIot, nursery: trio.Nursery) -> None:
    gateway = await nursery.start(run_gateway, gateway_config(fakeiot, handshake_timeout=0.5, processor=False))
    stream = await trio.open_tcp_stream("127.0.0.1", gateway.port)
    await stream.send_all(b"GET /CP1 HTTP/1.1\r\nHost: x\r\n")  # ... and never finishes the request
    with trio.fail_after(5):
        assert await stream.receive_some() == b""  # the gateway hung up
    await stream.aclose()


async def test_capacity_limit_refuses_with_try_again_later(fakeiot: FakeIot, nursery: trio.Nursery, register: Any) -> None:
    register("CP1", "CP2")
    gateway = await nursery.start(run_gateway, gateway_config(fakeiot, max_connections=1))
    async with connect(gateway.url, "CP1") as cp1:
        async with connect(gateway.url, "CP2") as cp2:
            assert await closed_with(cp2.ws) == (1013, "Gateway at capacity (1 connections); try again later")
        assert (await cp1.call("Heartbeat", {}))["currentTime"]
    async with connect(gateway.url, "CP2") as cp2:  # room again once CP1 has gone
        assert (await cp2.call("Heartbeat", {}))["currentTime"]


def test_sigterm_closes_cps_with_going_away_and_exits(tmp_path: Path) -> None:
    api = free_port()
    with program("-m", "gateway", "--port", "0", "--mqtt-port", "0", "--fakeiot-api-port", str(api), "--data-dir", str(tmp_path)) as gw:
        line = gw.wait_for_line("listening on")
        url = re.search(r"(ws://\S+)/<charge-point-id>", line).group(1)  # type: ignore[union-attr]
        assert run("-m", "fakeiot", "thing", "create", "CP1", "--api-url", f"http://127.0.0.1:{api}").returncode == 0

        async def cp_sees_going_away() -> tuple[int, str]:
            async with connect(url, "CP1") as cp:
                await cp.call("Heartbeat", {})
                gw.proc.terminate()
                return await closed_with(cp.ws)

        assert trio.run(cp_sees_going_away) == (1001, "Gateway shutting down")
        assert gw.proc.wait(timeout=10) == 0


def test_token_bucket() -> None:
    from gateway.ratelimit import TokenBucket

    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)  # one token back after 0.5 s at 2/s
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


async def test_a_flooding_cp_is_closed_and_others_carry_on(fakeiot: FakeIot, nursery: trio.Nursery, register: Any) -> None:
    register("CP1", "FLOOD")
    gateway = await nursery.start(run_gateway, gateway_config(fakeiot, max_message_rate=5, max_message_burst=10))
    async with connect(gateway.url, "CP1") as calm, connect(gateway.url, "FLOOD") as flood:
        assert (await calm.call("Heartbeat", {}))["currentTime"]
        for n in range(11):
            await flood.send_text(f'[2, "f{n}", "Heartbeat", {{}}]')
        assert await closed_with(flood.ws) == (1008, "Message rate limit exceeded (5/s)")
        assert (await calm.call("Heartbeat", {}))["currentTime"]
