"""The gateway's AWS calls (registry, shadows) and scripts/provision.py, run against
fakeiot AND moto's server mode with the same tests: the calls are the real AWS API."""

from __future__ import annotations

import itertools
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot, FakeIotConfig
from gateway.aws import AwsSettings, make_clients
from gateway.identity import validate_identity
from gateway.registry import Registry

from .processes import run

BACKENDS = ["fakeiot", "moto"]


@pytest.fixture(params=BACKENDS)
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An AWS IoT API endpoint: a fresh fakeiot, or the module's moto server."""
    if request.param == "moto":
        yield request.getfixturevalue("moto_url")
        return
    iot = FakeIot(FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path / "fakeiot"))
    iot.start()
    try:
        yield iot.api_url
    finally:
        iot.stop()


@pytest.fixture
def clients(endpoint: str) -> Iterator[tuple[Any, Any]]:
    pair = make_clients(AwsSettings(iot_endpoint_url=endpoint))
    yield pair
    for client in pair:
        client.close()


_SERIAL = itertools.count(1)


def _unique(prefix: str) -> str:
    # moto's server lives for the whole module (in this process): keep names apart between tests.
    return f"{prefix}-{next(_SERIAL)}"


async def test_registry_lookup_and_cache(clients: tuple[Any, Any]) -> None:
    iot, _ = clients
    cp_id = _unique("CP.reg")
    identity = validate_identity(cp_id)
    registry = Registry(iot, ttl=60.0, negative_ttl=0.0)
    assert await registry.lookup(identity.thing_name) is None
    iot.create_thing(
        thingName=identity.thing_name, attributePayload={"attributes": {"ocppSecurityProfile": "1"}}
    )
    assert await registry.lookup(identity.thing_name) == {"ocppSecurityProfile": "1"}
    iot.delete_thing(thingName=identity.thing_name)
    assert await registry.lookup(identity.thing_name) == {
        "ocppSecurityProfile": "1"
    }  # cached for the TTL
    registry.forget(identity.thing_name)
    assert await registry.lookup(identity.thing_name) is None


async def test_shadow_calls(clients: tuple[Any, Any]) -> None:
    iot, iot_data = clients
    name = _unique("shadow")
    iot.create_thing(thingName=name)
    reported = {"state": {"reported": {"ocppProtocol": "ocpp1.6", "chargePointModel": "M1"}}}
    await trio.to_thread.run_sync(
        lambda: iot_data.update_thing_shadow(thingName=name, payload=json.dumps(reported).encode())
    )
    doc = json.loads(iot_data.get_thing_shadow(thingName=name)["payload"].read())
    assert doc["state"]["reported"] == reported["state"]["reported"]
    assert doc["version"] == 1
    iot_data.delete_thing_shadow(thingName=name)
    with pytest.raises(iot_data.exceptions.ResourceNotFoundException):
        iot_data.get_thing_shadow(thingName=name)


def test_provision_up_and_down_idempotent(
    endpoint: str, clients: tuple[Any, Any], tmp_path: Path
) -> None:
    iot, _ = clients
    out = tmp_path / "identity"
    policy = _unique("ocpp-gateway")
    cps = [_unique("CP"), _unique("CP.dot")]
    args = [
        "--out",
        str(out),
        "--endpoint-url",
        endpoint,
        "--policy-name",
        policy,
        "--cp",
        cps[0],
        "--cp",
        cps[1],
    ]
    first = run("scripts/provision.py", "up", *args)
    assert first.returncode == 0, first.stderr
    assert f"policy {policy}: created" in first.stdout
    cert_id = (out / "certificate-id").read_text().strip()
    assert stat.S_IMODE((out / "private.key").stat().st_mode) == 0o600
    assert "BEGIN CERTIFICATE" in (out / "certificate.pem").read_text()
    env = (out / "gateway.env").read_text()
    assert (
        "GATEWAY_IOT_ENDPOINT=" in env
        and f"GATEWAY_CERT_FILE={(out / 'certificate.pem').resolve()}" in env
    )

    description = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert description["status"] == "ACTIVE"
    assert iot.list_targets_for_policy(policyName=policy)["targets"] == [
        description["certificateArn"]
    ]
    statements = json.loads(iot.get_policy(policyName=policy)["policyDocument"])["Statement"]
    publish = next(s for s in statements if s["Action"] == "iot:Publish")["Resource"]
    assert "arn:aws:iot:*:*:topic/${iot:ClientId}/in" in publish
    things = {t["thingName"] for t in iot.list_things()["things"]}
    assert {cps[0], validate_identity(cps[1]).thing_name} <= things

    again = run("scripts/provision.py", "up", *args)
    assert again.returncode == 0, again.stderr
    assert f"policy {policy}: exists" in again.stdout and "exists (ACTIVE)" in again.stdout
    assert (out / "certificate-id").read_text().strip() == cert_id  # no second certificate
    assert iot.list_targets_for_policy(policyName=policy)["targets"] == [
        description["certificateArn"]
    ]

    gone = run("scripts/provision.py", "down", *args)
    assert gone.returncode == 0, gone.stderr
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_certificate(certificateId=cert_id)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_policy(policyName=policy)
    assert not (out / "private.key").exists()
    assert not {cps[0], validate_identity(cps[1]).thing_name} & {
        t["thingName"] for t in iot.list_things()["things"]
    }
    twice = run("scripts/provision.py", "down", *args)
    assert twice.returncode == 0, twice.stderr
    assert f"policy {policy}: already gone" in twice.stdout


def test_provision_sets_cp_passwords_as_hashes(
    endpoint: str, clients: tuple[Any, Any], tmp_path: Path
) -> None:
    from gateway.credentials import verify_password

    iot, _ = clients
    cp = _unique("CPpw")
    secrets = tmp_path / "passwords.csv"
    args = [
        "--out",
        str(tmp_path / "id"),
        "--endpoint-url",
        endpoint,
        "--policy-name",
        _unique("p"),
        "--cp",
        cp,
    ]
    result = run("scripts/provision.py", "up", *args, "--passwords", str(secrets))
    assert result.returncode == 0, result.stderr
    cp_id, password = secrets.read_text().strip().split(",")
    assert cp_id == cp and stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert password not in result.stdout + result.stderr
    attributes = iot.describe_thing(thingName=cp)["attributes"]
    assert attributes["ocppSecurityProfile"] == "1" and password not in json.dumps(attributes)
    assert verify_password(password, attributes["ocppPasswordHash"])
    again = run("scripts/provision.py", "up", *args, "--passwords", str(secrets))
    assert (
        again.returncode == 0 and len(secrets.read_text().splitlines()) == 1
    )  # existing Things keep theirs
    assert run("scripts/provision.py", "down", *args).returncode == 0


def test_provision_rejects_bad_input(endpoint: str, tmp_path: Path) -> None:
    bad = run(
        "scripts/provision.py",
        "up",
        "--out",
        str(tmp_path),
        "--endpoint-url",
        endpoint,
        "--cp",
        "CP/1",
    )
    assert bad.returncode != 0 and "charge point id 'CP/1'" in bad.stderr
    no_role = run("scripts/provision.py", "up", "--endpoint-url", endpoint, "--heartbeat-rule", "t")
    assert no_role.returncode == 2 and "--rule-role-arn" in no_role.stderr


async def test_heartbeat_rule_is_accepted_by_both(clients: tuple[Any, Any]) -> None:
    """The sample's rule as written, created through the real CreateTopicRule shape."""
    iot, _ = clients
    name = _unique("hb").replace("-", "_")
    payload = {
        "sql": "SELECT topic(1) AS chargePointId, timestamp() AS lastTimestamp FROM '+/in' WHERE get(*, 2) = 'Heartbeat'",
        "actions": [
            {
                "dynamoDBv2": {
                    "roleArn": "arn:aws:iam::000000000000:role/r",
                    "putItem": {"tableName": "chargePointHeartbeat"},
                }
            }
        ],
    }
    iot.create_topic_rule(ruleName=name, topicRulePayload=payload)
    rule = iot.get_topic_rule(ruleName=name)["rule"]
    assert (
        rule["sql"] == payload["sql"]
        and rule["actions"][0]["dynamoDBv2"]["putItem"]["tableName"] == "chargePointHeartbeat"
    )
    assert name in {r["ruleName"] for r in iot.list_topic_rules()["rules"]}
    iot.delete_topic_rule(ruleName=name)
