"""Revocation: deleting a Thing or changing its credentials closes the CP's live connection within seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import trio

from gateway.admission import credential_fingerprint
from gateway.app import RunningGateway
from gateway.chargepoint import connect, heartbeat
from gateway.credentials import hash_password
from gateway.errors import MqttConnectionLost
from gateway.identity import thing_name_for, validate_identity
from gateway.local_sessions import ChargePointSession, LocalSessions
from gateway.revocation import (
    CREDENTIALS_CHANGED_REASON,
    DEREGISTERED_REASON,
    RegistryWatch,
    thing_of_event,
)

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


class _Registry:
    """The registry as the watch sees it: look-ups of the current Things, a cache to forget."""

    def __init__(self, things: dict[str, dict[str, str]]) -> None:
        self.things = things
        self.lookups: list[str] = []

    def forget(self, thing_name: str) -> None:
        pass

    async def lookup(self, thing_name: str) -> dict[str, str] | None:
        self.lookups.append(thing_name)
        return self.things.get(thing_name)


class _Link:
    def __init__(self, lost: trio.Event | None) -> None:
        self.lost = lost

    async def subscribe(self, topic_filter: str, qos: int) -> int:
        return qos

    async def receive(self) -> tuple[str, bytes]:
        if self.lost is not None:
            await self.lost.wait()
            raise MqttConnectionLost("broker went away")
        await trio.sleep_forever()
        raise AssertionError


class _Driver:
    """Hands out links; the first one is lost when ``lose`` is set (no event ever arrives)."""

    def __init__(self) -> None:
        self.lose = trio.Event()
        self.links = 0

    @asynccontextmanager
    async def link(self, client_id: str) -> AsyncIterator[_Link]:
        self.links += 1
        yield _Link(self.lose if self.links == 1 else None)


async def test_a_thing_deleted_while_the_watch_was_disconnected_is_caught_on_resubscribing(
    autojump_clock: Any,
) -> None:
    """An event published while the watch's connection was down is lost: it re-checks everyone."""
    sessions = LocalSessions()
    kept = ChargePointSession(validate_identity("CP1"), "ocpp2.0.1")
    gone = ChargePointSession(validate_identity("CP2"), "ocpp2.0.1")
    for session in (kept, gone):
        assert await sessions.claim(session)
    registry = _Registry({"CP1": {}, "CP2": {}})
    bridge = SimpleNamespace(
        sessions=sessions, registry=registry, credential_fingerprint=credential_fingerprint
    )
    driver = _Driver()
    watch = RegistryWatch(bridge, driver)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.run)
        await until(lambda: watch.subscriptions == 1, timeout=5, what="first subscription")
        assert registry.lookups == []  # the first subscription checks nobody
        del registry.things["CP2"]  # deleted while ...
        driver.lose.set()  # ... the connection is down: its event is never delivered
        await until(lambda: watch.subscriptions == 2, timeout=60, what="re-subscription")
        await until(lambda: gone.ending.code is not None, timeout=5, what="CP2 closed")
        assert (gone.ending.code, gone.ending.reason) == (1008, DEREGISTERED_REASON)
        assert kept.ending.code is None and sorted(registry.lookups) == ["CP1", "CP2"]
        nursery.cancel_scope.cancel()
