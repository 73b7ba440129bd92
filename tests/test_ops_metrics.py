"""The processor's and fakeiot's /metrics after a scripted session (issue 16), end to end.

A gateway (without its in-process processor), a processor beside it as
``python -m gateway.processor --metrics-port 0 --http-port 0`` assembles it, fakeiot under
both; a charge point speaking real OCPP 2.0.1 over a real WebSocket.  Each counter must move by
what the session did, read back with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.messages import CallError, CallResult

from fakeiot import FakeIot
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import ChargePoint, boot_notification, connect, heartbeat
from gateway.mqtt_link import MqttDriver, open_mqtt_driver
from gateway.processor.command_http import serve_command_api
from gateway.processor.command_service import CommandService, CommandSettings
from gateway.processor.metrics import ProcessorCollector, serve_processor_health
from gateway.processor.service import Processor, ProcessorSettings

from .conftest import backend_settings, gateway_config
from .processes import fakeiot_urls, program
from .test_commands_http import exchange, post
from .test_metrics import CuttableProxy, Samples, get, http, ready, scrape, value, wait_ready
from .waiting import until, until_protocol_recorded

HEARTBEAT_RULE = {
    "sql": "SELECT topic(1) AS chargePointId FROM '+/in' WHERE get(*, 2) = 'Heartbeat'",
    "actions": [
        {
            "dynamoDBv2": {
                "roleArn": "arn:aws:iam::000000000000:role/r",
                "putItem": {"tableName": "chargePointHeartbeat"},
            }
        }
    ],
}
V201 = "ocpp2.0.1"


@dataclass
class Stack:
    gateway: RunningGateway
    processor: Processor
    commands: CommandService
    metrics_port: int
    command_port: int
    fakeiot_port: int


COMMAND_TIMEOUT = 4.0


@pytest.fixture
async def stack(
    fakeiot: FakeIot,
    mqtt_driver: MqttDriver,
    aws: Any,
    register: Callable[..., None],
    nursery: trio.Nursery,
) -> Stack:
    register("CP1")
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, processor=False)
    )
    processor = Processor(mqtt_driver, aws[1], ProcessorSettings(client_id="test:processor"))
    await nursery.start(processor.run_supervised)
    commands = CommandService(
        # Long enough that an answered command never times out on a loaded machine (a 1 s
        # time-out did once); the unanswered one in the commands test waits it out.
        mqtt_driver,
        aws[0],
        aws[1],
        CommandSettings(client_id="test:cmd", timeout=COMMAND_TIMEOUT),
    )
    await nursery.start(commands.run)
    command_port: int = await nursery.start(
        lambda task_status: serve_command_api(
            commands, host="127.0.0.1", port=0, task_status=task_status
        )
    )
    metrics_port: int = await nursery.start(
        partial(
            serve_processor_health,
            ProcessorCollector(processor, commands),
            host="127.0.0.1",
            port=0,
        )
    )
    return Stack(gateway, processor, commands, metrics_port, command_port, fakeiot.api_port)


async def scrape_fakeiot(port: int) -> Samples:
    """fakeiot's /metrics: its server keeps connections alive, so ask it to close this one."""
    status, head, body = await http(
        port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200, body
    assert b"content-type: text/plain; version=" in head.lower()
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def mover(before: Samples, after: Samples) -> Callable[..., float]:
    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    return moved


async def test_processor_and_fakeiot_counters_move_by_what_a_session_did(
    stack: Stack, aws: Any
) -> None:
    aws[0].create_topic_rule(ruleName="heartbeats", topicRulePayload=HEARTBEAT_RULE)
    await until(lambda: stack.processor.subscribed, what="processor subscribed")
    processor_before = await scrape(stack.metrics_port)
    iot_before = await scrape_fakeiot(stack.fakeiot_port)
    assert value(processor_before, "ocpp_processor_broker_connected") == 1
    sent: list[str] = []
    async with connect(stack.gateway.url, "CP1", on_frame=_recorder(sent)) as cp:
        result = await cp.call(
            *boot_notification("2.0.1", vendor="V", model="M", serial="S", firmware="1")
        )
        assert result["status"] == "Accepted"
        for _ in range(2):
            assert "currentTime" in await cp.call(*heartbeat())
        # An action OCPP does not have: NotImplemented, counted under "other".
        await cp.send_text(json.dumps([2, "u-1", "MakeCoffee", {}]))
        assert _code(await cp.receive_text()) == "NotImplemented"
        # A CSMS-to-CP action sent the wrong way: NotSupported, under its own name.
        await cp.send_text(json.dumps([2, "w-1", "Reset", {"type": "Immediate"}]))
        assert _code(await cp.receive_text()) == "NotSupported"
        # A malformed CALL (a payload its schema refuses), and a frame that is no JSON at all.
        await cp.send_text(json.dumps([2, "bad-1", "Heartbeat", {"unexpected": 1}]))
        assert _code(await cp.receive_text()) == "FormatViolation"
        await cp.send_text("this is not JSON")
        assert _code(await cp.receive_text()) == "FormatViolation"
        during = await scrape_fakeiot(stack.fakeiot_port)
        assert (
            value(during, "fakeiot_mqtt_connected_clients")
            - value(iot_before, "fakeiot_mqtt_connected_clients")
            == 1
        )
    await until(lambda: len(stack.gateway.bridge.sessions) == 0, what="CP1 released")
    processor_after = await scrape(stack.metrics_port)
    iot_after = await scrape_fakeiot(stack.fakeiot_port)

    moved = mover(processor_before, processor_after)
    calls = "ocpp_processor_calls_total"
    assert moved(calls, ocpp_version=V201, action="BootNotification", outcome="answered") == 1
    assert moved(calls, ocpp_version=V201, action="Heartbeat", outcome="answered") == 2
    assert moved(calls, ocpp_version=V201, action="other", outcome="NotImplemented") == 1
    assert moved(calls, ocpp_version=V201, action="Reset", outcome="NotSupported") == 1
    assert moved(calls, ocpp_version=V201, action="Heartbeat", outcome="FormatViolation") == 1
    assert moved(calls, ocpp_version=V201, action="other", outcome="FormatViolation") == 1
    assert sum(v for (n, _), v in processor_after.items() if n == calls) == 7
    # Every CALL that reached a handler or a schema check was timed (not the unreadable frame).
    assert moved("ocpp_processor_handler_seconds_count") == 6
    assert moved("ocpp_processor_handler_seconds_bucket", le="+Inf") == 6
    assert moved("ocpp_processor_handler_seconds_sum") > 0
    assert moved("ocpp_processor_internal_errors_total") == 0
    assert moved("ocpp_processor_messages_ignored_total") == 0
    # No label holds a CP id.
    assert not any("CP1" in str(labels) for (_, labels) in processor_after)

    moved = mover(iot_before, iot_after)
    # Every frame of CP1 went through the broker on CP1/in (and to the processor, subscribed).
    assert moved("fakeiot_mqtt_messages_published_total") >= len(sent) * 2
    assert moved("fakeiot_mqtt_messages_delivered_total") >= len(sent) * 2
    rule = "fakeiot_rule_executions_total"
    assert moved(rule, rule="heartbeats", outcome="selected") == 3  # two and the malformed one
    assert moved(rule, rule="heartbeats", outcome="error") == 0
    # The boot, the unknown action, the Reset and the unreadable frame: WHERE is false.
    assert moved(rule, rule="heartbeats", outcome="filtered") == 4
    assert len(sent) == 7
    # The gateway looked CP1 up once; the connection (over MQTT) and the boot (the processor's
    # BootNotification handler, through the API) each updated its shadow.
    requests = "fakeiot_api_requests_total"
    assert moved(requests, operation="GET /things/{thing}", status="200") == 1
    assert moved(requests, operation="POST /things/{thing}/shadow", status="200") == 1
    assert moved("fakeiot_shadow_updates_total", result="accepted") == 2
    assert moved("fakeiot_shadow_updates_total", result="rejected") == 0
    assert value(iot_after, "fakeiot_mqtt_connected_clients") == value(
        iot_before, "fakeiot_mqtt_connected_clients"
    )


async def test_policy_refusals_and_api_errors_are_counted(
    fakeiot: FakeIot, device_driver: MqttDriver, aws: Any
) -> None:
    before = await scrape_fakeiot(fakeiot.api_port)
    from gateway.errors import MqttSubscriptionRefused

    async with device_driver.link("CP1") as cp1:
        with pytest.raises(MqttSubscriptionRefused):
            await cp1.subscribe("CP2/out", 1)
    with pytest.raises(aws[0].exceptions.ResourceNotFoundException):
        aws[0].describe_thing(thingName="NoSuchThing")
    after = await scrape_fakeiot(fakeiot.api_port)
    moved = mover(before, after)
    assert moved("fakeiot_policy_refusals_total", action="subscribe") == 1
    assert moved("fakeiot_policy_refusals_total", action="publish") == 0
    assert moved("fakeiot_api_requests_total", operation="GET /things/{thing}", status="404") == 1
    # An unknown path is "other", whatever it was: the label set stays bounded.
    assert (await http(fakeiot.api_port, _get("/no/such/thing-xyz")))[0] == 404
    last = await scrape_fakeiot(fakeiot.api_port)
    assert value(last, "fakeiot_api_requests_total", operation="other", status="404") == 1
    assert not any("thing-xyz" in str(labels) for (_, labels) in last)


async def test_a_deleted_rule_leaves_the_metrics(fakeiot: FakeIot, aws: Any) -> None:
    """Rule names are label values: created and deleted in a loop, they must not pile up."""
    iot, iot_data = aws
    payload = {
        "sql": "SELECT * FROM 'churn/+'",
        "actions": [{"republish": {"roleArn": "arn:aws:iam::000000000000:role/r", "topic": "x"}}],
    }
    for name in ("churn_a", "churn_b"):
        await trio.to_thread.run_sync(
            partial(iot.create_topic_rule, ruleName=name, topicRulePayload=payload)
        )
        await trio.to_thread.run_sync(
            lambda: iot_data.publish(topic="churn/1", qos=0, payload=b"{}")
        )

        with trio.fail_after(5):
            while not value(
                await scrape_fakeiot(fakeiot.api_port),
                "fakeiot_rule_executions_total",
                rule=name,
                outcome="selected",
            ):
                await trio.sleep(0.05)
        await trio.to_thread.run_sync(partial(iot.delete_topic_rule, ruleName=name))
        samples = await scrape_fakeiot(fakeiot.api_port)
        assert not any(name in str(labels) for (_, labels) in samples)


async def test_commands_through_the_api_are_counted_with_their_outcome(
    stack: Stack, register: Callable[..., None], aws: Any
) -> None:
    before = await scrape(stack.metrics_port)
    async with connect(stack.gateway.url, "CP1") as cp:
        await until_protocol_recorded(aws, "CP1")  # else the command API answers 409
        # The CP answers the first command, refuses the second, leaves the third unanswered.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_answer_commands, cp)
            statuses = []
            for _ in range(3):
                status, answer = await exchange(
                    stack.command_port,
                    post("/charge-points/CP1/calls/Reset", b'{"type": "Immediate"}'),
                    timeout=COMMAND_TIMEOUT + 10,
                )
                statuses.append(status)
            nursery.cancel_scope.cancel()
    assert statuses == [200, 502, 504], answer  # answered, refused by the CP, unanswered
    status, _ = await exchange(stack.command_port, post("/charge-points/NOPE/calls/Reset", b"{}"))
    assert status == 404
    after = await scrape(stack.metrics_port)
    moved = mover(before, after)
    commands = "ocpp_processor_commands_total"
    assert moved(commands, action="Reset", outcome="accepted") == 1
    assert moved(commands, action="Reset", outcome="rejected") == 1
    assert moved(commands, action="Reset", outcome="timeout") == 1
    assert moved(commands, action="Reset", outcome="refused") == 1
    assert moved("ocpp_processor_commands_sent_total") == 3
    # The processor's +/in handling sees the CP's answers too.
    answers = "ocpp_processor_cp_answers_total"
    assert moved(answers, ocpp_version=V201, type="CALLRESULT") == 1
    assert moved(answers, ocpp_version=V201, type="CALLERROR") == 1


async def test_processor_readyz_follows_its_broker_connection(
    fakeiot: FakeIot, aws: Any, nursery: trio.Nursery
) -> None:
    proxy = CuttableProxy(fakeiot.mqtt_port)
    listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
    settings = replace(backend_settings(fakeiot), port=listeners[0].socket.getsockname()[1])
    async with open_mqtt_driver(settings) as driver, trio.open_nursery() as inner:
        processor = Processor(driver, aws[1], ProcessorSettings(client_id="test:processor"))
        await inner.start(processor.run_supervised)
        port = await inner.start(
            partial(serve_processor_health, ProcessorCollector(processor), host="127.0.0.1", port=0)
        )
        await wait_ready(port)
        assert (await get(port, "/healthz"))[::2] == (200, b"ok\n")
        proxy.cut_now()
        with trio.fail_after(10):
            while (await ready(port))[0] == 200:
                await trio.sleep(0.02)
        assert await ready(port) == (503, b"not ready: MQTT broker unreachable\n")
        assert value(await scrape(port), "ocpp_processor_broker_connected") == 0
        proxy.cut = False  # the broker is back: the processor reconnects with backoff
        await wait_ready(port, timeout=15)
        assert value(await scrape(port), "ocpp_processor_reconnects_total") >= 1
        inner.cancel_scope.cancel()


async def test_the_embedded_processor_is_in_the_gateways_metrics(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Callable[..., None]
) -> None:
    register("CP1")
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, metrics_port=0)
    )
    assert gateway.metrics_port is not None
    async with connect(gateway.url, "CP1") as cp:
        assert "currentTime" in await cp.call(*heartbeat())
    samples = await scrape(gateway.metrics_port)
    assert (
        value(
            samples,
            "ocpp_processor_calls_total",
            ocpp_version=V201,
            action="Heartbeat",
            outcome="answered",
        )
        == 1
    )
    assert value(samples, "ocpp_gateway_admissions_total") == 1


def _recorder(sent: list[str]) -> Callable[[str, str], None]:
    def record(direction: str, text: str) -> None:
        if direction == "sent":
            sent.append(text)

    return record


def _code(frame: str) -> str:
    parsed = json.loads(frame)
    assert parsed[0] == 4, parsed
    return str(parsed[2])


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


async def _answer_commands(cp: ChargePoint) -> None:
    answers = [
        lambda i: CallResult(i, {"status": "Accepted"}).to_json(),
        lambda i: CallError(i, "InternalError", "no", {}).to_json(),
    ]
    for answer in answers:
        call = json.loads(await cp.receive_text())
        assert call[0] == 2 and call[2] == "Reset", call
        await cp.send_text(answer(call[1]))
    await cp.receive_text()  # the third: never answered
    await trio.sleep_forever()


def test_python_m_gateway_processor_serves_its_metrics(tmp_path: Path) -> None:
    """The standalone processor's CLI: --metrics-port, /readyz once subscribed, JSON logs."""
    with program(
        "-m", "fakeiot", "--mqtt-port", "0", "--api-port", "0", "--data-dir", str(tmp_path)
    ) as iot:
        mqtt, api_url = fakeiot_urls(iot)
        with program(
            "-m", "gateway.processor", "--mqtt-port", str(mqtt), "--iot-api-url", api_url,
            "--mqtt-username", "fakeiot-backend",
            "--mqtt-password-file", str(tmp_path / "backend-password"),
            "--metrics-port", "0", "--log-format", "json",
        ) as processor:  # fmt: skip
            line = processor.wait_for_line("processor: metrics on http://")
            port = int(re.search(r":(\d+)/metrics", line).group(1))  # type: ignore[union-attr]
            processor.wait_for_line('"processor: subscribed to +/in')
            samples = trio.run(scrape, port)
            assert value(samples, "ocpp_processor_broker_connected") == 1
            assert ("process_cpu_seconds_total", frozenset()) in samples
            assert trio.run(get, port, "/readyz")[::2] == (200, b"ready\n")
            assert processor.stop() == 0
        logs = [line for line in processor.lines if line.startswith("{")]
        assert logs and all(json.loads(line)["level"] for line in logs)
