"""fakeiot without access keys answers only a loopback Host: a rebinding web page cannot read it."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import trio

from fakeiot import FakeIot
from fakeiot.hostcheck import loopback_host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:8090", True),
        ("127.0.0.1", True),
        ("127.3.4.5:1", True),
        ("localhost:8090", True),
        ("LOCALHOST", True),
        ("[::1]:8090", True),
        ("[::1]", True),
        ("evil.example:8090", False),
        ("evil.example", False),
        ("10.0.0.1:8090", False),
        ("[2001:db8::1]:80", False),
        ("[::1", False),
        ("localhost.evil.example", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_host(host: str | None, loopback: bool) -> None:
    assert loopback_host(host) is loopback


async def raw_get(port: int, host: str) -> tuple[int, dict[str, str]]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET /things HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def test_an_unsigned_api_refuses_a_foreign_host(
    fakeiot: FakeIot, register: Callable[..., None]
) -> None:
    register("CP1")
    status, doc = await raw_get(fakeiot.api_port, "rebound.evil.example")
    assert status == 403 and "loopback Host" in doc["message"]
    assert "CP1" not in json.dumps(doc)
    status, doc = await raw_get(fakeiot.api_port, f"127.0.0.1:{fakeiot.api_port}")
    assert status == 200 and [t["thingName"] for t in doc["things"]] == ["CP1"]
