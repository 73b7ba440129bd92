"""Hostile input against fakeiot: the promises of docs/security.md, checked over real sockets.

MQTT: a client id belongs to an authenticated principal (the gateway's
credential, a client certificate or the backend role), and nobody else can
take it, kick its holder or resume its session.  HTTP API: request framing,
size and time are bounded, and with access keys every request must carry a
valid AWS SigV4 signature.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import stat
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from fakeiot import FakeIot, FakeIotConfig, FakeIotError, running_fakeiot
from fakeiot.policy import BACKEND_USERNAME, GATEWAY_USERNAME
from gateway.aws import AwsSettings, make_clients
from gateway.chargepoint import connect, heartbeat
from gateway.config import GatewayConfig
from gateway.devstack import run_dev_stack
from gateway.errors import MqttConnectError
from gateway.mqtt_link import MqttDriver, MqttSettings, open_mqtt_driver

from .conftest import Spy, backend_settings, device_settings
from .processes import run

ACCESS_KEY, SECRET_KEY = "AKIDFAKEIOTTEST", "fakeiot-test-secret-access-key"

# -- MQTT, as a hostile client speaks it ---------------------------------------------------------


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _packet(first_byte: int, body: bytes) -> bytes:
    out, length = bytearray([first_byte]), len(body)
    while True:
        digit, length = length % 128, length // 128
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out) + body


def _connect_packet(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    will_topic: str | None = None,
    clean: bool = True,
) -> bytes:
    flags, payload = 0x02 if clean else 0, _utf8(client_id)
    if will_topic is not None:
        flags |= 0x04
        payload += _utf8(will_topic) + _utf8("forged")
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
    if password is not None:
        flags |= 0x40
        payload += _utf8(password)
    return _packet(0x10, _utf8("MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big") + payload)


async def _connack(port: int, client_id: str, **options: Any) -> int:
    """CONNECT with a raw socket; the CONNACK return code (0: accepted)."""
    return (await _connack_flags(port, client_id, **options))[1]


async def _connack_flags(port: int, client_id: str, **options: Any) -> tuple[bool, int]:
    """CONNECT with a raw socket; (session present, return code) of the CONNACK."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(_connect_packet(client_id, **options))
        data = b""
        with trio.fail_after(5):
            while len(data) < 4:
                chunk = await stream.receive_some(4 - len(data))
                assert chunk, f"connection closed without CONNACK after {data!r}"
                data += chunk
        assert data[:2] == b"\x20\x02", data
        return bool(data[2] & 1), data[3]


def _anonymous(iot: FakeIot) -> MqttSettings:
    return MqttSettings(port=iot.mqtt_port, connect_timeout=5)


async def _refused(settings: MqttSettings, client_id: str, *, clean_session: bool = True) -> None:
    async with open_mqtt_driver(settings) as driver:
        with pytest.raises(MqttConnectError, match="refused client"):
            async with driver.link(client_id, clean_session=clean_session):
                pass


async def _seed_retained(iot: FakeIot, topic: str, payload: bytes) -> None:
    """A retained message, stored by the broker itself (deterministic: stored when this returns)."""
    loop, broker = iot._loop, iot.broker
    assert loop is not None and broker is not None
    await trio.to_thread.run_sync(
        lambda: asyncio.run_coroutine_threadsafe(
            broker.retain_message(None, topic, payload, 1), loop
        ).result(5)
    )


# -- finding 7: a client id belongs to an authenticated principal ---------------------------------


async def test_an_anonymous_or_wrong_credential_connect_cannot_take_a_charge_points_client_id(
    fakeiot: FakeIot, device_driver: MqttDriver, mqtt_driver: MqttDriver
) -> None:
    async with device_driver.link("CP1") as cp1, mqtt_driver.link("test:backend") as backend:
        await cp1.subscribe("CP1/out")
        await _refused(_anonymous(fakeiot), "CP1")
        await _refused(
            MqttSettings(
                port=fakeiot.mqtt_port,
                username=GATEWAY_USERNAME,
                password="wrong",
                connect_timeout=5,
            ),
            "CP1",
        )
        await _refused(
            MqttSettings(
                port=fakeiot.mqtt_port, username="someone", password="x", connect_timeout=5
            ),
            "CP1",
        )
        # The gateway's connection of CP1 was never disturbed: it still gets CP1's messages.
        await backend.publish("CP1/out", b"still yours")
        with trio.fail_after(5):
            assert await cp1.receive() == ("CP1/out", b"still yours")
        assert cp1.connected
    assert fakeiot.broker is not None and fakeiot.broker.takeovers == 0


async def test_a_wrong_backend_password_or_a_device_cannot_kick_the_processor(
    fakeiot: FakeIot, mqtt_driver: MqttDriver, device_driver: MqttDriver
) -> None:
    async with mqtt_driver.link("cpo:processor", clean_session=False) as processor:
        await processor.subscribe("+/in")
        wrong = MqttSettings(
            port=fakeiot.mqtt_port,
            username=BACKEND_USERNAME,
            password="not-the-password",
            connect_timeout=5,
        )
        await _refused(wrong, "cpo:processor")
        await _refused(wrong, "cpo:processor", clean_session=False)
        await _refused(device_settings(fakeiot), "cpo:processor")  # reserved for the backend role
        await _refused(_anonymous(fakeiot), "cpo:processor")
        async with device_driver.link("CP1") as cp1:
            await cp1.publish("CP1/in", b'[2,"1","Heartbeat",{}]')
        with trio.fail_after(5):
            assert await processor.receive() == ("CP1/in", b'[2,"1","Heartbeat",{}]')
        assert processor.connected
    assert fakeiot.broker is not None and fakeiot.broker.takeovers == 0


async def test_the_processors_persistent_session_resumes_only_for_the_backend(
    fakeiot: FakeIot, mqtt_driver: MqttDriver, device_driver: MqttDriver
) -> None:
    async with mqtt_driver.link("cpo:processor", clean_session=False) as processor:
        await processor.subscribe("+/in")
    async with device_driver.link("CP1") as cp1:
        await cp1.publish("CP1/in", b"queued CALL")  # queued for the offline processor
    await _refused(_anonymous(fakeiot), "cpo:processor", clean_session=False)
    await _refused(device_settings(fakeiot), "cpo:processor", clean_session=False)
    async with mqtt_driver.link("cpo:processor", clean_session=False) as processor:
        with trio.fail_after(5):
            assert await processor.receive() == ("CP1/in", b"queued CALL")


async def test_a_persistent_session_is_not_resumed_by_another_principal(tmp_path: Path) -> None:
    config = FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path, allow_anonymous_devices=True)
    async with (
        running_fakeiot(config) as iot,
        open_mqtt_driver(backend_settings(iot)) as backend_driver,
        open_mqtt_driver(device_settings(iot)) as gateway,
        open_mqtt_driver(_anonymous(iot)) as anonymous,
    ):
        async with gateway.link("CP1", clean_session=False) as cp1:
            await cp1.subscribe("CP1/out")
        async with backend_driver.link("test:backend") as backend:
            await backend.subscribe("CP1/out")
            await backend.publish("CP1/out", b"queued for the gateway's CP1")
            with trio.fail_after(5):  # broadcast done: queued for the gateway's offline session too
                assert await backend.receive() == ("CP1/out", b"queued for the gateway's CP1")
            # Another principal (anonymous, allowed here) may use CP1, but gets a session of its own.
            assert await _connack_flags(iot.mqtt_port, "CP1", clean=False) == (
                False,
                0,
            )  # no session present
            async with anonymous.link("CP1", clean_session=False) as intruder:
                await intruder.subscribe("CP1/out")
                await backend.publish("CP1/out", b"marker")
                with trio.fail_after(5):
                    assert await intruder.receive() == ("CP1/out", b"marker")
        # The gateway's principal gets a session of its own again (a new one), then resumes it (session present).
        async with gateway.link("CP1", clean_session=False) as cp1:
            await cp1.subscribe("CP1/out")
        assert await _connack_flags(
            iot.mqtt_port,
            "CP1",
            clean=False,
            username=GATEWAY_USERNAME,
            password=iot.gateway_password,
        ) == (True, 0)


async def test_retained_messages_obey_the_receive_check(
    fakeiot: FakeIot, spy: Spy, device_driver: MqttDriver, mqtt_driver: MqttDriver
) -> None:
    # The spy's '+/out' subscription makes amqtt offer every retained '<x>/out' message at CONNECT.
    await _seed_retained(fakeiot, "CP2/out", b"for CP2 only")
    async with device_driver.link("CP1") as cp1, mqtt_driver.link("test:backend") as backend:
        await cp1.subscribe("CP1/out")
        await cp1.subscribe("$aws/things/CP1/shadow/#")
        await backend.publish("CP1/out", b"marker")
        with trio.fail_after(5):
            assert await cp1.receive() == ("CP1/out", b"marker")
    # The backend role may read it.
    async with mqtt_driver.link("test:reader") as reader:
        await reader.subscribe("CP2/out")
        with trio.fail_after(5):
            assert await reader.receive() == ("CP2/out", b"for CP2 only")


@pytest.mark.parametrize(
    "client_id",
    [
        "CP:2E1",
        "cpo:processor",
        "test:spy",
        "CP/1",
        "CP#",
        pytest.param("", id="empty"),
        pytest.param("x" * 49, id="49-chars"),
    ],
)
async def test_device_client_ids_must_be_charge_point_identities(
    fakeiot: FakeIot, client_id: str
) -> None:
    """``CP:2E1`` is the Thing name of CP ``CP.1``, not a CP id: as a client id it would reach that
    Thing's shadow.  Ids with ':' (``cpo:processor``, ``test:...``) belong to the backend role."""
    code = await _connack(
        fakeiot.mqtt_port, client_id, username=GATEWAY_USERNAME, password=fakeiot.gateway_password
    )
    assert code == 2  # identifier rejected


async def test_the_thing_of_a_cp_id_is_reached_only_through_that_id(
    fakeiot: FakeIot, device_driver: MqttDriver
) -> None:
    async with device_driver.link("CP.1") as cp:
        await cp.subscribe("$aws/things/CP:2E1/shadow/update/accepted")
        await cp.publish("$aws/things/CP:2E1/shadow/update", b'{"state": {"reported": {"x": 1}}}')
        with trio.fail_after(5):
            assert (await cp.receive())[0] == "$aws/things/CP:2E1/shadow/update/accepted"
    async with device_driver.link("CP1") as other:
        await other.publish(
            "$aws/things/CP:2E1/shadow/update", b'{"state": {"reported": {"x": 2}}}'
        )
        with trio.fail_after(5):
            await other.wait_closed()  # refused publish: closed, as on AWS IoT


async def test_a_will_message_must_be_one_the_client_may_publish(fakeiot: FakeIot) -> None:
    gateway = {"username": GATEWAY_USERNAME, "password": fakeiot.gateway_password}
    assert (
        await _connack(fakeiot.mqtt_port, "CP1", will_topic="CP2/in", **gateway) == 5
    )  # not authorised
    assert await _connack(fakeiot.mqtt_port, "CP1", will_topic="cpo:processor/x", **gateway) == 5
    assert await _connack(fakeiot.mqtt_port, "CP1", will_topic="CP1/in", **gateway) == 0


async def test_anonymous_devices_are_a_loopback_only_development_switch(tmp_path: Path) -> None:
    config = FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path, allow_anonymous_devices=True)
    async with running_fakeiot(config) as iot, open_mqtt_driver(_anonymous(iot)) as anonymous:
        async with anonymous.link("CP1") as cp1:
            await cp1.publish("CP1/in", b"x")
        await _refused(_anonymous(iot), "cpo:processor")  # still the backend's
        assert await _connack(iot.mqtt_port, "CP:2E1") == 2
    exposed = FakeIotConfig(
        host="0.0.0.0",
        mqtt_port=0,
        api_port=0,
        data_dir=tmp_path,
        allow_anonymous_devices=True,
        api_access_key_id=ACCESS_KEY,
        api_secret_access_key=SECRET_KEY,
    )
    with pytest.raises(FakeIotError, match="--allow-anonymous-devices .*loopback"):
        async with running_fakeiot(exposed):
            pass
    cli = await trio.to_thread.run_sync(
        lambda: run(
            "-m",
            "fakeiot",
            "--host",
            "0.0.0.0",
            "--mqtt-port",
            "0",
            "--api-port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--allow-anonymous-devices",
            timeout=30,
        )
    )
    assert cli.returncode == 2 and "loopback" in cli.stderr


async def test_the_embedded_gateway_connects_its_charge_points_with_the_gateway_credential(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    config = GatewayConfig(
        port=0, mqtt_port=0, fakeiot_api_port=0, data_dir=tmp_path, registry_negative_ttl=0.0
    )
    gateway = await nursery.start(run_dev_stack, config)
    password_file = tmp_path / "gateway-password"
    assert password_file.read_text().strip() == gateway.fakeiot.gateway_password
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    iot, iot_data = make_clients(AwsSettings(iot_endpoint_url=gateway.fakeiot.api_url))
    try:
        iot.create_thing(thingName="CP1")
    finally:
        iot.close()
        iot_data.close()
    with trio.fail_after(20):
        async with connect(gateway.url, "CP1") as cp:
            assert "currentTime" in await cp.call(*heartbeat())
    nursery.cancel_scope.cancel()


# -- finding 8: the HTTP API ---------------------------------------------------------------------


async def _http(port: int, request: bytes, *, timeout: float = 5) -> tuple[int, bytes]:
    """Send raw bytes (without closing our side); the response's status and body."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(timeout):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some()
                assert chunk, f"connection closed without a response: {data!r}"
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            while len(body) < length:
                chunk = await stream.receive_some()
                assert chunk
                body += chunk
    return int(lines[0].split()[1]), body


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    headers = {"Host": "127.0.0.1"} | headers
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


@pytest.mark.parametrize(
    "headers, status, message",
    [
        ({"Content-Length": "-1"}, 400, "Content-Length"),
        ({"Content-Length": "abc"}, 400, "Content-Length"),
        ({"Content-Length": "+5"}, 400, "Content-Length"),
        ({"Content-Length": "1" * 40}, 413, "1 MiB"),
        ({"Content-Length": str(2 << 20)}, 413, "1 MiB"),
        ({"Content-Length": "2", "content-length": "3"}, 400, "Content-Length"),
        ({"Transfer-Encoding": "chunked"}, 400, "Transfer-Encoding"),
    ],
    ids=["negative", "non-numeric", "signed", "huge", "over-1-MiB", "conflicting", "chunked"],
)
async def test_api_refuses_bad_request_framing(
    fakeiot: FakeIot, headers: dict[str, str], status: int, message: str
) -> None:
    got, body = await _http(fakeiot.api_port, _request("POST", "/things/CP9", headers, b"{}"))
    assert (got, message in json.loads(body)["message"]) == (status, True), body
    describe = await _http(fakeiot.api_port, _request("GET", "/things/CP9", {}))
    assert describe[0] == 404  # nothing was created


async def test_api_reads_bodies_up_to_one_mib(fakeiot: FakeIot) -> None:
    doc = json.dumps({"blob": "x" * (600 * 1024)}).encode()
    got, body = await _http(
        fakeiot.api_port,
        _request("POST", "/no/such/operation", {"Content-Length": str(len(doc))}, doc),
    )
    assert got == 404 and b"No such operation" in body  # read whole, then routed


async def test_api_bounds_the_time_a_request_may_take(tmp_path: Path) -> None:
    config = FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path, api_read_timeout=1.0)
    async with running_fakeiot(config) as iot:
        slow_body = _request("POST", "/things/CP9", {"Content-Length": "100"}, b'{"attr')
        status, body = await _http(iot.api_port, slow_body, timeout=5)
        assert status == 408 and b"100 bytes" in body
        async with await trio.open_tcp_stream("127.0.0.1", iot.api_port) as stream:
            await stream.send_all(b"GET /things HTTP/1.1\r\nHost: x\r\n")  # headers never end
            with trio.fail_after(5):
                while await stream.receive_some():
                    pass  # the server closes the connection


async def test_api_bounds_the_connections_it_serves_at_once(tmp_path: Path) -> None:
    """Slowloris: connections that never finish a request hold a thread each, so only
    api_max_connections of them are served; one more is answered 503 at once and closed."""
    config = FakeIotConfig(
        mqtt_port=0, api_port=0, data_dir=tmp_path, api_read_timeout=30.0, api_max_connections=2
    )
    async with running_fakeiot(config) as iot:
        held = [await trio.open_tcp_stream("127.0.0.1", iot.api_port) for _ in range(2)]
        try:
            for stream in held:
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end
            async with await trio.open_tcp_stream("127.0.0.1", iot.api_port) as extra:
                answer = b""
                with trio.fail_after(5):  # answered without a request: no thread waits on it
                    while chunk := await extra.receive_some():
                        answer += chunk
            assert answer.startswith(b"HTTP/1.1 503 ") and b"retry later" in answer
        finally:
            for stream in held:
                await stream.aclose()
        with trio.fail_after(10):  # the held connections' threads end: served again
            while True:
                status, _ = await _http(iot.api_port, _request("GET", "/health", {}))
                if status == 200:
                    break
                await trio.sleep(0.1)


async def test_a_refused_request_cannot_put_control_characters_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A request line may carry ESC and other control bytes (not whitespace): a refusal's log
    line shows them escaped, so nobody can recolour or retitle the terminal tailing it."""
    config = FakeIotConfig(
        mqtt_port=0,
        api_port=0,
        data_dir=tmp_path,
        api_access_key_id=ACCESS_KEY,
        api_secret_access_key=SECRET_KEY,
    )
    caplog.set_level(logging.DEBUG, logger="fakeiot")
    hostile = "/\x1b]0;pwned\x07\x1b[31mred\x9b2J"
    async with running_fakeiot(config) as iot:
        for path, headers in (
            ("/things" + hostile, {"Authorization": "AWS4-HMAC-SHA256 nonsense"}),
            ("/console" + hostile, {"Authorization": "Basic bm86bm8="}),
        ):
            request = _request("GET", path, headers).decode().encode("latin-1")
            status, _ = await _http(iot.api_port, request)
            assert status in (401, 403)
    refusals = [m for r in caplog.records if " refused: " in (m := r.getMessage())]
    assert len(refusals) >= 2 and all("pwned" in m for m in refusals[:2])
    for record in caplog.records:
        message = record.getMessage()
        assert not any(ch in message for ch in "\x1b\x07\x9b"), message


def _sigv4_headers(
    method: str, url: str, body: bytes, key: str = ACCESS_KEY, secret: str = SECRET_KEY
) -> dict[str, str]:
    request = AWSRequest(
        method=method, url=url, data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(key, secret), "iot", "us-east-1").add_auth(request)
    host = url.split("/")[2]  # signed as host:port, as boto3 sends it
    return {"Host": host} | dict(request.headers.items()) | {"Content-Length": str(len(body))}


def _iot_client(api_url: str, secret: str = SECRET_KEY) -> Any:
    return boto3.client(
        "iot",
        endpoint_url=api_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


async def test_with_access_keys_every_api_call_must_be_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = FakeIotConfig(
        mqtt_port=0,
        api_port=0,
        data_dir=tmp_path,
        api_access_key_id=ACCESS_KEY,
        api_secret_access_key=SECRET_KEY,
    )
    async with running_fakeiot(config) as iot:
        port, url = iot.api_port, f"http://127.0.0.1:{iot.api_port}"
        good = _iot_client(iot.api_url)
        good.create_thing(
            thingName="CP1",
            attributePayload={"attributes": {"ocppPasswordHash": "pbkdf2-sha256:1:aa:bb"}},
        )
        strip = json.dumps(
            {"attributePayload": {"attributes": {"ocppPasswordHash": ""}, "merge": True}}
        ).encode()
        # Unsigned: refused (reads too: the attributes hold password hashes).
        for method, path, body in (
            ("PATCH", "/things/CP1", strip),
            ("GET", "/things/CP1", b""),
            ("GET", "/things", b""),
        ):
            status, reply = await _http(
                port, _request(method, path, {"Content-Length": str(len(body))}, body)
            )
            assert status == 403 and b"Missing Authentication Token" in reply, reply
        # Wrong secret, unknown key: refused.
        with pytest.raises(ClientError) as wrong:
            _iot_client(iot.api_url, secret="guessed").update_thing(
                thingName="CP1", attributePayload=json.loads(strip)["attributePayload"]
            )
        assert wrong.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        unknown = _sigv4_headers("PATCH", f"{url}/things/CP1", strip, key="AKIDSOMEONEELSE")
        assert (await _http(port, _request("PATCH", "/things/CP1", unknown, strip)))[0] == 403
        # A signature over one body does not cover another.
        signed = _sigv4_headers("PATCH", f"{url}/things/CP1", b'{"attributePayload": {}}')
        assert (
            await _http(
                port,
                _request(
                    "PATCH", "/things/CP1", signed | {"Content-Length": str(len(strip))}, strip
                ),
            )
        )[0] == 403
        # An old signature is not replayed.
        monkeypatch.setattr(
            botocore.auth, "get_current_datetime", lambda: datetime.datetime(2020, 1, 1)
        )
        stale = _sigv4_headers("PATCH", f"{url}/things/CP1", strip)
        monkeypatch.undo()
        status, reply = await _http(port, _request("PATCH", "/things/CP1", stale, strip))
        assert status == 403 and b"expired" in reply.lower()
        # The hash is still there; signed calls and the health check work.
        assert (
            good.describe_thing(thingName="CP1")["attributes"]["ocppPasswordHash"]
            == "pbkdf2-sha256:1:aa:bb"
        )
        fresh = _sigv4_headers("GET", f"{url}/things/CP1", b"")
        assert (await _http(port, _request("GET", "/things/CP1", fresh)))[0] == 200
        assert (await _http(port, _request("GET", "/health", {})))[0] == 200
        good.close()


async def test_a_non_loopback_api_needs_access_keys(tmp_path: Path) -> None:
    with pytest.raises(FakeIotError, match="--api-access-key-id and --api-secret-access-key"):
        async with running_fakeiot(
            FakeIotConfig(host="0.0.0.0", mqtt_port=0, api_port=0, data_dir=tmp_path)
        ):
            pass
    only_id = FakeIotConfig(
        host="0.0.0.0", mqtt_port=0, api_port=0, data_dir=tmp_path, api_access_key_id=ACCESS_KEY
    )
    with pytest.raises(FakeIotError, match="(?i)secret"):
        async with running_fakeiot(only_id):
            pass


@pytest.mark.parametrize("name", ["CP1\n", "CP1\r\n", "\nCP1", "CP 1", "CP/1"])
async def test_thing_names_are_matched_whole(aws: tuple[Any, Any], name: str) -> None:
    # "^...$" accepted "CP1\n" ($ matches before a trailing newline); names are now matched whole.
    with pytest.raises(ClientError) as info:
        await trio.to_thread.run_sync(lambda: aws[0].create_thing(thingName=name))
    assert info.value.response["Error"]["Code"] in (
        "InvalidRequestException",
        "ResourceNotFoundException",
    )
