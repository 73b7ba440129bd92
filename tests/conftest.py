"""Fixtures: fakeiot and gateways on free ports, boto3 clients, an MQTT spy.

Every server binds 127.0.0.1 port 0 and is stopped when its test ends.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import types
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot, FakeIotConfig, running_fakeiot
from fakeiot.policy import BACKEND_USERNAME, GATEWAY_USERNAME
from gateway.app import RunningGateway, run_gateway
from gateway.aws import AwsSettings, make_clients
from gateway.config import GatewayConfig
from gateway.errors import MqttConnectionLost
from gateway.mqtt_link import MqttDriver, MqttLink, MqttSettings, open_mqtt_driver

from .processes import program

logging.getLogger("amqtt").setLevel(logging.WARNING)
logging.getLogger("transitions").setLevel(logging.WARNING)

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str) -> types.ModuleType:
    """A module of scripts/ (not a package) loaded from its file, without touching sys.path."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def fakeiot(tmp_path: Path) -> AsyncIterator[FakeIot]:
    async with running_fakeiot(
        FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path / "fakeiot")
    ) as iot:
        yield iot


@pytest.fixture
def aws(fakeiot: FakeIot) -> Iterator[tuple[Any, Any]]:
    """(iot, iot_data) boto3 clients pointed at the fakeiot fixture."""
    clients = make_clients(AwsSettings(iot_endpoint_url=fakeiot.api_url))
    yield clients
    for client in clients:
        client.close()


@pytest.fixture
def register(aws: tuple[Any, Any]) -> Callable[..., None]:
    def register(*cp_ids: str) -> None:
        from gateway.identity import thing_name_for

        for cp_id in cp_ids:
            aws[0].create_thing(thingName=thing_name_for(cp_id))

    return register


def gateway_config(iot: FakeIot, **overrides: Any) -> GatewayConfig:
    base = GatewayConfig(
        port=0,
        mqtt_host="127.0.0.1",
        mqtt_port=iot.mqtt_port,
        iot_api_url=iot.api_url,
        processor=True,
        processor_mqtt_username=BACKEND_USERNAME,
        processor_mqtt_password=iot.backend_password,
        mqtt_username=GATEWAY_USERNAME,
        mqtt_password=iot.gateway_password,
        registry_negative_ttl=0.0,
    )
    return replace(base, **overrides)


@pytest.fixture
async def gateway(fakeiot: FakeIot, nursery: trio.Nursery) -> RunningGateway:
    """A gateway (with the processor) on the fakeiot fixture."""
    return await nursery.start(run_gateway, gateway_config(fakeiot))


def backend_settings(iot: FakeIot) -> MqttSettings:
    """MQTT settings with fakeiot's backend role (may use any topic), like the message processor."""
    return MqttSettings(
        port=iot.mqtt_port, username=BACKEND_USERNAME, password=iot.backend_password
    )


@pytest.fixture
async def mqtt_driver(fakeiot: FakeIot) -> AsyncIterator[MqttDriver]:
    """MQTT clients with the backend role."""
    async with open_mqtt_driver(backend_settings(fakeiot)) as driver:
        yield driver


def device_settings(iot: FakeIot) -> MqttSettings:
    """MQTT settings with the gateway's credential: device clients, each confined to its own CP's topics."""
    return MqttSettings(
        port=iot.mqtt_port, username=GATEWAY_USERNAME, password=iot.gateway_password
    )


@pytest.fixture
async def device_driver(fakeiot: FakeIot) -> AsyncIterator[MqttDriver]:
    """MQTT clients with the gateway's credential: confined to their own topics, like the gateway's CP connections."""
    async with open_mqtt_driver(device_settings(fakeiot)) as driver:
        yield driver


class Spy:
    """A backend MQTT client that records every message on the topics it watches."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link
        self.messages: list[tuple[str, bytes]] = []
        self._changed = trio.Event()

    async def run(self) -> None:
        while True:
            try:
                message = await self.link.receive()
            except MqttConnectionLost:
                return
            self.messages.append(message)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(
        self, predicate: Callable[[str, bytes], bool], *, timeout: float = 5.0
    ) -> tuple[str, bytes]:
        with trio.fail_after(timeout):
            while True:
                for message in self.messages:
                    if predicate(*message):
                        return message
                await self._changed.wait()

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload in self.messages if t == topic]


@pytest.fixture
async def spy(mqtt_driver: MqttDriver, nursery: trio.Nursery) -> AsyncIterator[Spy]:
    """Watches ``+/in`` and ``+/out``, like ``mosquitto_sub -t '+/in' -t '+/out'``."""
    async with mqtt_driver.link("test:spy") as link:
        await link.subscribe("+/in", 1)
        await link.subscribe("+/out", 1)
        watcher = Spy(link)
        nursery.start_soon(watcher.run)
        yield watcher


def shadow_of(aws: tuple[Any, Any], thing_name: str) -> dict[str, Any]:
    return json.loads(aws[1].get_thing_shadow(thingName=thing_name)["payload"].read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")  # one moto server per test module
def moto_url() -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto[server] is in the test extras")
    # Port 0: moto's server binds a port of its own and reports it, so no other program can
    # take it first.
    with program("-m", "moto.server", "-H", "127.0.0.1", "-p", "0") as moto:
        line = moto.wait_for_line("Running on", timeout=60)
        found = re.search(r"Running on (http://127\.0\.0\.1:[1-9]\d*)", line)
        assert found, line
        yield found.group(1)
        moto.stop()
