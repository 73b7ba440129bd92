"""``--registry-prefetch``: the Things listed at start admit their CPs without a DescribeThing each."""

from __future__ import annotations

from typing import Any

import trio
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from fakeiot import FakeIot
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import connect
from gateway.chargepoint import open_client_websocket as open_websocket_url
from gateway.identity import thing_name_for
from gateway.registry import Registry

from .conftest import gateway_config
from .test_gateway_loop import boot, closed_with
from .waiting import until


async def test_listed_things_are_admitted_from_the_cache_and_others_still_looked_up(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    cp_ids = [f"PF{i}" for i in range(260)]  # more than one page of ListThings (250)
    register(*cp_ids)
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, registry_prefetch=True)
    )
    registry = gateway.bridge.registry
    await until(lambda: all(registry.is_cached(thing_name_for(c)) for c in cp_ids), timeout=10)
    for cp_id in (cp_ids[0], cp_ids[-1]):  # one from each page
        async with connect(gateway.url, cp_id) as cp:
            assert (await cp.call(*boot()))["status"] == "Accepted"
    assert registry.lookups == 0
    # A CP that was not listed is looked up as before, and refused when unknown.
    async with open_websocket_url(f"{gateway.url}/PF-NEW", subprotocols=["ocpp2.0.1"]) as ws:
        assert await closed_with(ws) == (
            1008,
            "Charge Point PF-NEW not registered as an IoT Thing",
        )
    assert registry.lookups == 1


class _NoListing:
    """boto3's ``iot`` client under a role without iot:ListThings."""

    def __init__(self) -> None:
        self.described: list[str] = []

    def list_things(self, **kwargs: Any) -> dict[str, Any]:
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "ListThings"
        )

    def describe_thing(self, *, thingName: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.described.append(thingName)
        return {"thingName": thingName, "attributes": {}}


async def test_a_refused_listing_caches_nothing_and_look_ups_go_on() -> None:
    iot = _NoListing()
    registry = Registry(iot)
    assert await registry.prefetch() == 0
    assert await registry.lookup("CP1") == {}
    assert iot.described == ["CP1"]
