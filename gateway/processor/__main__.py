"""``python -m gateway.processor``: run the message processor on its own.

Like the AWS sample's Lambda, but as an MQTT client: point it at the broker
(fakeiot, Mosquitto...) and the registry/shadow API the gateways use.
Its options (gateway/processor/config.py) also read ``PROCESSOR_<OPTION>``
environment variables.
"""

from __future__ import annotations

import signal
import sys
from functools import partial

import trio

from ..aws import AwsSettings, make_clients
from ..errors import ConfigError, GatewayError
from ..logthrottle import configure_logging
from ..looplag import LoopMonitor
from ..mqtt_link import MqttSettings, open_mqtt_driver
from .command_cli import call_main, command_settings, start_command_api
from .command_service import CommandService
from .config import ProcessorConfig, load_processor_config
from .idtokens import open_authorizer
from .registry import HandlerLoadError, HandlerRegistry, load_registry
from .service import Processor, ProcessorSettings, inbound_topic


async def _run(config: ProcessorConfig, mqtt: MqttSettings, registry: HandlerRegistry) -> None:
    iot, iot_data = await trio.to_thread.run_sync(
        make_clients,
        AwsSettings(
            region=config.region,
            iot_endpoint_url=config.iot_api_url,
            iot_data_endpoint_url=config.iot_data_url,
        ),
    )
    settings = ProcessorSettings(
        client_id=config.client_id,
        shared_group=config.shared_group,
        heartbeat_interval=config.heartbeat_interval,
        handler_modules=config.handlers,
    )
    loop = LoopMonitor()
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with (
                open_authorizer(config) as authorizer,
                open_mqtt_driver(mqtt) as driver,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(loop.run)
                processor = Processor(
                    driver, iot_data, settings, authorizer=authorizer, registry=registry
                )
                await nursery.start(processor.run_supervised)
                # -- commands to charge points: the HTTP API (commands.py / command_service.py) --
                commands = None
                if config.http_port is not None:
                    commands = CommandService(driver, iot, iot_data, command_settings(config))
                    port = await nursery.start(
                        partial(start_command_api, config, driver, iot, iot_data, service=commands)
                    )
                    print(f"processor: command API on http://{config.http_host}:{port}", flush=True)
                if config.metrics_port is not None:
                    # Imported only when asked for: without it prometheus_client is never loaded.
                    from .metrics import ProcessorCollector, serve_processor_health

                    metrics_port = await nursery.start(
                        partial(
                            serve_processor_health,
                            ProcessorCollector(processor, commands),
                            host=config.metrics_host,
                            port=config.metrics_port,
                        )
                    )
                    print(
                        f"processor: metrics on http://{config.metrics_host}:{metrics_port}/metrics",
                        flush=True,
                    )
                print(
                    f"processor: answering {inbound_topic(settings)} on {mqtt.host}:{mqtt.port} "
                    f"as {settings.client_id}",
                    flush=True,
                )
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    finally:
        iot.close()
        iot_data.close()
    print(f"processor stopped: {loop.describe()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # -- commands to charge points: `python -m gateway.processor call CP ACTION JSON [options]` --
    if args[:1] == ["call"]:
        return call_main(args[1:])
    if args[:1] == ["idtoken"]:  # the id-token table's CLI (docs/authorization.md)
        from .idtoken_cli import main as idtoken_main

        return idtoken_main(args[1:])
    config = load_processor_config(argv)
    try:
        mqtt = MqttSettings(
            host=config.mqtt_host,
            port=config.mqtt_port,
            username=config.mqtt_username,
            password=config.mqtt_password,
            ssl_context=config.ssl_context(),
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Repeated lines rate-limited, as in the gateway.
    configure_logging(config.log_level, log_format=config.log_format)
    try:
        registry = load_registry(config.handlers)  # the CPO's modules: before anything connects
    except HandlerLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(_run, config, mqtt, registry)
    except BaseException as exc:  # noqa: BLE001 - start-up errors arrive wrapped in exception groups
        leaves = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        if all(isinstance(e, GatewayError) for e in leaves):
            for error in leaves:
                print(f"error: {error}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
