"""What a charge point is told when the gateway cannot serve it, over real sockets:
the registry unreachable (1013, try again later) and a bug in the gateway (1011), each
costing that connection only."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import connect, heartbeat
from gateway.mqtt_link import MqttLink

from .conftest import gateway_config
from .test_gateway_loop import closed_with


async def test_an_unreachable_registry_closes_with_try_again_later(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    register("CP1")
    with socket.socket() as closed:
        # Bound and never listening: held by this test, so nothing else listens there, and every
        # connection to it is refused.
        closed.bind(("127.0.0.1", 0))
        gateway: RunningGateway = await nursery.start(
            run_gateway,
            gateway_config(
                fakeiot,
                iot_api_url=f"http://127.0.0.1:{closed.getsockname()[1]}",
                processor=False,
            ),
        )
        async with connect(gateway.url, "CP1") as cp:
            # boto3 retries a refused connection a few times before it gives up.
            assert await closed_with(cp.ws, timeout=30) == (
                1013,
                "Thing registry unavailable, try again later",
            )
    assert fakeiot.broker is not None and "CP1" not in fakeiot.broker.connected_client_ids()


async def test_a_bug_in_the_bridge_closes_that_cp_with_internal_error(
    gateway: RunningGateway,
    register: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fault injected where the gateway forwards a CP's frame to MQTT: that CP is closed with
    1011 and the error is logged with its id; another CP is served on as before."""
    register("BUGGY", "CP2")
    original = MqttLink.publish

    async def publish(self: MqttLink, topic: str, payload: bytes, qos: int = 1) -> None:
        if topic == "BUGGY/in":
            raise ZeroDivisionError("injected fault")
        await original(self, topic, payload, qos)

    monkeypatch.setattr(MqttLink, "publish", publish)
    caplog.set_level(logging.ERROR, logger="gateway")
    async with connect(gateway.url, "CP2") as bystander, connect(gateway.url, "BUGGY") as buggy:
        await buggy.send_text('[2,"1","Heartbeat",{}]')
        assert await closed_with(buggy.ws) == (1011, "Internal error in the gateway")
        assert "currentTime" in await bystander.call(*heartbeat())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        r.getMessage().startswith("BUGGY: ")
        and r.exc_info
        and isinstance(r.exc_info[1], ZeroDivisionError)
        for r in errors
    ), [r.getMessage() for r in errors]
