"""fakeiot's rules engine: the IoT SQL subset (pure), and the sample's heartbeat rule
filling its table from real heartbeats through the gateway."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot, FakeIotConfig, running_fakeiot
from fakeiot.rules import RuleError, SqlSyntaxError, UnsupportedSql, parse
from fakeiot.rules.engine import compile_rule
from fakeiot.rules.sql import Message
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import connect, heartbeat

from .conftest import Spy, gateway_config
from .processes import run
from .test_gateway_loop import boot
from .waiting import until

HEARTBEAT_SQL = "SELECT topic(1) AS chargePointId, timestamp() AS lastTimestamp FROM '+/in' WHERE get(*, 2) = 'Heartbeat'"
HEARTBEAT_RULE = {
    "sql": HEARTBEAT_SQL,
    "actions": [
        {
            "dynamoDBv2": {
                "roleArn": "arn:aws:iam::000000000000:role/r",
                "putItem": {"tableName": "chargePointHeartbeat"},
            }
        }
    ],
}


def test_heartbeat_statement() -> None:
    statement = parse(HEARTBEAT_SQL)
    beat = Message("CP1/in", b'[2,"19","Heartbeat",{}]', "CP1", 1700000000000)
    assert statement.evaluate(beat) == {"chargePointId": "CP1", "lastTimestamp": 1700000000000}
    assert statement.evaluate(Message("CP1/in", b'[2,"1","BootNotification",{}]')) is None
    assert statement.evaluate(Message("CP1/out", b'[2,"19","Heartbeat",{}]')) is None
    assert (
        statement.evaluate(Message("a/b/in", b'[2,"19","Heartbeat",{}]')) is None
    )  # '+' is one level
    assert statement.evaluate(Message("CP1/in", b"not json")) is None


@pytest.mark.parametrize(
    ("sql", "payload", "expected"),
    [
        ("SELECT * FROM 't'", b'{"a": 1}', {"a": 1}),
        ("SELECT a.b[1] AS x, a.c FROM 't'", b'{"a": {"b": [5, 6], "c": "z"}}', {"x": 6, "c": "z"}),
        ("SELECT missing, 1 + 2 * 3 AS n FROM 't'", b"{}", {"n": 7}),
        (
            "SELECT * FROM 't' WHERE a > 1 AND NOT (b = 'x') OR c <> 2",
            b'{"a": 2, "b": "y"}',
            {"a": 2, "b": "y"},
        ),
        (
            "SELECT * FROM 't' WHERE a > 1",
            b'{"a": "2"}',
            None,
        ),  # string vs number: undefined, no match
        (
            "SELECT upper(s) AS u, concat(s, '-', 1) AS c, clientid() AS id FROM 't'",
            b'{"s": "ab"}',
            {"u": "AB", "c": "ab-1", "id": "client-7"},
        ),
        ("SELECT topic() AS t, topic(2) AS second, topic(9) AS none FROM 't/#'", b"{}", None),
    ],
)
def test_sql_subset(sql: str, payload: bytes, expected: dict[str, Any] | None) -> None:
    topic = "t/x" if "'t/#'" in sql else "t"
    result = parse(sql).evaluate(Message(topic, payload, "client-7", 1))
    if "'t/#'" in sql:
        assert result == {"t": "t/x", "second": "x"}
    else:
        assert result == expected


@pytest.mark.parametrize(
    ("sql", "error", "fragment"),
    [
        ("SELECT CASE WHEN a THEN 1 END FROM 't'", UnsupportedSql, "CASE"),
        ("SELECT a FROM 't' GROUP BY a", UnsupportedSql, "GROUP"),
        ("SELECT sqrt(a) FROM 't'", UnsupportedSql, "unsupported function sqrt()"),
        ("SELECT a FROM t", SqlSyntaxError, "quoted topic filter"),
        ("SELECT a FROM 'a/#/b'", SqlSyntaxError, "'#' must be a whole last level"),
        ("SELECT a FROM 't' WHERE", SqlSyntaxError, "end of statement"),
        ("SELECT get(*) FROM 't'", SqlSyntaxError, "get() takes 2 argument(s), got 1"),
        ("SELECT a FROM 't' junk", SqlSyntaxError, "expected end of statement, found 'junk'"),
    ],
)
def test_sql_errors_name_the_problem(sql: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=None) as info:
        parse(sql)
    assert fragment in str(info.value)


def test_rule_validation() -> None:
    with pytest.raises(RuleError, match="unsupported action 's3'"):
        compile_rule("r", {"sql": HEARTBEAT_SQL, "actions": [{"s3": {"bucketName": "b"}}]})
    with pytest.raises(RuleError, match="lambda functionArn: 'x' is not a Lambda function ARN"):
        compile_rule("r", {"sql": HEARTBEAT_SQL, "actions": [{"lambda": {"functionArn": "x"}}]})
    with pytest.raises(RuleError, match="first SELECT column, which cannot be"):
        compile_rule("r", {"sql": "SELECT * FROM 't'", "actions": HEARTBEAT_RULE["actions"]})
    with pytest.raises(RuleError, match="invalid rule name"):
        compile_rule("my-rule", HEARTBEAT_RULE)


async def test_heartbeat_rule_from_a_file_fills_its_table(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps({"rules": {"chargePointHeartbeat": HEARTBEAT_RULE}}))
    config = FakeIotConfig(
        mqtt_port=0, api_port=0, data_dir=tmp_path / "iot", rules_file=rules_file
    )
    async with running_fakeiot(config) as iot, trio.open_nursery() as nursery:
        from gateway.aws import AwsSettings, make_clients

        iot_client, _ = make_clients(AwsSettings(iot_endpoint_url=iot.api_url))
        iot_client.create_thing(thingName="CP1")
        iot_client.create_thing(thingName="CP2")
        gateway: RunningGateway = await nursery.start(run_gateway, gateway_config(iot))
        async with connect(gateway.url, "CP1") as cp1, connect(gateway.url, "CP2") as cp2:
            await cp1.call(*boot())
            await cp2.call(*boot())
            await cp1.call(*heartbeat())
            store = iot.store
            assert store is not None
            # The rule reads <cp-id>/in beside the processor: the answer can come before its write.
            await until(
                lambda: store.scan_items("chargePointHeartbeat"), what="the rule's first write"
            )
            first = store.scan_items("chargePointHeartbeat")
            assert [item["chargePointId"] for item in first] == ["CP1"]  # boots do not count
            # timestamp() counts wall-clock milliseconds: the second beat must fall in a later one.
            stamp = first[0]["lastTimestamp"]
            await until(lambda: time.time() * 1000 > stamp + 1, what="a later millisecond")
            await cp1.call(*heartbeat())
            await cp2.call(*heartbeat())

            def both_written() -> bool:
                rows = {i["chargePointId"]: i for i in store.scan_items("chargePointHeartbeat")}
                return "CP2" in rows and rows["CP1"]["lastTimestamp"] > stamp

            await until(both_written, what="the rule's writes of both heartbeats")
        scan = await trio.to_thread.run_sync(
            lambda: run(
                "-m", "fakeiot", "table", "scan", "chargePointHeartbeat", "--api-url", iot.api_url
            )
        )
        assert scan.returncode == 0, scan.stderr
        items = [json.loads(line) for line in scan.stdout.splitlines()]
        assert [i["chargePointId"] for i in items] == ["CP1", "CP2"]  # one row per key, replaced
        assert items[0]["lastTimestamp"] > first[0]["lastTimestamp"]
        iot_client.close()
        nursery.cancel_scope.cancel()  # the gateway stops before its broker


async def test_rule_cli_republish_and_errors(
    fakeiot: FakeIot, gateway: RunningGateway, register: Any, spy: Spy
) -> None:
    api = ["--api-url", fakeiot.api_url]
    created = await trio.to_thread.run_sync(
        lambda: run(
            "-m",
            "fakeiot",
            "rule",
            "create",
            "boots",
            "--sql",
            "SELECT get(get(*, 3), 'reason') AS reason, topic(1) AS cp FROM '+/in' WHERE get(*, 2) = 'BootNotification'",
            "--republish",
            "cpo/boots/${topic(1)}",
            *api,
        )
    )
    assert created.returncode == 0, created.stderr
    listed = await trio.to_thread.run_sync(lambda: run("-m", "fakeiot", "rule", "list", *api))
    assert listed.stdout.split() == ["boots", "+/in"]
    await spy.link.subscribe("cpo/boots/+", 1)
    register("CP1")
    async with connect(gateway.url, "CP1") as cp:
        await cp.call(*boot())
    _, payload = await spy.wait_for(lambda t, p: t == "cpo/boots/CP1")
    assert json.loads(payload) == {"reason": "PowerUp", "cp": "CP1"}

    unsupported = await trio.to_thread.run_sync(
        lambda: run(
            "-m",
            "fakeiot",
            "rule",
            "create",
            "bad",
            "--sql",
            "SELECT a FROM 't' ORDER BY a",
            "--table",
            "t",
            *api,
        )
    )
    assert unsupported.returncode == 1
    assert (
        "SqlParseException" in unsupported.stderr and "unsupported SQL: ORDER" in unsupported.stderr
    )
    duplicate = await trio.to_thread.run_sync(
        lambda: run(
            "-m", "fakeiot", "rule", "create", "boots", "--sql", HEARTBEAT_SQL, "--table", "t", *api
        )
    )
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    deleted = await trio.to_thread.run_sync(
        lambda: run("-m", "fakeiot", "rule", "delete", "boots", *api)
    )
    assert deleted.returncode == 0
    assert (
        await trio.to_thread.run_sync(lambda: run("-m", "fakeiot", "rule", "list", *api))
    ).stdout == ""


def test_serve_reports_a_bad_rules_file(tmp_path: Path) -> None:
    bad = tmp_path / "rules.json"
    bad.write_text(
        json.dumps(
            {"rules": {"r": {"sql": "SELECT CASE FROM 'x'", "actions": HEARTBEAT_RULE["actions"]}}}
        )
    )
    result = run(
        "-m",
        "fakeiot",
        "--mqtt-port",
        "0",
        "--api-port",
        "0",
        "--data-dir",
        str(tmp_path),
        "--rules",
        str(bad),
    )
    assert result.returncode == 2
    assert "error: rule r: unsupported SQL: CASE" in result.stderr
