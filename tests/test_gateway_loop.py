"""The whole loop over real sockets: CP -> WebSocket -> gateway -> MQTT -> processor -> back.

Reads like the README walkthrough: register CP1, boot, heartbeat, read the
shadow, watch +/in and +/out, see CP2 refused and a duplicate kicked.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from fakeiot import FakeIot
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import boot_notification, connect, heartbeat
from gateway.chargepoint import open_client_websocket as open_websocket_url

from .conftest import Spy, gateway_config, shadow_of
from .waiting import until


def boot(version: str = "2.0.1") -> tuple[str, dict[str, Any]]:
    return boot_notification(version, vendor="ACME", model="M1", serial="SN-1", firmware="1.2.3")


async def closed_with(ws: Any, *, timeout: float = 5) -> tuple[int, str]:
    """Wait for the server to close ``ws``; return (code, reason)."""
    with trio.fail_after(timeout):
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.get_message()
    return info.value.reason.code, info.value.reason.reason


async def test_boot_and_heartbeat_ocpp201(
    gateway: RunningGateway, register: Any, aws: Any, spy: Spy
) -> None:
    register("CP1")
    async with connect(gateway.url, "CP1") as cp:
        assert cp.subprotocol == "ocpp2.0.1"
        result = await cp.call(*boot())
        assert result["status"] == "Accepted" and result["interval"] == 10
        assert datetime.fromisoformat(result["currentTime"]).utcoffset() is not None
        beat = await cp.call(*heartbeat())
        assert datetime.fromisoformat(beat["currentTime"]).utcoffset() is not None
        await cp.call(
            "StatusNotification",
            {
                "timestamp": result["currentTime"],
                "connectorStatus": "Available",
                "evseId": 1,
                "connectorId": 1,
            },
        )
    # Frames travel verbatim both ways.
    await spy.wait_for(lambda t, p: t == "CP1/out" and b"currentTime" in p and b"interval" not in p)
    sent_in = [json.loads(p) for p in spy.on("CP1/in")]
    assert [f[2] for f in sent_in] == ["BootNotification", "Heartbeat", "StatusNotification"]
    assert sent_in[0][3]["chargingStation"]["serialNumber"] == "SN-1"
    assert [json.loads(p)[1] for p in spy.on("CP1/out")] == [f[1] for f in sent_in]
    reported = shadow_of(aws, "CP1")["state"]["reported"]
    assert reported["chargingStation"] == {
        "vendorName": "ACME",
        "model": "M1",
        "serialNumber": "SN-1",
        "firmwareVersion": "1.2.3",
    }
    assert reported["reason"] == "PowerUp" and reported["ocppProtocol"] == "ocpp2.0.1"


async def test_frames_are_forwarded_byte_for_byte(
    gateway: RunningGateway, register: Any, spy: Spy
) -> None:
    register("CP1")
    odd = '[2,  "m-1" ,"Heartbeat",{ }]'  # odd spacing must survive untouched
    async with connect(gateway.url, "CP1") as cp:
        await cp.send_text(odd)
        answer = json.loads(await cp.receive_text())
    assert answer[:2] == [3, "m-1"]
    await spy.wait_for(lambda t, p: t == "CP1/in")
    assert spy.on("CP1/in") == [odd.encode()]


async def test_ocpp16_messages(gateway: RunningGateway, register: Any, aws: Any) -> None:
    register("CP16")
    async with connect(gateway.url, "CP16", subprotocols=["ocpp1.6"]) as cp:
        assert cp.subprotocol == "ocpp1.6"
        result = await cp.call(*boot("1.6"))
        assert result["status"] == "Accepted"
        assert (
            datetime.fromisoformat((await cp.call("Heartbeat", {}))["currentTime"]).utcoffset()
            is not None
        )
        assert (
            await cp.call(
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
            )
            == {}
        )
        assert (await cp.call("Authorize", {"idTag": "TAG1"}))["idTagInfo"]["status"] == "Accepted"
        started = await cp.call(
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "TAG1",
                "meterStart": 0,
                "timestamp": result["currentTime"],
            },
        )
        assert (
            isinstance(started["transactionId"], int)
            and started["idTagInfo"]["status"] == "Accepted"
        )
        meter = {
            "connectorId": 1,
            "transactionId": started["transactionId"],
            "meterValue": [{"timestamp": result["currentTime"], "sampledValue": [{"value": "10"}]}],
        }
        assert await cp.call("MeterValues", meter) == {}
        stopped = await cp.call(
            "StopTransaction",
            {
                "transactionId": started["transactionId"],
                "meterStop": 10,
                "timestamp": result["currentTime"],
                "idTag": "TAG1",
            },
        )
        assert stopped["idTagInfo"]["status"] == "Accepted"
    reported = shadow_of(aws, "CP16")["state"]["reported"]
    assert reported["chargingStation"] == {
        "vendorName": "ACME",
        "model": "M1",
        "serialNumber": "SN-1",
        "firmwareVersion": "1.2.3",
    }
    assert reported["ocppProtocol"] == "ocpp1.6"


async def test_bad_frame_gets_its_call_error_end_to_end(
    gateway: RunningGateway, register: Any
) -> None:
    """One case of the CALLERROR matrix over the whole path; the matrix itself is checked on the
    processor's answer in test_processor_answer.py."""
    register("CPX")
    async with connect(gateway.url, "CPX", subprotocols=["ocpp2.0.1"]) as cp:
        await cp.send_text("this is not json")
        with trio.fail_after(5):
            answer = json.loads(await cp.receive_text())
        assert answer[:3] == [4, "-1", "FormatViolation"]
        assert isinstance(answer[3], str) and isinstance(answer[4], dict)
        # The connection stays usable.
        assert "currentTime" in await cp.call(*heartbeat())


async def test_unicode_message_ids_are_echoed(gateway: RunningGateway, register: Any) -> None:
    register("CPU")
    async with connect(gateway.url, "CPU") as cp:
        await cp.send_text('[2, "идентификатор-✓", "Heartbeat", {}]')
        with trio.fail_after(5):
            answer = json.loads(await cp.receive_text())
    assert answer[:2] == [3, "идентификатор-✓"] and "currentTime" in answer[2]


async def test_callresult_and_callerror_from_a_cp_are_not_answered(
    gateway: RunningGateway, register: Any, spy: Spy
) -> None:
    register("CP1")
    async with connect(gateway.url, "CP1") as cp:
        await cp.send_text('[3, "unknown-id", {}]')
        await cp.send_text('[4, "unknown-id", "InternalError", "oops", {}]')
        beat = await cp.call(*heartbeat())
        assert "currentTime" in beat
    assert len(spy.on("CP1/out")) == 1  # only the Heartbeat was answered


async def test_unregistered_cp_is_refused_without_an_mqtt_connection(
    gateway: RunningGateway, fakeiot: FakeIot, spy: Spy
) -> None:
    async with open_websocket_url(f"{gateway.url}/CP2", subprotocols=["ocpp2.0.1"]) as ws:
        assert await closed_with(ws) == (1008, "Charge Point CP2 not registered as an IoT Thing")
    assert fakeiot.broker is not None and "CP2" not in fakeiot.broker.connected_client_ids()
    assert gateway.bridge.refused == 1 and gateway.bridge.connections == 0
    assert spy.on("CP2/in") == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/CP:1", "Invalid charge point identity: ':' is not allowed"),
        ("/CP%2B1", "Invalid charge point identity: '+' is not allowed"),
        ("/CP%231", "Invalid charge point identity: '#' is not allowed"),
        ("/a%2Fb", "Invalid charge point identity: '/' is not allowed"),
        ("/" + "C" * 49, "Invalid charge point identity: 49 characters, at most 48"),
    ],
)
async def test_invalid_identities_are_refused_before_mqtt_or_registry(
    gateway: RunningGateway, fakeiot: FakeIot, path: str, reason: str
) -> None:
    async with open_websocket_url(f"{gateway.url}{path}", subprotocols=["ocpp2.0.1"]) as ws:
        code, text = await closed_with(ws)
    assert code == 1008 and text.startswith(reason)
    assert gateway.bridge.registry.lookups == 0
    assert fakeiot.broker is not None and [
        c for c in fakeiot.broker.connected_client_ids() if not c.startswith("gateway:events:")
    ] == ["cpo:processor"]


@pytest.mark.parametrize("offer", [[], ["ocpp1.5", "mqtt"]])
async def test_no_matching_subprotocol_handshake_without_one_then_close(
    gateway: RunningGateway, register: Any, offer: list[str]
) -> None:
    register("CP1")
    async with open_websocket_url(f"{gateway.url}/CP1", subprotocols=offer) as ws:
        assert ws.subprotocol is None
        code, reason = await closed_with(ws)
    assert code == 1002 and "this server speaks ocpp2.0.1, ocpp2.0, ocpp1.6" in reason


async def test_leading_comma_in_subprotocol_header_is_tolerated(
    gateway: RunningGateway, register: Any
) -> None:
    register("CP1")
    # trio-websocket joins the list with ", ", giving the header ", ocpp2.0.1" as sloppy chargers send.
    async with open_websocket_url(f"{gateway.url}/CP1", subprotocols=["", "ocpp2.0.1"]) as ws:
        assert ws.subprotocol == "ocpp2.0.1"


async def test_identity_with_dots_maps_to_its_thing(
    gateway: RunningGateway, register: Any, aws: Any
) -> None:
    register("site.CP@1")
    async with connect(gateway.url, "site.CP@1") as cp:
        assert (await cp.call(*boot()))["status"] == "Accepted"
    assert shadow_of(aws, "site:2ECP:401")["state"]["reported"]["chargingStation"]["model"] == "M1"


async def test_duplicate_connection_on_the_same_gateway(
    gateway: RunningGateway, register: Any
) -> None:
    register("CP1")
    async with connect(gateway.url, "CP1") as old:
        await old.call(*boot())
        async with connect(gateway.url, "CP1") as new:
            assert await closed_with(old.ws) == (
                1000,
                "Replaced by a newer connection of this charge point",
            )
            assert (await new.call(*boot()))["status"] == "Accepted"
            # The old connection's MQTT link is gone (not reconnecting): it cannot take the client
            # id back.  The driver counts CP links only (the processor has its own).
            await until(lambda: gateway.driver.link_count == 1, what="the old MQTT link released")
            assert "currentTime" in await new.call(*heartbeat())


async def test_duplicate_connection_across_two_gateways(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    first = await nursery.start(run_gateway, gateway_config(fakeiot))
    second = await nursery.start(run_gateway, gateway_config(fakeiot, processor=False))
    register("CP1")
    async with connect(first.url, "CP1") as old:
        await old.call(*boot())
        async with connect(second.url, "CP1") as new:
            code, reason = await closed_with(old.ws)
            assert code == 1000 and reason.startswith("MQTT session ended")
            assert (await new.call(*boot()))["status"] == "Accepted"
            # The first gateway let go of CP1's MQTT link (the processor has its own driver): no
            # reconnect attempt can take the client id back from the second.
            await until(lambda: first.driver.link_count == 0, what="the first gateway's link gone")
            assert "currentTime" in await new.call(*heartbeat())
            assert (
                fakeiot.broker is not None
                and fakeiot.broker.connected_client_ids().count("CP1") == 1
            )


async def test_cp_disconnect_closes_its_mqtt_connection(
    gateway: RunningGateway, fakeiot: FakeIot, register: Any
) -> None:
    register("CP1")
    async with connect(gateway.url, "CP1") as cp:
        await cp.call(*boot())
        assert fakeiot.broker is not None and "CP1" in fakeiot.broker.connected_client_ids()
    broker = fakeiot.broker
    await until(
        lambda: "CP1" not in broker.connected_client_ids() and gateway.driver.link_count == 0,
        what="CP1's MQTT connection closed",
    )


async def test_broker_loss_closes_the_websocket(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any, tmp_path: Any
) -> None:
    from fakeiot import FakeIotConfig, running_fakeiot

    register("CP1")
    # A separate broker that this test can stop; registry and shadows stay on the fixture.
    async with running_fakeiot(
        FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path / "second")
    ) as broker:
        gateway = await nursery.start(
            run_gateway,
            gateway_config(
                fakeiot,
                mqtt_port=broker.mqtt_port,
                mqtt_password=broker.gateway_password,
                processor=False,
            ),
        )
        cp_cm = connect(gateway.url, "CP1")
        cp = await cp_cm.__aenter__()
        # The handshake completes before the CP's MQTT connection is up: stopping the broker
        # before that is the other case (1013, test_unreachable_broker_...).
        mqtt = broker.broker
        assert mqtt is not None
        await until(lambda: "CP1" in mqtt.connected_client_ids(), what="CP1 bridged to MQTT")
    try:
        code, reason = await closed_with(cp.ws)
        assert code == 1000 and reason.startswith("MQTT session ended")
    finally:
        await cp_cm.__aexit__(None, None, None)


async def test_out_messages_reach_only_their_own_cp(
    gateway: RunningGateway, register: Any, mqtt_driver: Any
) -> None:
    register("CP1", "CP2")
    async with connect(gateway.url, "CP1") as cp1, connect(gateway.url, "CP2") as cp2:
        await cp1.call(*boot())
        await cp2.call(*boot())
        async with mqtt_driver.link("backend:test") as backend:
            await backend.publish("CP2/out", b'[2, "csms-1", "Reset", {"type": "Immediate"}]')
            with trio.fail_after(5):
                assert json.loads(await cp2.receive_text())[:2] == [2, "csms-1"]
        # CP1 got nothing: its next frame is the answer to its own Heartbeat.
        await cp1.send_text('[2, "hb-1", "Heartbeat", {}]')
        with trio.fail_after(5):
            assert json.loads(await cp1.receive_text())[:2] == [3, "hb-1"]


async def test_registry_lookups_are_cached_and_shared(
    gateway: RunningGateway, register: Any
) -> None:
    register("CP1")

    async def visit() -> None:
        async with connect(gateway.url, "CP1") as cp:
            await cp.ws.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(visit)
    await visit()
    assert gateway.bridge.registry.lookups == 1


async def test_unreachable_broker_closes_the_cp_with_try_again_later(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    register("CP1")
    with socket.socket() as closed:
        # Bound and never listening: held by this test, so no other program can listen there, and
        # every connection to it is refused.
        closed.bind(("127.0.0.1", 0))
        gateway = await nursery.start(
            run_gateway,
            gateway_config(fakeiot, mqtt_port=closed.getsockname()[1], processor=False),
        )
        async with open_websocket_url(f"{gateway.url}/CP1", subprotocols=["ocpp2.0.1"]) as ws:
            code, reason = await closed_with(ws)
    assert code == 1013 and reason.startswith("cannot reach MQTT broker")


async def test_gateway_shutdown_closes_cps_with_going_away(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    register("CP1")
    stop = trio.CancelScope()

    async def gateway_until_stopped(task_status: trio.TaskStatus[RunningGateway]) -> None:
        with stop:
            await run_gateway(gateway_config(fakeiot), task_status=task_status)

    gateway = await nursery.start(gateway_until_stopped)
    async with connect(gateway.url, "CP1") as cp:
        await cp.call(*boot())
        stop.cancel()
        assert await closed_with(cp.ws) == (1001, "Gateway shutting down")


async def test_cancelling_the_gateway_does_not_wait_for_close_replies(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    """Cancelled (embedded, as here), the gateway still sends each CP its close frame, but the reader
    that would see the reply is cancelled too: nothing may wait for it (it waited close_timeout)."""
    register("CP1")
    stop = trio.CancelScope()
    stopped = trio.Event()

    async def gateway_until_stopped(task_status: trio.TaskStatus[RunningGateway]) -> None:
        with stop:
            await run_gateway(gateway_config(fakeiot, close_timeout=30.0), task_status=task_status)
        stopped.set()

    gateway = await nursery.start(gateway_until_stopped)
    async with connect(gateway.url, "CP1") as cp:
        await cp.call(*boot())
        stop.cancel()
        with trio.fail_after(10):
            await stopped.wait()
        assert await closed_with(cp.ws) == (1001, "Gateway shutting down")


async def test_registry_cache_stays_bounded(aws: Any) -> None:
    from gateway.registry import Registry

    registry = Registry(aws[0], negative_ttl=60.0, max_entries=10)
    for n in range(25):
        assert not await registry.is_registered(f"nobody-{n}")
    assert registry.lookups == 25
    assert len(registry._cache) <= 10


async def test_a_client_vanishing_mid_handshake_does_not_hurt_the_server(
    gateway: RunningGateway, register: Any
) -> None:
    register("CP1")
    for _ in range(2):  # the default --cp-reconnect-burst is 3: two vanished, the third connects
        stream = await trio.open_tcp_stream("127.0.0.1", gateway.port)
        await stream.send_all(
            b"GET /CP1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n"
        )
        await stream.aclose()  # gone before the gateway answers
    async with connect(gateway.url, "CP1") as cp:
        assert "currentTime" in await cp.call(*heartbeat())
