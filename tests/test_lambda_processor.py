"""The message processor as a Lambda function, offline: exactly the code AWS runs.

Charge points connect to a gateway that has no processor of its own; fakeiot's rule on ``+/in``
(the rule the deployment creates, gateway.processor.lambda_event.RULE_SQL) invokes
``gateway.processor.lambda_handler.handler`` through fakeiot's Lambda action; the handler answers
with the MQTT processor's handler table and publishes through fakeiot's iot-data Publish.
Also: events and frames a function must survive (no exception for a charge point's input), and
what it does when its configuration or Publish is broken.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.messages import CallResult, validate_payload

from fakeiot import FakeIot, FakeIotConfig, running_fakeiot
from gateway.app import RunningGateway, run_gateway
from gateway.aws import AwsSettings, make_clients
from gateway.chargepoint import connect
from gateway.errors import ConfigError
from gateway.identity import thing_name_for
from gateway.mqtt_link import MqttLink, open_mqtt_driver
from gateway.processor import lambda_handler
from gateway.processor.lambda_event import RULE_SQL
from gateway.processor.lambda_host import AnswerNotPublished

from .conftest import Spy, backend_settings, gateway_config, shadow_of
from .test_gateway_loop import boot
from .waiting import until

FUNCTION_ARN = "arn:aws:lambda:us-east-1:000000000000:function:ocpp-processor"
HANDLER = "gateway.processor.lambda_handler:handler"
HEARTBEAT_INTERVAL = 123  # PROCESSOR_HEARTBEAT_INTERVAL: proves the function reads its options


@pytest.fixture
def function_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The function's environment (set per test); its containers closed and logging restored after."""
    for name in ("PROCESSOR_REGION", "PROCESSOR_IOT_DATA_URL", "PROCESSOR_HANDLERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROCESSOR_AUTHORIZATION", "accept-all")
    monkeypatch.setenv("PROCESSOR_HEARTBEAT_INTERVAL", str(HEARTBEAT_INTERVAL))
    level = logging.getLogger("gateway").level
    try:
        yield monkeypatch
    finally:
        lambda_handler.close_containers()
        logging.getLogger("gateway").setLevel(level)


@pytest.fixture
async def lambda_iot(tmp_path: Path, function_env: pytest.MonkeyPatch) -> AsyncIterator[FakeIot]:
    """fakeiot running the processor's handler for the rule on +/in, as the deployment wires it."""
    config = FakeIotConfig(
        mqtt_port=0,
        api_port=0,
        data_dir=tmp_path / "fakeiot",
        lambda_functions=((FUNCTION_ARN, HANDLER),),
    )
    async with running_fakeiot(config) as iot:
        function_env.setenv("PROCESSOR_IOT_API_URL", iot.api_url)
        iot_client, _ = aws = make_clients(AwsSettings(iot_endpoint_url=iot.api_url))
        try:
            rule = {
                "sql": RULE_SQL,
                "awsIotSqlVersion": "2016-03-23",
                "actions": [{"lambda": {"functionArn": FUNCTION_ARN}}],
            }
            await trio.to_thread.run_sync(
                lambda: iot_client.create_topic_rule(
                    ruleName="ocppProcessor", topicRulePayload=rule
                )
            )
        finally:
            for client in aws:
                client.close()
        yield iot


@pytest.fixture
def lambda_aws(lambda_iot: FakeIot) -> Iterator[tuple[Any, Any]]:
    clients = make_clients(AwsSettings(iot_endpoint_url=lambda_iot.api_url))
    yield clients
    for client in clients:
        client.close()


@pytest.fixture
async def lambda_spy(lambda_iot: FakeIot, nursery: trio.Nursery) -> AsyncIterator[Spy]:
    async with (
        open_mqtt_driver(backend_settings(lambda_iot)) as driver,
        driver.link("test:spy") as link,
    ):
        await link.subscribe("+/in", 1)
        await link.subscribe("+/out", 1)
        watcher = Spy(link)
        nursery.start_soon(watcher.run)
        yield watcher


async def check_response(version: str, action: str, payload: dict[str, Any]) -> None:
    await validate_payload(CallResult("1", payload, action=action), version)


# -- (a) charge points answered by the Lambda function, through the whole stack ------------------


async def test_charge_points_boot_and_beat_through_the_lambda_processor(
    lambda_iot: FakeIot, lambda_aws: tuple[Any, Any], nursery: trio.Nursery
) -> None:
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(lambda_iot, processor=False)
    )
    for cp_id in ("LAMBDA16", "LAMBDA201"):
        lambda_aws[0].create_thing(thingName=thing_name_for(cp_id))
    async with (
        connect(gateway.url, "LAMBDA16", subprotocols=["ocpp1.6"]) as cp16,
        connect(gateway.url, "LAMBDA201", subprotocols=["ocpp2.0.1"]) as cp201,
    ):
        for cp, version in ((cp16, "1.6"), (cp201, "2.0.1")):
            result = await cp.call(*boot(version), timeout=15)
            await check_response(version, "BootNotification", result)
            assert result["status"] == "Accepted" and result["interval"] == HEARTBEAT_INTERVAL
            beat = await cp.call("Heartbeat", {}, timeout=15)
            await check_response(version, "Heartbeat", beat)
    # The boot's attributes in the shadows, each read in its CP's version: a 1.6 boot mapped to
    # 2.0.1's shape proves the function found the version the gateway recorded.
    station = {
        "vendorName": "ACME",
        "model": "M1",
        "serialNumber": "SN-1",
        "firmwareVersion": "1.2.3",
    }
    reported16 = shadow_of(lambda_aws, thing_name_for("LAMBDA16"))["state"]["reported"]
    assert reported16["chargingStation"] == station and reported16["ocppProtocol"] == "ocpp1.6"
    reported201 = shadow_of(lambda_aws, thing_name_for("LAMBDA201"))["state"]["reported"]
    assert reported201["chargingStation"] == station and reported201["reason"] == "PowerUp"
    runner = lambda_iot.lambdas
    assert runner is not None and runner.invoked == 4 and runner.errors == 0


# -- (c) what a charge point or a misconfigured rule may send -----------------------------------


def frame_event(cp_id: str, payload: bytes) -> dict[str, str]:
    return {"chargePointId": cp_id, "frame": base64.b64encode(payload).decode()}


async def invoke(event: Any) -> dict[str, Any]:
    """Call the handler as a Lambda runtime would (blocking, outside Trio), without a context."""
    return await trio.to_thread.run_sync(lambda_handler.handler, event, None)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (None, "the event is a NoneType, not a JSON object"),
        ([2, "1", "Heartbeat", {}], "the event is a list, not a JSON object"),
        ({}, "no string 'chargePointId' (fields: none;"),
        (
            {"chargePointId": 7, "frame": ""},
            "no string 'chargePointId' (fields: chargePointId, frame",
        ),
        (
            {"chargePointId": "a/b", "frame": ""},
            "chargePointId 'a/b': Invalid charge point identity",
        ),
        ({"chargePointId": "CP1"}, "CP1: the event has no base64 string 'frame'"),
        ({"chargePointId": "CP1", "frame": "%%%"}, "CP1: frame is not base64"),
        ({"chargePointId": "CP1", "frame": ["x"]}, "CP1: the event has no base64 string 'frame'"),
    ],
)
async def test_an_event_that_is_not_the_rules_output_is_dropped_with_a_reason(
    lambda_iot: FakeIot, event: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = await invoke(event)
    assert outcome["result"] == "dropped"
    assert reason in outcome["reason"]
    assert f"event dropped: {outcome['reason']}" in caplog.text


def frames_on(spy: Spy, topic: str) -> list[list[Any]]:
    return [json.loads(p) for p in spy.on(topic)]


async def answer_on(spy: Spy, cp_id: str, message_id: str) -> list[Any]:
    _, payload = await spy.wait_for(
        lambda t, p: t == f"{cp_id}/out" and json.loads(p)[1] == message_id, timeout=10
    )
    return json.loads(payload)  # type: ignore[no-any-return]


async def test_malformed_frames_and_unknown_actions_are_answered_callerror(
    lambda_iot: FakeIot, lambda_spy: Spy
) -> None:
    link: MqttLink = lambda_spy.link  # the backend role may publish on any CP's topic
    # Through the rule: what a CP's frame may be.  No shadow: the default version, 2.0.1.
    for payload in (b"not json at all", b"\xff\xfe", b'{"an": "object"}'):
        await link.publish("HOSTILE/in", payload, qos=1)
        answer = await answer_on(lambda_spy, "HOSTILE", "-1")
        assert answer[0] == 4 and answer[2] == "FormatViolation", answer
        lambda_spy.messages.clear()
    await link.publish("HOSTILE/in", b'[2,"u1","NoSuchAction",{}]', qos=1)
    assert (await answer_on(lambda_spy, "HOSTILE", "u1"))[2] == "NotImplemented"
    await link.publish("HOSTILE/in", b'[2,"r1","Reset",{"type":"Immediate"}]', qos=1)
    assert (await answer_on(lambda_spy, "HOSTILE", "r1"))[2] == "NotSupported"
    await link.publish("HOSTILE/in", b'[2,"b1","BootNotification",{"reason":"PowerUp"}]', qos=1)
    answer = await answer_on(lambda_spy, "HOSTILE", "b1")  # invalid against its schema
    assert answer[2:4] == ["ProtocolError", "Payload for Action is incomplete"], answer
    # A CALLRESULT answers nothing; the function says so.
    outcome = await invoke(frame_event("HOSTILE", b'[3,"x1",{}]'))
    assert outcome == {
        "result": "no-answer",
        "chargePointId": "HOSTILE",
        "ocppVersion": "2.0.1",
        "reason": "not a CALL: nothing to answer",
    }
    runner = lambda_iot.lambdas
    assert runner is not None
    await until(lambda: runner.invoked == 6, what="every frame went through the function")
    assert runner.errors == 0


async def test_a_call_delivered_twice_is_answered_once_alike(
    lambda_iot: FakeIot, lambda_spy: Spy
) -> None:
    event = frame_event("TWICE", b'[2,"h1","Heartbeat",{}]')
    # One thread: one container, as Lambda's retry of an event in a warm container.
    first, second = await trio.to_thread.run_sync(
        lambda: (lambda_handler.handler(event, None), lambda_handler.handler(event, None))
    )
    assert (
        first == second == {"result": "answered", "chargePointId": "TWICE", "ocppVersion": "2.0.1"}
    )
    await until(lambda: len(lambda_spy.on("TWICE/out")) == 2)
    one, two = lambda_spy.on("TWICE/out")
    assert one == two  # the same currentTime: handled once


async def test_a_broken_configuration_is_the_functions_error_not_a_charge_points(
    lambda_iot: FakeIot, function_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    function_env.setenv("PROCESSOR_HEARTBEAT_INTERVAL", "0")
    with pytest.raises(ConfigError, match="PROCESSOR_HEARTBEAT_INTERVAL must be >= 1"):
        await invoke(frame_event("CP1", b'[2,"h1","Heartbeat",{}]'))
    assert "the function's configuration is wrong" in caplog.text
    function_env.setenv("PROCESSOR_HEARTBEAT_INTERVAL", "10")
    function_env.setenv("PROCESSOR_HANDLERS", "no_such_module_here")
    with pytest.raises(ConfigError, match="cannot import handler module 'no_such_module_here'"):
        await invoke(frame_event("CP1", b'[2,"h1","Heartbeat",{}]'))


async def test_an_answer_that_cannot_be_published_is_raised_for_lambda_to_retry(
    lambda_iot: FakeIot, function_env: pytest.MonkeyPatch
) -> None:
    function_env.setenv("PROCESSOR_IOT_DATA_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(AnswerNotPublished, match="CP1: answer not published to CP1/out"):
        await invoke(frame_event("CP1", b'[2,"h1","Heartbeat",{}]'))


class FakeContext:
    """What the Lambda runtime passes: the time the invocation has left."""

    function_name = "ocpp-processor"
    aws_request_id = "request-1"

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


async def test_a_slow_handler_is_answered_within_the_invocations_time(
    lambda_iot: FakeIot, lambda_spy: Spy, function_env: pytest.MonkeyPatch
) -> None:
    function_env.setenv("PROCESSOR_HANDLERS", "tests.lambda_targets")  # a Heartbeat that hangs
    began = trio.current_time()
    outcome = await trio.to_thread.run_sync(
        lambda_handler.handler, frame_event("SLOW", b'[2,"s1","Heartbeat",{}]'), FakeContext(3000)
    )
    # 3 s left: 0.2 s kept for returning, 2 s for publishing, so the handler had 0.8 s.
    assert outcome == {"result": "answered", "chargePointId": "SLOW", "ocppVersion": "2.0.1"}
    assert trio.current_time() - began < 2.8
    answer = await answer_on(lambda_spy, "SLOW", "s1")
    assert answer[2:4] == ["InternalError", "The CSMS did not answer Heartbeat within 0.8 s"]
