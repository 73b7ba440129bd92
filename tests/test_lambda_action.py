"""fakeiot's Lambda rule action: the ARN map, the bounded runner, and a rule invoking a function
over a real broker without ever ending fakeiot.

The functions are in tests/lambda_targets.py; gateway.processor's own handler is exercised in
test_lambda_processor.py.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot, FakeIotConfig, running_fakeiot
from fakeiot.cli import main as fakeiot_main
from fakeiot.rules.engine import compile_rule
from fakeiot.rules.lambdas import (
    Invocation,
    LambdaError,
    LambdaRunner,
    parse_function_map,
)
from fakeiot.rules.sql import Message, parse
from gateway.aws import AwsSettings, make_clients
from gateway.mqtt_link import open_mqtt_driver
from gateway.processor.lambda_event import RULE_SQL

from . import lambda_targets
from .conftest import backend_settings
from .processes import run
from .waiting import until

ARN = "arn:aws:lambda:us-east-1:000000000000:function:{}"


@pytest.fixture(autouse=True)
def targets() -> Iterator[None]:
    lambda_targets.reset()
    yield
    lambda_targets.RELEASE.set()  # a blocked worker must not outlive its test
    lambda_targets.reset()


def runner(*names: str, **bounds: Any) -> LambdaRunner:
    return LambdaRunner({ARN.format(n): f"tests.lambda_targets:{n}" for n in names}, **bounds)


def invocation(name: str, event: dict[str, Any] | None = None) -> Invocation:
    return Invocation("rule1", ARN.format(name), event or {"n": 1})


# -- the ARN map and the action's validation (pure) ----------------------------------------


def test_function_map_reads_arn_to_module_function_pairs() -> None:
    arn1, arn2 = ARN.format("one"), ARN.format("two") + ":live"
    assert parse_function_map([f"{arn1}=pkg.mod:fn, {arn2}=other:handler", ""]) == {
        arn1: "pkg.mod:fn",
        arn2: "other:handler",
    }


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("pkg.mod:fn", "expected ARN=module:function"),
        ("arn:aws:lambda:us-east-1:1:function:f=pkg:fn", "is not a Lambda function ARN"),
        ("arn:aws:s3:::bucket=pkg:fn", "is not a Lambda function ARN"),
        (ARN.format("f") + "=pkg.mod", "is not module:function"),
        (ARN.format("f") + "=pkg mod:fn", "is not module:function"),
    ],
)
def test_function_map_names_what_is_wrong(entry: str, fragment: str) -> None:
    with pytest.raises(LambdaError, match=fragment):
        parse_function_map([entry])


def test_rule_lambda_action_needs_a_function_arn() -> None:
    rule = {"sql": RULE_SQL, "actions": [{"lambda": {"functionArn": ARN.format("f")}}]}
    assert compile_rule("r", rule).functions == (ARN.format("f"),)
    for spec in ({}, {"functionArn": 7}, {"functionArn": "function:f"}, None):
        with pytest.raises(ValueError, match="lambda functionArn"):
            compile_rule("r", {"sql": RULE_SQL, "actions": [{"lambda": spec}]})


def test_encode_star_carries_any_payload_byte_for_byte() -> None:
    statement = parse(RULE_SQL)
    for payload in (b'[2,"1","Heartbeat",{}]', b"\xff\x00not json", b""):
        result = statement.evaluate(Message("CP 1/in", payload))
        assert result == {
            "chargePointId": "CP 1",
            "frame": base64.b64encode(payload).decode(),
        }
    assert parse("SELECT encode(a, 'base64') AS e FROM 't'").evaluate(
        Message("t", b'{"a": "x"}')
    ) == {"e": base64.b64encode(b"x").decode()}
    with pytest.raises(ValueError, match="only encoding scheme is 'base64'"):
        parse("SELECT encode(*, 'hex') AS e FROM 't'")


def test_a_function_that_cannot_be_imported_is_refused_at_start() -> None:
    for target, fragment in (
        ("tests.no_such_module:f", "cannot import tests.no_such_module: ModuleNotFoundError"),
        ("tests.lambda_targets:missing", "has no function 'missing'"),
        ("tests.lambda_targets:not_callable", "has no function 'not_callable'"),
    ):
        with pytest.raises(LambdaError, match=fragment):
            LambdaRunner({ARN.format("f"): target}).start()


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (
            ["--lambda", ARN.format("f") + "=tests.no_such_module:f"],
            {},
            f"error: --lambda {ARN.format('f')}: cannot import tests.no_such_module: "
            "ModuleNotFoundError: No module named 'tests.no_such_module'",
        ),
        ([], {"FAKEIOT_LAMBDA": "x"}, "error: --lambda 'x': expected ARN=module:function"),
        (
            ["--lambda-concurrency", "0"],
            {},
            "error: --lambda-concurrency must be at least 1, not 0",
        ),
        (["--lambda-timeout", "0"], {}, "error: --lambda-timeout must be above 0 seconds, not 0"),
    ],
)
def test_fakeiot_does_not_start_with_a_function_it_cannot_run(
    tmp_path: Path, args: list[str], env: dict[str, str], error: str
) -> None:
    ports = ["--mqtt-port", "0", "--api-port", "0", "--data-dir", str(tmp_path)]
    done = run("-m", "fakeiot", *ports, *args, env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [error]


def test_cli_refuses_a_bad_lambda_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert fakeiot_main(["serve", "--lambda", "not-an-arn=x:y"], environ={}) == 2
    assert "error: 'not-an-arn' is not a Lambda function ARN" in capsys.readouterr().err
    assert fakeiot_main(["serve", "--lambda", "nonsense"], environ={}) == 2
    assert "expected ARN=module:function" in capsys.readouterr().err


# -- the runner: bounds, errors, context ----------------------------------------------------


async def test_a_flood_is_throttled_beyond_concurrency_and_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = runner("blocking", concurrency=1, queue_size=2)
    pool.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="fakeiot.rules.lambdas"):
            admitted = [pool.submit(invocation("blocking", {"n": n})) for n in range(50)]
        # One running and two waiting; the other 47 dropped, each counted, one WARNING logged.
        assert admitted == [True, True, True] + [False] * 47
        assert pool.throttled == 47
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "throttled" in warnings[0].getMessage()
        await until(lambda: len(lambda_targets.CALLS) == 1, what="the first invocation runs")
        lambda_targets.RELEASE.set()
        await until(lambda: pool.invoked == 3, what="the admitted invocations run")
        assert [c["event"]["n"] for c in lambda_targets.CALLS] == [0, 1, 2]
        assert pool.submit(invocation("blocking", {"n": 99}))  # room again
        await until(lambda: pool.invoked == 4)
    finally:
        await trio.to_thread.run_sync(pool.stop)


async def test_a_failing_function_is_logged_and_the_runner_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = runner("failing", "exiting", "recording", concurrency=1)
    pool.start()
    try:
        assert pool.submit(invocation("failing"))
        assert pool.submit(invocation("exiting"))
        assert pool.submit(invocation("recording", {"after": True}))
        await until(lambda: pool.invoked == 3, what="all three ran on the one worker")
        assert pool.errors == 2
        assert "the function failed on purpose" in caplog.text
        assert lambda_targets.CALLS[-1]["event"] == {"after": True}
        # No function for an ARN: an error, counted and logged, nothing queued.
        assert not pool.submit(invocation("unmapped"))
        assert pool.errors == 3
        assert "no function for arn:aws:lambda:us-east-1:000000000000:function:unmapped" in (
            caplog.text
        )
    finally:
        await trio.to_thread.run_sync(pool.stop)


async def test_context_and_timeout_as_aws_gives_them() -> None:
    pool = runner("recording", "blocking", concurrency=2, timeout=0.2)
    pool.start()
    try:
        event = {"chargePointId": "CP1", "nested": {"list": [1, "a"]}}
        assert pool.submit(invocation("recording", event))
        assert pool.submit(invocation("recording", event))
        await until(lambda: pool.invoked == 2)
        first, second = lambda_targets.CALLS
        assert first["event"] == event and first["event"] is not event  # a JSON copy
        assert first["function_name"] == "recording"
        assert 0 < first["remaining_ms"] <= 200
        assert first["aws_request_id"] != second["aws_request_id"]
        assert first["thread"].startswith("fakeiot-lambda-")
        # Overrunning its timeout: counted once it returns (a thread cannot be stopped).
        assert pool.submit(invocation("blocking"))
        await trio.sleep(0.3)
        lambda_targets.RELEASE.set()
        await until(lambda: pool.timeouts == 1, what="the overrun is counted")
    finally:
        await trio.to_thread.run_sync(pool.stop)


# -- through fakeiot: a rule on a real broker ------------------------------------------------


@pytest.fixture
async def lambda_iot(tmp_path: Path) -> AsyncIterator[FakeIot]:
    functions = tuple(
        (ARN.format(n), f"tests.lambda_targets:{n}") for n in ("recording", "failing")
    )
    config = FakeIotConfig(
        mqtt_port=0, api_port=0, data_dir=tmp_path / "fakeiot", lambda_functions=functions
    )
    async with running_fakeiot(config) as iot:
        yield iot


async def test_rule_invokes_the_function_and_survives_its_failures(
    lambda_iot: FakeIot, caplog: pytest.LogCaptureFixture
) -> None:
    iot_client, iot_data = make_clients(AwsSettings(iot_endpoint_url=lambda_iot.api_url))
    try:
        actions = [{"lambda": {"functionArn": ARN.format(n)}} for n in ("failing", "recording")]
        await trio.to_thread.run_sync(
            lambda: iot_client.create_topic_rule(
                ruleName="frames", topicRulePayload={"sql": RULE_SQL, "actions": actions}
            )
        )
        async with (
            open_mqtt_driver(backend_settings(lambda_iot)) as driver,
            driver.link("test:publisher") as link,
        ):
            for payload in (b"\xfe not json", b'[2,"m1","Heartbeat",{}]'):
                await link.publish("CP1/in", payload, qos=1)
            await link.publish("CP1/out", b"not matched", qos=1)
            await until(lambda: len(lambda_targets.CALLS) == 4, what="two events, two functions")
        runner_ = lambda_iot.lambdas
        assert runner_ is not None
        await until(lambda: runner_.invoked == 4)
        events = [c["event"] for c in lambda_targets.CALLS if c["function_name"] == "recording"]
        # Invocations run in a pool, as AWS runs them concurrently: no order between the two.
        assert sorted(events, key=lambda e: e["frame"]) == sorted(
            [
                {"chargePointId": "CP1", "frame": base64.b64encode(b"\xfe not json").decode()},
                {
                    "chargePointId": "CP1",
                    "frame": base64.b64encode(b'[2,"m1","Heartbeat",{}]').decode(),
                },
            ],
            key=lambda e: e["frame"],
        )
        assert runner_.errors == 2 and "the function failed on purpose" in caplog.text
        # fakeiot goes on serving.
        assert (await trio.to_thread.run_sync(iot_client.list_topic_rules))["rules"]
    finally:
        iot_client.close()
        iot_data.close()


async def test_a_flood_through_the_broker_is_throttled_and_fakeiot_serves_on(
    tmp_path: Path,
) -> None:
    config = FakeIotConfig(
        mqtt_port=0,
        api_port=0,
        data_dir=tmp_path / "fakeiot",
        lambda_functions=((ARN.format("blocking"), "tests.lambda_targets:blocking"),),
        lambda_concurrency=1,
        lambda_queue=1,
    )
    async with running_fakeiot(config) as iot:
        iot_client, iot_data = make_clients(AwsSettings(iot_endpoint_url=iot.api_url))
        try:
            action = {"lambda": {"functionArn": ARN.format("blocking")}}
            await trio.to_thread.run_sync(
                lambda: iot_client.create_topic_rule(
                    ruleName="flood", topicRulePayload={"sql": RULE_SQL, "actions": [action]}
                )
            )
            async with (
                open_mqtt_driver(backend_settings(iot)) as driver,
                driver.link("test:flood") as link,
            ):
                for n in range(20):
                    await link.publish(f"CP{n}/in", b"{}", qos=1)
                pool = iot.lambdas
                assert pool is not None
                await until(lambda: pool.throttled == 18, what="all but 1 running + 1 waiting")
                # The broker and the API go on while the function holds the only worker.
                await link.publish("CP1/out", b"still here", qos=1)
                assert await trio.to_thread.run_sync(iot_client.list_topic_rules)
                lambda_targets.RELEASE.set()
                await until(lambda: pool.invoked == 2)
            assert [c["event"]["chargePointId"] for c in lambda_targets.CALLS] == ["CP0", "CP1"]
        finally:
            iot_client.close()
            iot_data.close()
