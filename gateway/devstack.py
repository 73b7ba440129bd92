"""The development stack: fakeiot, the gateway and the message processor in one process.

NOT FOR PRODUCTION.  ``python -m gateway`` runs it when no broker is configured, to
try the gateway out offline; this is the only module of ``gateway`` that imports
``fakeiot`` (the product's stand-in, which needs amqtt: ``pip install -e '.[dev]'``),
and only gateway/__main__.py imports it, lazily.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace

import trio

from fakeiot import FakeIot, FakeIotConfig, FakeIotError, running_fakeiot
from fakeiot.policy import BACKEND_USERNAME, GATEWAY_USERNAME

from .app import RunningGateway, run_gateway
from .config import GatewayConfig
from .errors import GatewayError
from .processor.idtokens import IdTokenTable, make_dynamodb_client

log = logging.getLogger("gateway.devstack")

BANNER = (
    "*** DEVELOPMENT STACK: no MQTT broker is configured, so this process runs an embedded "
    "fakeiot (a stand-in for AWS IoT Core) and the message processor. ***",
    "*** It is NOT for production: nothing here is AWS IoT, and its data lives in {data_dir}. ***",
    "*** For production set --iot-endpoint (GATEWAY_IOT_ENDPOINT) with --cert-file/--key-file, "
    "or --mqtt-host; GATEWAY_REQUIRE_BROKER=1 makes a missing broker an error. ***",
)


class DevStackError(GatewayError):
    """The embedded fakeiot could not start (a port in use, a data directory held by another process...)."""


@dataclass
class RunningDevStack:
    """What :func:`run_dev_stack` reports through ``task_status.started()``."""

    gateway: RunningGateway
    fakeiot: FakeIot

    @property
    def url(self) -> str:
        """The gateway's WebSocket URL, before ``/<cp-id>``."""
        return self.gateway.url


def wired_to(config: GatewayConfig, iot: FakeIot) -> GatewayConfig:
    """``config`` pointed at the embedded fakeiot, with its credentials; the processor runs unless
    --no-processor."""
    return replace(
        config,
        mqtt_host="127.0.0.1",
        mqtt_port=iot.mqtt_port,
        iot_api_url=iot.api_url,
        mqtt_username=GATEWAY_USERNAME,  # the gateway's principal: each CP's own topics only
        mqtt_password=iot.gateway_password,
        processor=True if config.processor is None else config.processor,
        processor_mqtt_username=BACKEND_USERNAME,
        processor_mqtt_password=iot.backend_password,
    )


def ensure_id_token_table(config: GatewayConfig, iot: FakeIot) -> None:
    """``--processor-authorization id-token-table``: the table on the embedded fakeiot, created
    when missing (it lives in the data directory, tokens and all, across restarts)."""
    name = config.processing.id_token_table
    client = make_dynamodb_client(config.registry.region, iot.api_url)
    try:
        if IdTokenTable(client, name).create():
            log.warning(
                "development stack: id-token table %s created, empty: every token is Unknown "
                "until added with python -m gateway.processor idtoken --iot-api-url %s "
                "--id-token-table %s put TOKEN --status Accepted",
                name,
                iot.api_url,
                name,
            )
    finally:
        client.close()


async def run_dev_stack(
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[RunningDevStack] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run fakeiot and a gateway wired to it until cancelled; ``config`` names no broker."""
    if not config.embedded:
        raise DevStackError("the development stack is for a configuration without a broker")
    devstack = config.devstack
    for line in BANNER:
        log.warning(line.format(data_dir=devstack.data_dir))
    embedded = FakeIotConfig(
        host="127.0.0.1",
        mqtt_port=config.mqtt.port,
        api_port=devstack.fakeiot_api_port,
        data_dir=devstack.data_dir,
        region=config.registry.region,
    )
    async with AsyncExitStack() as stack:
        try:
            iot = await stack.enter_async_context(running_fakeiot(embedded))
        except (FakeIotError, OSError) as exc:
            # One line for the operator (a busy port, a data directory another process holds).
            raise DevStackError(f"the embedded fakeiot cannot start: {exc}") from None
        if config.processing.authorization == "id-token-table" and config.processor is not False:
            await trio.to_thread.run_sync(ensure_id_token_table, config, iot)
        async with trio.open_nursery() as nursery:
            gateway: RunningGateway = await nursery.start(run_gateway, wired_to(config, iot))
            if gateway.command_api_port is not None:  # the console's Commands page uses it
                iot.use_command_api(f"http://127.0.0.1:{gateway.command_api_port}")
            task_status.started(RunningDevStack(gateway, iot))
