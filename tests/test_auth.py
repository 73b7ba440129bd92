"""OCPP security profile 1: HTTP Basic auth on the upgrade, checked against a salted hash in the registry."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from trio_websocket import ConnectionRejected

from fakeiot import FakeIot
from gateway.app import RunningGateway
from gateway.chargepoint import connect, heartbeat, open_client_websocket
from gateway.credentials import (
    PasswordRejected,
    basic_auth_header,
    check_password_rules,
    hash_password,
    parse_basic_auth,
    verify_password,
)

from .processes import embedded_fakeiot_api_url, gateway_url, program, run

PASSWORD = "correct-horse-battery-9"


def test_hash_and_verify() -> None:
    encoded = hash_password(PASSWORD, iterations=1000)
    assert re.fullmatch(r"pbkdf2-sha256:1000:[0-9a-f]{32}:[0-9a-f]{64}", encoded)
    assert PASSWORD not in encoded
    assert verify_password(PASSWORD, encoded)
    assert not verify_password(PASSWORD + "x", encoded)
    assert hash_password(PASSWORD, iterations=1000) != encoded  # salted
    for broken in (
        "",
        "md5:1:00:00",
        "pbkdf2-sha256:x:00:00",
        "pbkdf2-sha256:0:00:00",
        "pbkdf2-sha256:1000:zz:00",
    ):
        assert not verify_password(PASSWORD, broken)


@pytest.mark.parametrize("password", ["short", "x" * 41, "sixteen-chars-é!"])
def test_password_rules_follow_ocpp(password: str) -> None:
    with pytest.raises(PasswordRejected):
        check_password_rules(password)
    check_password_rules("a" * 16)
    check_password_rules("0123456789abcdef0123456789abcdef01234567")  # 1.6: 40 hex digits


def test_parse_basic_auth() -> None:
    assert parse_basic_auth([basic_auth_header("CP1", "p:w")]) == ("CP1", "p:w")
    assert parse_basic_auth([(b"authorization", b"Bearer abc")]) is None
    assert parse_basic_auth([(b"Authorization", b"Basic !!!")]) is None
    assert parse_basic_auth([(b"Authorization", b"Basic " + base64.b64encode(b"nocolon"))]) is None
    assert parse_basic_auth([]) is None


@pytest.fixture
def register_with_password(aws: Any) -> None:
    aws[0].create_thing(
        thingName="CP1",
        attributePayload={
            "attributes": {"ocppPasswordHash": hash_password(PASSWORD), "ocppSecurityProfile": "1"}
        },
    )


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), ("CP1", "wrong-password-123"), ("CP9", PASSWORD)],
    ids=["none", "wrong", "other-user"],
)
async def test_bad_credentials_get_401_and_no_mqtt_connection(
    gateway: RunningGateway,
    fakeiot: FakeIot,
    register_with_password: None,
    user: str | None,
    password: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = [basic_auth_header(user, password)] if user and password else None
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_client_websocket(
            f"{gateway.url}/CP1", subprotocols=["ocpp2.0.1"], extra_headers=headers
        ):
            pass
    assert rejected.value.status_code == 401
    assert any(name.lower() == b"www-authenticate" for name, _ in rejected.value.headers or [])
    assert fakeiot.broker is not None and "CP1" not in fakeiot.broker.connected_client_ids()
    assert gateway.bridge.auth_failures == 1
    assert PASSWORD not in caplog.text and "wrong-password-123" not in caplog.text


async def test_right_password_connects_and_reconnects_cheaply(
    gateway: RunningGateway, register_with_password: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(2):
        async with connect(gateway.url, "CP1", password=PASSWORD) as cp:
            assert "currentTime" in await cp.call(*heartbeat())
    assert gateway.bridge.auth_failures == 0
    assert PASSWORD not in caplog.text


async def test_cp_without_password_attribute_needs_no_auth(
    gateway: RunningGateway, register: Any
) -> None:
    register("CP2")
    async with connect(gateway.url, "CP2") as cp:
        assert "currentTime" in await cp.call(*heartbeat())


def test_cli_generated_password_works_with_the_simulator(tmp_path: Path) -> None:
    with program(
        "-m",
        "gateway",
        "--port",
        "0",
        "--mqtt-port",
        "0",
        "--fakeiot-api-port",
        "0",
        "--data-dir",
        str(tmp_path),
        "--heartbeat-interval",
        "1",
    ) as gw:
        url = gateway_url(gw)
        api_url = embedded_fakeiot_api_url(gw)
        created = run(
            "-m", "fakeiot", "thing", "create", "CP1", "--generate-password", "--api-url", api_url
        )
        password = re.search(r"^password: (\S+)$", created.stdout, re.M).group(1)  # type: ignore[union-attr]
        described = run("-m", "fakeiot", "thing", "describe", "CP1", "--api-url", api_url).stdout
        assert "ocppPasswordHash" in described and password not in described
        ok = run(
            "scripts/simulate.py",
            "--url",
            url,
            "--cp-id",
            "CP1",
            "--password",
            password,
            "--heartbeats",
            "1",
        )
        assert ok.returncode == 0, ok.stderr
        denied = run("scripts/simulate.py", "--url", url, "--cp-id", "CP1", "--heartbeats", "1")
        assert denied.returncode == 1 and "rejected by central system: HTTP 401" in denied.stderr
        short = run(
            "-m", "fakeiot", "thing", "create", "CP2", "--password", "short", "--api-url", api_url
        )
        assert short.returncode == 2 and "16-40 characters" in short.stderr
    assert password not in "".join(gw.lines)
