"""fakeiot's IoT-policy-like ACL: a CP-id client reaches only its own topics; the backend role everything."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from fakeiot.policy import Role, may_publish, may_receive, may_subscribe
from gateway.errors import MqttConnectError, MqttConnectionLost, MqttSubscriptionRefused
from gateway.mqtt_link import MqttDriver, open_mqtt_driver

from .conftest import Spy, backend_settings


def test_policy_rules() -> None:
    device, backend = Role.DEVICE, Role.BACKEND
    assert may_publish(device, "CP1", "CP1/in")
    assert not may_publish(device, "CP1", "CP2/in") and not may_publish(device, "CP1", "CP1/out")
    assert may_publish(device, "CP.1", "$aws/things/CP:2E1/shadow/update")  # its Thing name
    assert not may_publish(device, "CP1", "$aws/things/CP2/shadow/update")
    assert may_subscribe(device, "CP1", "CP1/out") and may_subscribe(
        device, "CP1", "$aws/things/CP1/shadow/#"
    )
    for other in (
        "CP2/out",
        "+/out",
        "#",
        "CP1/#",
        "$aws/things/+/shadow/update",
        "$aws/events/presence/#",
    ):
        assert not may_subscribe(device, "CP1", other), other
    assert may_receive(device, "CP1", "CP1/out") and not may_receive(device, "CP1", "CP2/out")
    assert may_publish(backend, "x", "CP9/out") and may_subscribe(backend, "x", "#")


async def test_a_cp_client_cannot_read_or_write_another_cps_topics(
    fakeiot: FakeIot, device_driver: MqttDriver, mqtt_driver: MqttDriver, nursery: trio.Nursery
) -> None:
    async with mqtt_driver.link("test:presence") as watcher:
        await watcher.subscribe("$aws/events/presence/disconnected/+", 1)
        events = Spy(watcher)
        nursery.start_soon(events.run)
        async with device_driver.link("CP1") as cp1:
            for topic in ("CP2/out", "+/out", "#", "$aws/things/CP2/shadow/update/accepted"):
                with pytest.raises(MqttSubscriptionRefused):
                    await cp1.subscribe(topic, 1)
            await cp1.subscribe("CP1/out", 1)
            await cp1.subscribe("$aws/things/CP1/shadow/update/accepted", 1)
            # The backend publishes to both CPs: CP1 gets only its own.
            async with mqtt_driver.link("test:backend") as backend:
                await backend.publish("CP2/out", b"for CP2")
                await backend.publish("CP1/out", b"for CP1")
                with trio.fail_after(5):
                    assert await cp1.receive() == ("CP1/out", b"for CP1")
            await cp1.publish("CP1/in", b"mine")  # allowed
            # Publishing into another CP's topic closes the connection, as on AWS IoT.
            with pytest.raises(MqttConnectionLost):
                await cp1.publish("CP2/in", b"forged")
                with trio.fail_after(5):
                    await cp1.receive()
        _, event = await events.wait_for(lambda t, p: t == "$aws/events/presence/disconnected/CP1")
        assert json.loads(event)["disconnectReason"] == "FORBIDDEN_ACCESS"
    assert fakeiot.broker is not None and fakeiot.broker.refusals >= 1


async def test_the_backend_role_needs_the_right_password(fakeiot: FakeIot) -> None:
    wrong = replace(backend_settings(fakeiot), password="not-the-password", connect_timeout=5)
    async with open_mqtt_driver(wrong) as driver:
        with pytest.raises(MqttConnectError, match="(?i)not authori"):
            async with driver.link("test:intruder"):
                pass


async def test_gateway_cp_connections_run_under_the_device_policy(
    gateway: Any, register: Any, spy: Spy
) -> None:
    """The whole loop works with the ACL on: the gateway's links are device clients, the processor backend."""
    from gateway.chargepoint import connect, heartbeat

    register("CP1")
    async with connect(gateway.url, "CP1") as cp:
        assert "currentTime" in await cp.call(*heartbeat())
    await spy.wait_for(lambda t, p: t == "CP1/out")
