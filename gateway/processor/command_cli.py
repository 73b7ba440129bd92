"""``python -m gateway.processor call CP ACTION JSON [options]``, and starting the HTTP command API.

The CLI acts directly over MQTT with the processor's options (broker, credentials, registry
API), so it needs no running processor.  Exit status: 0 the CALLRESULT (printed as JSON on
stdout); 1 a CALLERROR, an invalid response, a timeout, an unknown or offline CP, a broker
that cannot be reached (one line on stderr); 2 a usage or validation error.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

from ..aws import AwsSettings, make_clients
from ..errors import ConfigError, MqttError, only_error
from ..mqtt_link import MqttDriver, MqttSettings, open_mqtt_driver
from .command_http import serve_command_api
from .command_service import CommandService, CommandSettings
from .commands import (
    CallAnswered,
    CallRejected,
    CommandFailed,
    InvalidCommand,
    Outcome,
    parse_payload,
)
from .config import ProcessorConfig, load_processor_config

USAGE = "usage: python -m gateway.processor call CP_ID ACTION JSON [processor options]"


def command_settings(config: ProcessorConfig) -> CommandSettings:
    return CommandSettings(
        client_id=config.client_id,
        timeout=config.command_timeout,
        max_waiting=config.command_queue,
    )


async def start_command_api(
    config: ProcessorConfig,
    driver: MqttDriver,
    iot: Any,
    iot_data: Any,
    *,
    service: CommandService | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The command service and its HTTP API (``--http-port``) until cancelled; ``started(port)``.

    ``service``: one built by the caller (to count its commands in the metrics), else a new one.
    """
    if service is None:
        service = CommandService(driver, iot, iot_data, command_settings(config))
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        port = await nursery.start(
            lambda task_status: serve_command_api(
                service,
                host=config.http_host,
                port=config.http_port or 0,
                token=config.http_token,
                task_status=task_status,
            )
        )
        task_status.started(port)


def call_main(args: list[str]) -> int:
    if len(args) < 3 or any(a.startswith("-") for a in args[:3]):
        print(USAGE, file=sys.stderr)
        return 2
    cp_id, action, text = args[:3]
    config = load_processor_config(args[3:])
    try:
        payload = parse_payload(text)
        mqtt = MqttSettings(
            host=config.mqtt_host,
            port=config.mqtt_port,
            username=config.mqtt_username,
            password=config.mqtt_password,
            ssl_context=config.ssl_context(),
        )
    except (InvalidCommand, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            outcome = trio.run(_call, config, mqtt, cp_id, action, payload)
        except BaseExceptionGroup as group:  # the service's nursery wraps what call() raised
            raise only_error(group) from None
    except InvalidCommand as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CommandFailed, MqttError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if isinstance(outcome, CallAnswered):
        print(json.dumps(outcome.payload))
        return 0
    if isinstance(outcome, CallRejected):
        details = json.dumps(outcome.details)
        print(
            f"CALLERROR {outcome.code}: {outcome.description} {details}".rstrip(), file=sys.stderr
        )
    else:
        print(f"invalid response: {outcome.reason}: {json.dumps(outcome.payload)}", file=sys.stderr)
    return 1


async def _call(
    config: ProcessorConfig, mqtt: MqttSettings, cp_id: str, action: str, payload: dict[str, Any]
) -> Outcome:
    iot, iot_data = await trio.to_thread.run_sync(
        make_clients, AwsSettings(region=config.region, iot_endpoint_url=config.iot_api_url)
    )
    try:
        async with open_mqtt_driver(mqtt) as driver, trio.open_nursery() as nursery:
            # One-shot: no presence history to follow (see command_service.py).
            service = CommandService(
                driver, iot, iot_data, command_settings(config), watch_presence=False
            )
            await nursery.start(service.run)
            try:
                return await service.call(cp_id, action, payload)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        iot.close()
        iot_data.close()
