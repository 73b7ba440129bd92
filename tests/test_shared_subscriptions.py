"""fakeiot's MQTT shared subscriptions (``$share/<group>/<filter>``): the group logic on its own, then
over real sockets: one member per message, round-robin, policy on the underlying filter, and the
unacknowledged messages of a member that goes handed to another."""

from __future__ import annotations

import pytest
import trio

from fakeiot import FakeIot
from fakeiot.policy import Role, may_subscribe
from fakeiot.shared_subscriptions import (
    InvalidSharedFilter,
    SharedFilter,
    SharedGroup,
    SharedSubscriptions,
    parse_shared,
    underlying_filter,
    valid_filter,
)
from gateway.errors import MqttSubscriptionRefused
from gateway.mqtt_link import MqttDriver, MqttLink

from .waiting import until

GROUP = SharedFilter("g", "+/in")

# -- the pure group logic -------------------------------------------------------------------------


def test_a_share_filter_is_split_into_group_and_filter() -> None:
    assert parse_shared("$share/procs/+/in") == SharedFilter("procs", "+/in")
    assert parse_shared("$share/g/a/b/#") == SharedFilter("g", "a/b/#")
    assert parse_shared("+/in") is None
    assert parse_shared("$aws/things/+/shadow/update") is None
    assert str(SharedFilter("g", "+/in")) == "$share/g/+/in"


@pytest.mark.parametrize("bad", ["$share/", "$share//+/in", "$share/g", "$share/g/", "$share/g+/x"])
def test_a_malformed_share_filter_is_refused(bad: str) -> None:
    with pytest.raises(InvalidSharedFilter):
        parse_shared(bad)
    assert underlying_filter(bad) == bad  # judged as is: a device may not subscribe to it


def test_filters_are_checked_as_amqtt_checks_them() -> None:
    assert valid_filter("+/in") and valid_filter("a/#") and valid_filter("#")
    assert not valid_filter("a#") and not valid_filter("#/a") and not valid_filter("a+/b")


def test_members_are_chosen_in_turn() -> None:
    group = SharedGroup(GROUP)
    for member in ("a", "b", "c"):
        group.join(member, 1)
    chosen = [group.choose(lambda _: True, lambda _: False) for _ in range(6)]
    assert [c[0] for c in chosen if c] == ["a", "b", "c", "a", "b", "c"]


def test_an_offline_member_is_skipped_and_keeps_no_turn() -> None:
    group = SharedGroup(GROUP)
    for member in ("a", "b", "c"):
        group.join(member, 1)
    online = {"a", "c"}
    chosen = [group.choose(online.__contains__, lambda _: True) for _ in range(4)]
    assert [c[0] for c in chosen if c] == ["a", "c", "a", "c"]


def test_with_nobody_online_a_persistent_member_keeps_it_else_nobody() -> None:
    group = SharedGroup(GROUP)
    group.join("clean", 1)
    group.join("persistent", 1)
    assert group.choose(lambda _: False, lambda cid: cid == "persistent") == ("persistent", 1)
    assert group.choose(lambda _: False, lambda _: False) is None


def test_the_member_handing_on_is_never_chosen() -> None:
    group = SharedGroup(GROUP)
    group.join("a", 1)
    group.join("b", 0)
    assert group.choose(lambda _: True, lambda _: True, excluding="a") == ("b", 0)
    assert group.choose(lambda cid: cid == "a", lambda _: False, excluding="a") is None


def test_joining_again_replaces_the_qos_and_leaving_keeps_the_turn() -> None:
    group = SharedGroup(GROUP)
    for member in ("a", "b", "c"):
        group.join(member, 1)
    group.join("b", 0)
    assert group.members == [("a", 1), ("b", 0), ("c", 1)]
    assert group.choose(lambda _: True, lambda _: False) == ("a", 1)  # b is next
    assert group.leave("a") and not group.leave("a")
    assert group.choose(lambda _: True, lambda _: False) == ("b", 0)
    assert group.choose(lambda _: True, lambda _: False) == ("c", 1)


def test_groups_are_found_by_topic_and_emptied_groups_go() -> None:
    subs = SharedSubscriptions()
    other = SharedFilter("h", "+/in")
    subs.join(GROUP, "a", 1)
    subs.join(other, "a", 1)
    subs.join(SharedFilter("g", "x/out"), "b", 1)

    def matches(topic: str, topic_filter: str) -> bool:
        return topic_filter == "+/in" and topic.endswith("/in")

    assert {g.key for g in subs.matching("CP1/in", matches)} == {GROUP, other}
    assert subs.leave_all("a") == 2
    assert subs.matching("CP1/in", matches) == [] and len(subs) == 1


def test_the_policy_judges_a_shared_subscription_by_its_filter() -> None:
    assert may_subscribe(Role.DEVICE, "CP1", "$share/g/CP1/out")
    assert not may_subscribe(Role.DEVICE, "CP1", "$share/g/CP2/out")
    assert not may_subscribe(Role.DEVICE, "CP1", "$share/g/+/out")
    assert not may_subscribe(Role.DEVICE, "CP1", "$share/CP1/out")  # no filter after the share name
    assert may_subscribe(Role.BACKEND, "cpo:processor", "$share/g/+/in")


# -- over real sockets ----------------------------------------------------------------------------


async def collect(link: MqttLink, into: list[bytes]) -> None:
    while True:
        _, payload = await link.receive()
        into.append(payload)


async def test_each_message_goes_to_one_member_in_turn(
    mqtt_driver: MqttDriver, nursery: trio.Nursery
) -> None:
    got: dict[str, list[bytes]] = {"m1": [], "m2": []}
    async with (
        mqtt_driver.link("m1") as m1,
        mqtt_driver.link("m2") as m2,
        mqtt_driver.link("cp") as cp,
    ):
        await m1.subscribe("$share/g/+/in")
        await m2.subscribe("$share/g/+/in")
        nursery.start_soon(collect, m1, got["m1"])
        nursery.start_soon(collect, m2, got["m2"])
        sent = [f"m{i}".encode() for i in range(40)]
        for payload in sent:
            await cp.publish("CP1/in", payload)
        await until(lambda: len(got["m1"]) + len(got["m2"]) >= len(sent), timeout=10)
        await trio.sleep(0.2)  # nothing more comes
        assert sorted(got["m1"] + got["m2"]) == sorted(sent)  # each exactly once
        assert len(got["m1"]) == len(got["m2"]) == 20  # round-robin
        nursery.cancel_scope.cancel()


async def test_two_groups_and_a_normal_subscription_each_get_every_message(
    mqtt_driver: MqttDriver, nursery: trio.Nursery
) -> None:
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    async with (
        mqtt_driver.link("a") as a,
        mqtt_driver.link("b") as b,
        mqtt_driver.link("cp") as cp,
    ):
        await a.subscribe("$share/g/+/in")
        await a.subscribe("+/in")  # the same client, also a normal subscriber
        await b.subscribe("$share/h/+/in")  # alone in its group
        nursery.start_soon(collect, a, got["a"])
        nursery.start_soon(collect, b, got["b"])
        await cp.publish("CP1/in", b"x")
        await until(lambda: len(got["a"]) == 2 and len(got["b"]) == 1)
        await trio.sleep(0.2)
        assert got == {"a": [b"x", b"x"], "b": [b"x"]}
        nursery.cancel_scope.cancel()


async def test_a_member_that_goes_hands_its_unacknowledged_messages_to_another(
    fakeiot: FakeIot, mqtt_driver: MqttDriver, nursery: trio.Nursery
) -> None:
    """What makes a killed processor lose nothing on fakeiot."""
    held = []
    got: list[bytes] = []
    async with (
        mqtt_driver.link("keeper") as keeper,
        mqtt_driver.link("dies") as dies,
        mqtt_driver.link("cp") as cp,
    ):
        await keeper.subscribe("$share/g/+/in")
        await dies.subscribe("$share/g/+/in")
        nursery.start_soon(collect, keeper, got)
        sent = [f"m{i}".encode() for i in range(10)]
        for payload in sent:
            await cp.publish("CP1/in", payload)
        for _ in range(5):
            held.append(await dies.receive(ack=False))  # taken, never acknowledged
        await until(lambda: len(got) == 5)
        dies._close_socket("killed")  # what the broker sees of a SIGKILL
        await until(lambda: len(got) == 10, timeout=10)
        assert sorted(got) == sorted(sent)
        assert {d.payload for d in held} == set(sent) - set(got[:5])
        nursery.cancel_scope.cancel()


async def test_a_device_may_share_subscribe_only_to_its_own_topics(
    device_driver: MqttDriver,
) -> None:
    async with device_driver.link("CP1") as cp:
        await cp.subscribe("$share/g/CP1/out")
        for forbidden in ("$share/g/CP2/out", "$share/g/+/out", "$share/g/+/in", "$share//CP1/out"):
            with pytest.raises(MqttSubscriptionRefused):
                await cp.subscribe(forbidden)


async def test_a_malformed_share_filter_gets_a_suback_failure(mqtt_driver: MqttDriver) -> None:
    async with mqtt_driver.link("backend") as link:
        for bad in ("$share/g", "$share//+/in", "$share/g/"):
            with pytest.raises(MqttSubscriptionRefused):
                await link.subscribe(bad)
        assert link.connected
