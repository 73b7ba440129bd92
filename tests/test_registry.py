"""The Thing registry cache and its DescribeThing pacing, on the autojump clock.

A stand-in for boto3's ``iot`` client answers DescribeThing at once (it is still called in a
worker thread, as in production); every wait the registry makes is a Trio timer, so the test's
clock jumps over it: TTLs of minutes cost nothing and the counts are exact."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from trio.testing import MockClock

from gateway.errors import RegistryUnavailable, UnknownChargePoint
from gateway.identity import validate_identity
from gateway.registry import Registry


class FakeIot:
    """DescribeThing over a dict of Things; counts the calls."""

    def __init__(self, things: dict[str, dict[str, str]]) -> None:
        self.things = things
        self.calls: list[str] = []

    def describe_thing(self, *, thingName: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.calls.append(thingName)
        if thingName not in self.things:
            raise ClientError(
                {"Error": {"Code": "ResourceNotFoundException", "Message": "no such Thing"}},
                "DescribeThing",
            )
        return {"thingName": thingName, "attributes": dict(self.things[thingName])}


async def test_found_things_are_cached_for_the_ttl(autojump_clock: MockClock) -> None:
    iot = FakeIot({"CP1": {"ocppSecurityProfile": "1"}})
    registry = Registry(iot, ttl=60.0, negative_ttl=2.0)
    assert await registry.check(validate_identity("CP1")) == {"ocppSecurityProfile": "1"}
    await trio.sleep(59.9)
    assert await registry.lookup("CP1") is not None and iot.calls == ["CP1"]
    await trio.sleep(0.1)  # the TTL is over: asked again
    iot.things["CP1"] = {"ocppSecurityProfile": "2"}
    assert await registry.lookup("CP1") == {"ocppSecurityProfile": "2"}
    assert iot.calls == ["CP1", "CP1"] and registry.lookups == 2


async def test_unknown_things_are_cached_for_the_negative_ttl(autojump_clock: MockClock) -> None:
    iot = FakeIot({})
    registry = Registry(iot, ttl=60.0, negative_ttl=2.0)
    with pytest.raises(UnknownChargePoint):
        await registry.check(validate_identity("CP9"))
    await trio.sleep(1.9)
    assert await registry.lookup("CP9") is None and len(iot.calls) == 1
    iot.things["CP9"] = {}  # registered meanwhile: seen once the negative entry expires
    await trio.sleep(0.1)
    assert await registry.lookup("CP9") == {} and len(iot.calls) == 2


async def test_forget_drops_the_cached_answer(autojump_clock: MockClock) -> None:
    iot = FakeIot({"CP1": {}})
    registry = Registry(iot, ttl=60.0)
    await registry.lookup("CP1")
    assert registry.is_cached("CP1")
    registry.forget("CP1")
    assert not registry.is_cached("CP1")
    await registry.lookup("CP1")
    assert len(iot.calls) == 2


async def test_concurrent_look_ups_of_one_thing_share_one_call(autojump_clock: MockClock) -> None:
    iot = FakeIot({"CP1": {}})
    registry = Registry(iot)
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(registry.lookup, "CP1")
    assert iot.calls == ["CP1"]


async def test_a_look_up_storm_is_paced_and_refused_past_max_wait(
    autojump_clock: MockClock,
) -> None:
    iot = FakeIot({f"CP{n}": {} for n in range(6)})
    registry = Registry(iot, rate=2.0, max_wait=1.0)  # bursts of 2, then one per 0.5 s
    finished: dict[str, float] = {}
    refused: list[str] = []
    start = trio.current_time()

    async def look_up(name: str) -> None:
        try:
            await registry.lookup(name)
        except RegistryUnavailable as exc:
            assert str(exc) == "Registry look-up rate exceeded; try again later"
            refused.append(name)
        else:
            finished[name] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(look_up, f"CP{n}")
    # Booked at once (all six before any waits): 2 at 0 s, then 0.5 s and 1.0 s; the next slot
    # (1.5 s) is past max_wait, so the last two are refused without a call.  (A call may finish
    # later than its slot: the clock may jump while a worker thread answers.)
    assert len(refused) == 2 and sorted(iot.calls) == sorted(finished)
    slots = [0.0, 0.0, 0.5, 1.0]
    assert all(t >= slot for t, slot in zip(sorted(finished.values()), slots, strict=True))
    assert max(finished.values()) < 1.5
