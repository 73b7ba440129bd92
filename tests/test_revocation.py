"""Revocation: deleting a Thing or changing its credentials closes the CP's live connection within seconds."""

from __future__ import annotations

from typing import Any

import trio

from gateway.app import RunningGateway
from gateway.chargepoint import connect, heartbeat
from gateway.credentials import hash_password
from gateway.identity import thing_name_for
from gateway.revocation import CREDENTIALS_CHANGED_REASON, DEREGISTERED_REASON, thing_of_event

from .test_gateway_loop import closed_with
from .waiting import until

PASSWORD = "correct-horse-battery-9"


def test_thing_of_event() -> None:
    assert thing_of_event("$aws/events/thing/CP:2E1/updated") == "CP:2E1"
    for topic in (
        "$aws/events/thing//deleted",
        "$aws/events/presence/connected/CP1",
        "CP1/out",
        "$aws/events/thing/a/b/c",
    ):
        assert thing_of_event(topic) is None


async def _subscribed(gateway: RunningGateway) -> None:
    watch = gateway.watch
    assert watch is not None
    await until(lambda: watch.subscribed, timeout=10, what="the registry watch subscribed")


async def test_deleting_the_thing_closes_the_live_connection(
    gateway: RunningGateway, register: Any, aws: Any
) -> None:
    register("CP1", "CP2")
    await _subscribed(gateway)
    async with connect(gateway.url, "CP1") as cp1, connect(gateway.url, "CP2") as cp2:
        assert "currentTime" in await cp1.call(*heartbeat())
        aws[0].delete_thing(thingName="CP1")
        assert await closed_with(cp1.ws) == (1008, DEREGISTERED_REASON)
        assert "currentTime" in await cp2.call(*heartbeat())  # others untouched
    async with connect(
        gateway.url, "CP1"
    ) as cp1:  # and it cannot come back (no cached "registered")
        assert (await closed_with(cp1.ws))[0] == 1008


async def test_a_new_password_closes_the_live_connection_and_other_updates_do_not(
    gateway: RunningGateway, aws: Any
) -> None:
    name = thing_name_for("CP1")
    aws[0].create_thing(
        thingName=name,
        attributePayload={
            "attributes": {"ocppPasswordHash": hash_password(PASSWORD), "ocppSecurityProfile": "1"}
        },
    )
    await _subscribed(gateway)
    async with connect(gateway.url, "CP1", password=PASSWORD) as cp1:
        aws[0].update_thing(
            thingName=name, attributePayload={"attributes": {"site": "depot-7"}, "merge": True}
        )
        with trio.move_on_after(1.0):  # an unrelated change: still served
            assert "currentTime" in await cp1.call(*heartbeat())
        assert cp1.ws.closed is None
        aws[0].update_thing(
            thingName=name,
            attributePayload={
                "attributes": {"ocppPasswordHash": hash_password("a-new-password-42")},
                "merge": True,
            },
        )
        assert await closed_with(cp1.ws) == (1008, CREDENTIALS_CHANGED_REASON)
    assert gateway.watch is not None and gateway.watch.revoked == 1
