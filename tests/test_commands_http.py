"""The command HTTP API against hostile clients, over raw sockets (review rev-proc).

No charge point is needed: every request here is refused before anything is sent to one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import trio

from gateway.mqtt_link import MqttDriver
from gateway.processor.command_http import MAX_BODY, serve_command_api
from gateway.processor.command_service import CommandService, CommandSettings

MAX_CONNECTIONS = 4
REQUEST_TIMEOUT = 0.5


@pytest.fixture
async def api_port(mqtt_driver: MqttDriver, aws: Any, nursery: trio.Nursery) -> int:
    service = CommandService(
        mqtt_driver, aws[0], aws[1], CommandSettings(client_id="test:cmd", timeout=1.0)
    )
    await nursery.start(service.run)
    port: int = await nursery.start(
        lambda task_status: serve_command_api(
            service,
            host="127.0.0.1",
            port=0,
            request_timeout=REQUEST_TIMEOUT,
            max_connections=MAX_CONNECTIONS,
            task_status=task_status,
        )
    )
    return port


async def read_response(stream: trio.SocketStream, *, timeout: float = 5) -> tuple[int, Any]:
    data = b""
    with trio.fail_after(timeout):
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split(b" ")[1]), json.loads(body)


async def exchange(port: int, data: bytes, *, timeout: float = 5) -> tuple[int, Any]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        return await read_response(stream, timeout=timeout)


def post(path: str, body: bytes, *, version: bytes = b"1.1", extra: bytes = b"") -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/" + version + b"\r\nHost: x\r\n" + extra
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


PROFILE = {
    "chargingProfileId": 1,
    "stackLevel": 0,
    "chargingProfilePurpose": "TxProfile",
    "chargingProfileKind": "Absolute",
    "chargingSchedule": {
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1e308}],
    },
}


async def test_a_number_the_schema_cannot_check_is_refused_and_the_api_keeps_serving(
    api_port: int, aws: Any, register: Callable[..., None]
) -> None:
    """1e308 against a ``multipleOf: 0.1`` of OCPP 1.6 raised decimal.InvalidOperation out of the
    handler: it ended the API's server (and, under ``python -m gateway.processor``, the processor)."""
    register("CP16")
    aws[1].update_thing_shadow(
        thingName="CP16", payload=b'{"state":{"reported":{"ocppProtocol":"ocpp1.6"}}}'
    )
    body = json.dumps({"idTag": "T", "chargingProfile": PROFILE}).encode()
    status, answer = await exchange(
        api_port, post("/charge-points/CP16/calls/RemoteStartTransaction", body)
    )
    assert status == 400 and answer["error"] == "InvalidRequest"
    assert answer["field"] == "chargingProfile.chargingSchedule.chargingSchedulePeriod[0].limit"
    status, answer = await exchange(api_port, post("/charge-points/NOPE/calls/Reset", b"{}"))
    assert status == 404


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"GARBAGE\r\n\r\n", 400, "BadRequest"),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40_000 + b"\r\n\r\n", 431, "BadRequest"),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "BadRequest"),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "BadRequest"),
    ],
)
async def test_a_malformed_request_gets_a_json_answer(
    api_port: int, request_bytes: bytes, status: int, error: str
) -> None:
    """h11's RemoteProtocolError closed the connection without a word."""
    got_status, body = await exchange(api_port, request_bytes)
    assert (got_status, body["error"]) == (status, error) and body["message"]


async def test_a_request_that_never_completes_gets_408(api_port: int) -> None:
    for partial in (b"", b"POST /charge-points/CP1/calls/Reset HTT", post("/a", b"{}")[:-1]):
        stream = await trio.open_tcp_stream("127.0.0.1", api_port)
        async with stream:
            await stream.send_all(partial) if partial else None
            status, body = await read_response(stream, timeout=REQUEST_TIMEOUT + 5)
        assert (status, body["error"]) == (408, "RequestTimeout")


async def test_connections_beyond_the_limit_get_503_at_once_and_the_limit_frees_up(
    api_port: int,
) -> None:
    """Every connection held a task, a socket and up to 80 KB for as long as it lasted: unbounded."""
    held = [await trio.open_tcp_stream("127.0.0.1", api_port) for _ in range(MAX_CONNECTIONS)]
    try:
        await trio.sleep(0.1)  # let the server take them all
        extra = await trio.open_tcp_stream("127.0.0.1", api_port)
        async with extra:
            status, body = await read_response(extra, timeout=REQUEST_TIMEOUT / 2)
        assert (status, body["error"]) == (503, "TooManyConnections")
    finally:
        for stream in held:
            await stream.aclose()
    with trio.fail_after(5):
        while (await exchange(api_port, post("/charge-points/NOPE/calls/Reset", b"{}")))[0] != 404:
            await trio.sleep(0.05)


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/charge-points/..%2F..%2Fetc/calls/Reset", b'{"type":"Immediate"}', 400, "cp_id"),
        ("/charge-points/a%2Fb/calls/Reset", b'{"type":"Immediate"}', 400, "cp_id"),
        ("/charge-points/%FF%FE/calls/Reset", b'{"type":"Immediate"}', 400, "cp_id"),
        ("/charge-points/a%0Ab/calls/Reset", b'{"type":"Immediate"}', 400, "cp_id"),
        ("/charge-points/" + "A" * 3000 + "/calls/Reset", b"{}", 400, "cp_id"),
        ("/charge-points/CP1/calls/..%2F..%2Fv16%2Fschemas%2FReset", b"{}", 400, "action"),
        ("/charge-points/CP1/calls/Reset%00", b"{}", 400, "action"),
        ("/charge-points/CP1/calls/Reset", b"\xff\xfe{}", 400, "payload"),
        ("/charge-points/CP1/calls/Reset", b"[" * 5000 + b"]" * 5000, 400, "payload"),
        ("/charge-points/CP1/calls/Reset", b'{"type":1e999}', 400, "payload"),
        ("/charge-points/CP1/calls/Reset", b'{"type":' + b"9" * 5000 + b"}", 400, "payload"),
        ("/charge-points/CP1/calls/Reset", b'{"type":NaN}', 400, "payload"),
        ("/charge-points/CP1/calls/Reset", b'"a string"', 400, "payload"),
    ],
)
async def test_hostile_targets_and_bodies_are_refused_naming_the_field(
    api_port: int, path: str, body: bytes, status: int, field: str
) -> None:
    got_status, answer = await exchange(api_port, post(path, body))
    assert (got_status, answer.get("field")) == (status, field), answer


async def test_http_1_0_chunked_and_pipelined_requests(api_port: int) -> None:
    target = "/charge-points/NOPE/calls/Reset"
    assert (await exchange(api_port, post(target, b"{}", version=b"1.0")))[0] == 404
    chunked = (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"2\r\n{}\r\n0\r\n\r\n"
    )
    assert (await exchange(api_port, chunked))[0] == 404
    too_big = (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + (b"%x\r\n" % 4096 + b" " * 4096 + b"\r\n") * (MAX_BODY // 4096 + 1)
    )
    assert (await exchange(api_port, too_big))[0] == 413
    # Pipelined: one request per connection, the second is not answered.
    stream = await trio.open_tcp_stream("127.0.0.1", api_port)
    async with stream:
        await stream.send_all(post(target, b"{}") + post(target, b"{}"))
        status, _ = await read_response(stream)
    assert status == 404
