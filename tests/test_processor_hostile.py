"""Hostile input must never end the message processor (nor, embedded, the gateway).

Over real sockets: a charge point sends what a broken or malicious one
would (JSON nested thousands deep, a 130 KB frame that fails validation); an
anonymous MQTT client publishes garbage to its own shadow topic, which the
processor reads to learn each CP's OCPP version; a handler bug; a crash of
the processor itself.  After each, the processor still answers CALLs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError
from trio_websocket import WebSocketConnection

from fakeiot import FakeIot
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import CallErrorReceived, ChargePoint, connect, heartbeat
from gateway.errors import MqttConnectError
from gateway.mqtt_link import MqttDriver
from gateway.processor import Processor
from gateway.processor.handlers import Call

from .conftest import gateway_config, shadow_of


def nested_boot(depth: int, message_id: str = "boot-1", *, version: str = "2.0.1") -> str:
    """A CALL with a value ``depth`` lists deep (built as text), otherwise valid.

    OCPP 2.0.1: a BootNotification's chargingStation.model.  OCPP 1.6: a MeterValues
    sampledValue (1.6's BootNotification is flat: jsonschema's error would be rendered
    too near the top of the stack to run out of it).
    """
    model = "[" * depth + "]" * depth
    if version == "1.6":
        return (
            f'[2,"{message_id}","MeterValues",{{"connectorId":1,"meterValue":[{{"timestamp":"2024-01-01T00:00:00Z",'
            f'"sampledValue":[{{"value":{model}}}]}}]}}]'
        )
    return (
        f'[2,"{message_id}","BootNotification",{{"reason":"PowerUp",'
        f'"chargingStation":{{"model":{model},"vendorName":"ACME"}}}}]'
    )


async def next_frame(ws: WebSocketConnection | ChargePoint, *, timeout: float = 10) -> list[Any]:
    with trio.fail_after(timeout):
        text = await (ws.receive_text() if isinstance(ws, ChargePoint) else ws.get_message())
    frame = json.loads(text)
    assert isinstance(frame, list)
    return frame


async def still_answers(
    gateway: RunningGateway, cp_id: str, *, subprotocols: list[str] | None = None
) -> None:
    """A CP (connected now) gets its Heartbeat answered: the processor is alive."""
    async with connect(gateway.url, cp_id, subprotocols=subprotocols) as cp:
        with trio.fail_after(10):
            assert "currentTime" in await cp.call(*heartbeat())


# -- finding 1: one deeply nested BootNotification ------------------------------------------------


# The deepest list that fits AWS IoT's (and fakeiot's) 128 KB message quota and the gateway's frame limit.
DEEPEST = 60_000

# How deep kills the processor of old depends on the stack left when jsonschema renders its error
# (here about 946 levels: deeper ones already failed in json.loads): sweep the whole band.
DEPTHS = [33, 100, 500, *range(900, 1001), 5000, DEEPEST]


@pytest.mark.parametrize(
    ("subprotocol", "version", "code"),
    [("ocpp2.0.1", "2.0.1", "FormatViolation"), ("ocpp1.6", "1.6", "FormationViolation")],
)
async def test_deeply_nested_boot_notification_gets_a_call_error(
    fakeiot: FakeIot,
    nursery: trio.Nursery,
    register: Callable[..., None],
    subprotocol: str,
    version: str,
    code: str,
) -> None:
    # The sweep sends 100+ frames at once: past the gateway's per-CP rate limit, which is not under test.
    gateway = await nursery.start(run_gateway, gateway_config(fakeiot, max_message_rate=0))
    register("CPD", "CPOK")
    async with connect(gateway.url, "CPD", subprotocols=[subprotocol]) as cp:
        for depth in DEPTHS:
            await cp.send_text(nested_boot(depth, f"d{depth}", version=version))
        answers = {}
        for _ in DEPTHS:
            answer = await next_frame(cp)
            answers[answer[1]] = answer
        for depth in DEPTHS:
            assert answers[f"d{depth}"][2:4] == [code, "JSON nests deeper than 32 levels"]
        # The same CP is still answered, and so is another one.
        with trio.fail_after(10):
            assert "currentTime" in await cp.call(*heartbeat())
    await still_answers(gateway, "CPOK", subprotocols=[subprotocol])


async def test_deep_frames_published_straight_to_the_in_topic(
    gateway: RunningGateway, register: Callable[..., None], device_driver: MqttDriver
) -> None:
    """Whatever reaches +/in, not only through a gateway: the processor still survives."""
    register("CPM", "CPOK")
    depths = [*range(900, 1001), DEEPEST]
    async with device_driver.link("CPM") as link:
        await link.subscribe("CPM/out", 1)
        for depth in depths:
            await link.publish("CPM/in", nested_boot(depth, f"d{depth}").encode(), qos=1)
        await link.publish("CPM/in", b'[2,"hb","Heartbeat",{}]', qos=1)
        answers = {}
        with trio.fail_after(20):
            for _ in range(len(depths) + 1):
                answer = json.loads((await link.receive())[1])
                answers[answer[1]] = answer
    for depth in depths:
        assert answers[f"d{depth}"][2] == "FormatViolation"
    assert answers["hb"][0] == 3 and "currentTime" in answers["hb"][2]
    await still_answers(gateway, "CPOK")


# -- finding 2: garbage on a device's own shadow/update topic ---------------------------------------

GARBAGE = [
    b'{"state":{"reported":' + b"[" * DEEPEST + b"]" * DEEPEST + b"}}",
    b'{"state":{"reported":{"ocppProtocol":' + b"[" * 985 + b"]" * 985 + b"}}}",
    b"this is not json",
    b"\xff\xfe\x00{not utf-8",
    b"[1, 2, 3]",
    b'{"state": 1}',
    b'{"state":{"reported":{"ocppProtocol":{}}}}',  # unhashable: `protocol in OCPP_VERSIONS` raised TypeError
    b'{"state":{"reported":{"ocppProtocol":["ocpp1.6"]}}}',
    b'{"state":{"reported":{"ocppProtocol":' + b"9" * 5000 + b"}}}",
    b'{"state":{"reported":{"ocppProtocol":1e999999}}}',
    b'{"state":{"reported":{"ocppProtocol":NaN}}}',
    b"",
]


async def test_garbage_shadow_updates_do_not_end_the_processor(
    gateway: RunningGateway,
    fakeiot: FakeIot,
    register: Callable[..., None],
    device_driver: MqttDriver,
    aws: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    register("CPG", "CPOK")
    prefix = "$aws/things/CPG/shadow"
    async with device_driver.link("CPG") as link:
        await link.subscribe("CPG/out", 1)
        await link.subscribe(f"{prefix}/update/rejected", 1)
        for payload in GARBAGE:
            await link.publish(f"{prefix}/update", payload, qos=1)
        # A good update after the garbage, then a CALL: the same client's messages arrive in order,
        # so once the CALL is answered the processor has read every update before it.
        await link.publish(
            f"{prefix}/update", b'{"state":{"reported":{"ocppProtocol":"ocpp1.6"}}}', qos=1
        )
        await link.publish("CPG/in", b'[2,"auth","Authorize",{"idTag":"TAG1"}]', qos=1)
        rejected: list[dict[str, Any]] = []
        with trio.fail_after(15):
            while True:
                topic, payload = await link.receive()
                if topic == "CPG/out":
                    answer = json.loads(payload)
                    break
                rejected.append(json.loads(payload))
    # Answered as OCPP 1.6 (idTagInfo), learnt from the good update that followed the garbage.
    assert answer == [3, "auth", {"idTagInfo": {"status": "Accepted"}}]
    # fakeiot's shadow service survived too and refused the deep document as AWS does.
    assert any(r["code"] == 400 and "nesting" in r["message"] for r in rejected)
    assert shadow_of(aws, "CPG")["state"]["reported"]["ocppProtocol"] == "ocpp1.6"
    # Its HTTP door too (UpdateThingShadow).
    with pytest.raises(ClientError) as info:
        await trio.to_thread.run_sync(
            lambda: aws[1].update_thing_shadow(thingName="CPG", payload=GARBAGE[0])
        )
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Logged, but not once per message: a device could fill the log.
    warnings = [
        r
        for r in caplog.records
        if "dropped unreadable shadow update" in r.getMessage() and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    await still_answers(gateway, "CPOK")


# -- finding (d): CALLERRORs stay small --------------------------------------------------------------


async def test_big_malformed_call_gets_a_small_call_error(
    gateway: RunningGateway, register: Callable[..., None]
) -> None:
    register("CPB")
    blob = "a" * 129_000
    payload = {
        "reason": "NotAReason",
        "chargingStation": {"model": "M", "vendorName": "V"},
        "customData": {"vendorId": "x", "blob": blob},
    }
    frame = json.dumps([2, "big-1", "BootNotification", payload], separators=(",", ":"))
    assert 128_000 < len(frame) <= 131_072
    async with connect(gateway.url, "CPB") as cp:
        await cp.send_text(frame)
        with trio.fail_after(10):
            text = await cp.receive_text()
        answer = json.loads(text)
        assert answer[:3] == [4, "big-1", "FormatViolation"]
        assert len(text.encode()) < 4096
        assert len(answer[3]) <= 255 and len(json.dumps(answer[4], separators=(",", ":"))) <= 1024
        with trio.fail_after(10):
            assert "currentTime" in await cp.call(*heartbeat())


# -- finding (c): a handler bug is an InternalError for that CALL only ---------------------------------


async def test_handler_bug_answers_internal_error_and_the_next_call(
    gateway: RunningGateway,
    register: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(call: Call) -> dict[str, Any]:
        raise ZeroDivisionError("handler bug")

    assert gateway.processor is not None
    gateway.processor.handlers.register("2.0.1", "Heartbeat", broken)
    register("CPH")
    async with connect(gateway.url, "CPH") as cp:
        with pytest.raises(CallErrorReceived) as info:
            await cp.call(*heartbeat(), timeout=10)
        assert info.value.code == "InternalError"
        await cp.send_text('[2,"hb-2","Heartbeat",{}]')
        assert (await next_frame(cp))[:3] == [4, "hb-2", "InternalError"]
        status = {
            "timestamp": "2024-01-01T00:00:00+00:00",
            "connectorStatus": "Available",
            "evseId": 1,
            "connectorId": 1,
        }
        with trio.fail_after(10):
            assert await cp.call("StatusNotification", status) == {}
    assert any("CPH" in r.getMessage() and r.exc_info for r in caplog.records)


# -- finding (e): embedded, a processor crash does not end the gateway --------------------------------


async def test_processor_crash_is_restarted_and_the_gateway_keeps_serving(
    fakeiot: FakeIot,
    nursery: trio.Nursery,
    register: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original_run = Processor.run
    crash = trio.Event()
    restarted = trio.Event()
    calls = 0

    async def crashing_run(
        self: Processor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            restarted.set()
            await original_run(self, task_status=task_status)
            return
        async with trio.open_nursery() as inner:
            await inner.start(lambda task_status: original_run(self, task_status=task_status))
            task_status.started()
            await crash.wait()
            raise RuntimeError("injected processor crash")

    monkeypatch.setattr(Processor, "run", crashing_run)
    gateway = await nursery.start(run_gateway, gateway_config(fakeiot))
    register("CPS", "CPS2")
    async with connect(gateway.url, "CPS") as cp:
        with trio.fail_after(10):
            assert "currentTime" in await cp.call(*heartbeat())
        crash.set()
        with trio.fail_after(10):
            await restarted.wait()
            # The CP's connection survived the crash, and the restarted processor answers it.
            assert "currentTime" in await cp.call(*heartbeat())
    assert gateway.processor is not None and gateway.processor.crashes == 1
    await still_answers(gateway, "CPS2")


async def test_processor_failing_before_start_is_still_reported(
    fakeiot: FakeIot, nursery: trio.Nursery
) -> None:
    """Bad credentials are a configuration error: reported at once, not retried by the supervision."""
    with pytest.raises(BaseException) as info:
        with trio.fail_after(20):
            await nursery.start(
                run_gateway, gateway_config(fakeiot, processor_mqtt_password="wrong password")
            )
    leaves = list(_leaves(info.value))
    assert leaves and all(isinstance(e, MqttConnectError) for e in leaves), leaves


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
