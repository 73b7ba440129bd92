"""Probing and flooding the admission: password guessing, ids that do not exist, registry floods.

Clients come from different loopback addresses (127.0.0.1, 127.0.0.2) to show that limits per
source address hit the prober and not the others."""

from __future__ import annotations

import base64
import time
from typing import Any

import trio

from fakeiot import FakeIot
from gateway.app import RunningGateway, run_gateway
from gateway.credentials import hash_password
from gateway.identity import thing_name_for
from gateway.ratelimit import FailureBackoff

from .conftest import gateway_config

PASSWORD = "correct-horse-battery-9"


async def upgrade(
    port: int,
    path: str,
    *,
    password: str | None = None,
    user: str | None = None,
    source: str = "127.0.0.1",
) -> tuple[int, float]:
    """(HTTP status of the upgrade, seconds it took), from ``source``."""
    headers = ""
    if password is not None:
        token = base64.b64encode(f"{user or path.strip('/')}:{password}".encode()).decode()
        headers = f"Authorization: Basic {token}\r\n"
    started = time.perf_counter()
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    try:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: ocpp2.0.1\r\n{headers}\r\n".encode()
        )
        data = b""
        with trio.fail_after(10):
            while b"\r\n" not in data:
                chunk = await stream.receive_some()
                assert chunk, "closed without an answer"
                data += chunk
        return int(data.split(b" ", 2)[1]), time.perf_counter() - started
    finally:
        await trio.aclose_forcefully(stream)


def register_with_password(aws: Any, cp_id: str) -> None:
    aws[0].create_thing(
        thingName=thing_name_for(cp_id),
        attributePayload={
            "attributes": {"ocppPasswordHash": hash_password(PASSWORD), "ocppSecurityProfile": "1"}
        },
    )


def test_failure_backoff_doubles_and_forgets() -> None:
    backoff = FailureBackoff(free=2, base=1.0, cap=8.0)
    for now in (0.0, 0.1):
        assert backoff.blocked_for("k", now) == 0
        backoff.failed("k", now)
    assert backoff.blocked_for("k", 0.1) == 1.0  # third failure onwards: 1, 2, 4, 8, 8 ... seconds
    backoff.failed("k", 1.1)
    assert backoff.blocked_for("k", 1.1) == 2.0
    for _ in range(10):
        backoff.failed("k", 2.0)
    assert backoff.blocked_for("k", 2.0) == 8.0  # capped
    assert backoff.blocked_for("other", 2.0) == 0
    backoff.succeeded("k")
    assert backoff.blocked_for("k", 2.0) == 0
    backoff.failed("old", 0.0)
    backoff.failed("new", 100.0)  # prunes keys quiet for 2 * cap
    assert len(backoff) == 1


async def test_password_guessing_backs_off_per_source_and_id(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any
) -> None:
    register_with_password(aws, "CP1")
    register_with_password(aws, "CP2")
    gateway: RunningGateway = await nursery.start(run_gateway, gateway_config(fakeiot))
    statuses = [(await upgrade(gateway.port, "/CP1", password=f"guess-{n}"))[0] for n in range(12)]
    assert statuses == [401] * 12
    assert (
        gateway.bridge.password_hashes == 5
    )  # after 5 failures, guesses are refused without hashing
    # Blocked: even the right password from the guessing source gets the same 401 (it learns nothing) ...
    assert (await upgrade(gateway.port, "/CP1", password=PASSWORD))[0] == 401
    # ... while another CP from another address is served at once, and so is CP1 itself from its own
    # address: failing on purpose does not lock a known id out.
    assert (await upgrade(gateway.port, "/CP2", password=PASSWORD, source="127.0.0.2"))[0] == 101
    assert (await upgrade(gateway.port, "/CP1", password=PASSWORD, source="127.0.0.3"))[0] == 101


async def test_concurrent_guesses_cannot_queue_up_hashes(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any
) -> None:
    register_with_password(aws, "CP1")
    gateway: RunningGateway = await nursery.start(run_gateway, gateway_config(fakeiot))
    statuses: list[int] = []

    async def guess(n: int) -> None:
        statuses.append((await upgrade(gateway.port, "/CP1", password=f"guess-{n}"))[0])

    async with trio.open_nursery() as guesses:
        for n in range(40):
            guesses.start_soon(guess, n)
    assert statuses == [401] * 40
    assert gateway.bridge.password_hashes <= 7, (
        gateway.bridge.password_hashes
    )  # 2 at a time, blocked after 5


async def test_unknown_ids_get_the_same_401_when_every_cp_must_authenticate(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any
) -> None:
    register_with_password(aws, "CP1")
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, min_security_profile=1)
    )
    wrong, wrong_time = await upgrade(gateway.port, "/CP1", password="not-it-at-all")
    unknown, unknown_time = await upgrade(
        gateway.port, "/NOBODY", password="not-it-at-all", source="127.0.0.3"
    )
    assert wrong == unknown == 401  # not 101 + close 1008 "not registered"
    assert gateway.bridge.password_hashes == 2  # the unknown id cost the same hashing work
    assert unknown_time > wrong_time / 4, (unknown_time, wrong_time)
    assert (await upgrade(gateway.port, "/CP1", password=PASSWORD, source="127.0.0.2"))[0] == 101


async def test_a_registry_flood_from_one_address_is_cut_off(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    register("CP1")
    gateway: RunningGateway = await nursery.start(run_gateway, gateway_config(fakeiot))
    for n in range(60):
        status, _ = await upgrade(gateway.port, f"/ghost-{n}")
        assert status == 101  # refused after the handshake, with a close code
    # 20 unknown ids at once, then 2 per second: not one DescribeThing per invented id.
    assert gateway.bridge.registry.lookups <= 25, gateway.bridge.registry.lookups
    assert (await upgrade(gateway.port, "/CP1", source="127.0.0.2"))[0] == 101
