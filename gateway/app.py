"""Wiring: the WebSocket server, the MQTT driver, the registry and optionally the
message processor, all in one Trio nursery.

The gateway always talks to a configured broker; the development stack (an embedded
fakeiot) is assembled by gateway/devstack.py, the only module that imports fakeiot.
"""

from __future__ import annotations

import logging
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from .aws import AwsSettings, make_client
from .client_certs import load_cryptography
from .config import GatewayConfig
from .errors import ConfigError
from .gcpolicy import GcPolicy
from .looplag import LoopMonitor
from .mqtt_link import MqttDriver, MqttSettings, open_mqtt_driver
from .registry import Registry
from .revocation import RegistryWatch
from .session import Bridge, LocalSessions, SessionSettings
from .subconfigs import MqttOptions, TlsOptions
from .websocket import GatewayWebSocketServer, serve

if TYPE_CHECKING:
    from .processor import Processor
    from .processor.command_service import CommandService
    from .processor.config import ProcessorConfig

# What the gateway itself calls (the registry); the in-process processor and its command API
# get clients with every operation.
GATEWAY_IOT_OPERATIONS = ("DescribeThing",)

log = logging.getLogger(__name__)

# The processor consumes every CP's CALLs: a far larger backlog than one CP's.
PROCESSOR_BACKLOG_BYTES = 64 << 20


def server_ssl_context(tls: TlsOptions) -> ssl.SSLContext | None:
    """TLS 1.2+ for wss:// when a certificate is configured."""
    if tls.certfile is None or tls.keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(tls.certfile), str(tls.keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --certfile/--keyfile: {exc}") from None
    if tls.client_ca_file is not None:
        # Profile 3 CPs send a certificate; profile 1/2 CPs on the same port do not: optional here,
        # required per CP by its registered profile (session.py).
        try:
            context.load_verify_locations(cafile=str(tls.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --client-ca-file: {exc}") from None
        context.verify_mode = ssl.CERT_OPTIONAL
        load_cryptography()
    return context


def mqtt_ssl_context(mqtt: MqttOptions) -> ssl.SSLContext | None:
    """Mutual TLS 1.2+ to the IoT endpoint with the gateway's client certificate."""
    if mqtt.iot_endpoint is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(mqtt.ca_file) if mqtt.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if mqtt.cert_file is None or mqtt.key_file is None:
            raise ConfigError("--iot-endpoint needs --cert-file and --key-file")
        context.load_cert_chain(str(mqtt.cert_file), str(mqtt.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --ca-file/--cert-file/--key-file: {exc}") from None
    return context


def mqtt_settings(mqtt: MqttOptions) -> MqttSettings:
    """The CP connections' MQTT settings."""
    address = mqtt.address
    if address is None:
        raise ConfigError(
            "no MQTT broker configured (--iot-endpoint or --mqtt-host); "
            "the development stack is gateway.devstack.run_dev_stack"
        )
    return MqttSettings(
        host=address[0],
        port=address[1],
        keepalive=mqtt.keepalive,
        username=mqtt.username,
        password=mqtt.password,
        ssl_context=mqtt_ssl_context(mqtt),
        connect_rate=mqtt.connect_rate,
        connect_burst=mqtt.connect_burst,
        connect_max_wait=mqtt.connect_max_wait,
        max_backlog_bytes=mqtt.max_backlog_bytes,
    )


def embedded_processor_config(config: GatewayConfig) -> ProcessorConfig | None:
    """The standalone processor's options as the in-process processor has them: its authorizer
    (``--processor-authorization``, the table at ``--iot-api-url``) and its command API; None
    without ``--processor`` (the processor's modules are then never imported)."""
    processing, registry = config.processing, config.registry
    if not processing.run:
        if processing.authorization != "accept-all" or processing.http_port is not None:
            raise ConfigError(
                "--processor-authorization and --processor-http-port are for the in-process "
                "processor: give --processor (the development stack runs it by default)"
            )
        return None
    from .processor.config import ProcessorConfig

    return ProcessorConfig(
        iot_api_url=registry.iot_api_url,
        region=registry.region,
        heartbeat_interval=processing.heartbeat_interval,
        authorization=processing.authorization,
        id_token_table=processing.id_token_table,
        http_port=processing.http_port,
    )


@dataclass
class RunningGateway:
    """What :func:`run_gateway` reports through ``task_status.started()``."""

    url: str
    port: int
    bridge: Bridge
    driver: MqttDriver
    processor: Processor | None
    loop: LoopMonitor
    watch: RegistryWatch | None = None
    command_api_port: int | None = None  # the in-process processor's HTTP command API
    metrics_port: int | None = None  # /metrics, /healthz, /readyz (--metrics-port)


async def run_gateway(
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[RunningGateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled.  Reports a :class:`RunningGateway` once serving.

    ``config`` must name a broker (ConfigError otherwise): the development stack without one
    is gateway.devstack's.
    """
    server, tls, limits = config.server, config.tls, config.limits
    mqtt, registry_options, processing = config.mqtt, config.registry, config.processing
    processor_config = embedded_processor_config(config)
    async with AsyncExitStack() as stack:
        settings = mqtt_settings(mqtt)
        aws = AwsSettings(
            region=registry_options.region, iot_endpoint_url=registry_options.iot_api_url
        )
        iot_data: Any = None
        if processor_config is None:
            operations: tuple[str, ...] = GATEWAY_IOT_OPERATIONS
            if registry_options.prefetch:
                operations = (*operations, "ListThings")
            iot_client = await trio.to_thread.run_sync(
                partial(make_client, aws, "iot", operations=operations)
            )
        else:
            iot_client = await trio.to_thread.run_sync(make_client, aws, "iot")
            iot_data = await trio.to_thread.run_sync(make_client, aws, "iot-data")
            stack.callback(iot_data.close)
        stack.callback(iot_client.close)
        driver = await stack.enter_async_context(open_mqtt_driver(settings))
        # Its own driver, so that ``driver.link_count`` counts charge points only.
        events_driver = await stack.enter_async_context(open_mqtt_driver(settings))
        processor_driver = driver
        if processing.run and processing.mqtt_username is not None:
            processor_driver = await stack.enter_async_context(
                open_mqtt_driver(
                    replace(
                        settings,
                        username=processing.mqtt_username,
                        password=processing.mqtt_password,
                        max_backlog_bytes=PROCESSOR_BACKLOG_BYTES,
                    )
                )
            )
        registry = Registry(
            iot_client,
            ttl=registry_options.ttl,
            negative_ttl=registry_options.negative_ttl,
            rate=registry_options.rate,
        )
        bridge = Bridge(
            driver=driver,
            registry=registry,
            sessions=LocalSessions(),
            settings=SessionSettings(
                subprotocols=server.subprotocols,
                base_path=server.base_path,
                ping_interval=limits.ping_interval,
                pong_timeout=limits.pong_timeout,
                max_connections=limits.max_connections,
                max_message_rate=limits.max_message_rate,
                max_message_burst=limits.max_message_burst,
                tls=tls.secure_transport,
                tls_direct=tls.direct,
                min_security_profile=tls.min_security_profile,
                cpo_name=tls.cpo_name if tls.client_ca_file is not None else None,
                cert_binding=tls.cert_binding,
                drain_timeout=limits.drain_timeout,
                close_timeout=limits.close_timeout,
                call_timeout=limits.call_timeout,
                reconnect_rate=limits.cp_reconnect_rate,
                reconnect_burst=limits.cp_reconnect_burst,
            ),
        )

        ssl_context = server_ssl_context(tls)
        loop = LoopMonitor()
        runtime = config.runtime
        async with trio.open_nursery() as nursery:
            await nursery.start(loop.run)
            await nursery.start(bridge.run_call_timeouts)
            await nursery.start(bridge.keepalive.run)
            watch = RegistryWatch(bridge, events_driver)
            await nursery.start(watch.run)
            if registry_options.prefetch:
                nursery.start_soon(registry.prefetch, name="registry prefetch")
            await nursery.start(GcPolicy(runtime.full_interval, runtime.young_interval).run)
            processor = None
            commands: CommandService | None = None
            command_api_port = None
            if processor_config is not None:
                from .processor import Processor, ProcessorSettings
                from .processor.command_cli import command_settings, start_command_api
                from .processor.command_service import CommandService
                from .processor.idtokens import open_authorizer

                # Closed by the exit stack after the nursery: the processor is done with it then.
                authorizer = await stack.enter_async_context(open_authorizer(processor_config))
                processor = Processor(
                    processor_driver,
                    iot_data,
                    ProcessorSettings(heartbeat_interval=processing.heartbeat_interval),
                    authorizer=authorizer,
                )
                # Supervised: a processor crash after it started is logged and restarted, never ends the gateway.
                await nursery.start(processor.run_supervised)
                if processor_config.http_port is not None:
                    commands = CommandService(
                        processor_driver, iot_client, iot_data, command_settings(processor_config)
                    )
                    command_api_port = await nursery.start(
                        partial(
                            start_command_api,
                            processor_config,
                            processor_driver,
                            iot_client,
                            iot_data,
                            service=commands,
                        )
                    )
            listener: GatewayWebSocketServer = await nursery.start(
                partial(
                    serve,
                    bridge.handle,
                    server.host,
                    server.port,
                    ssl_context,
                    max_message_size=server.max_frame_size,
                    connect_timeout=server.handshake_timeout,
                    disconnect_timeout=limits.close_timeout,
                    reuse_port=runtime.workers > 1,
                )
            )
            metrics_port = None
            if config.metrics.port is not None:
                metrics_port = await nursery.start(
                    partial(
                        start_health,
                        config,
                        bridge,
                        driver,
                        loop,
                        watch,
                        events_driver,
                        processor=processor,
                        commands=commands,
                    )
                )
            port = listener.port
            url = f"{'wss' if ssl_context else 'ws'}://{server.host}:{port}{server.base_path}"
            log.info(
                "gateway: serving OCPP-J (%s) on %s/<charge-point-id>; MQTT %s://%s:%d%s",
                ", ".join(server.subprotocols),
                url,
                "mqtts" if settings.ssl_context else "mqtt",
                settings.host,
                settings.port,
                f"; registry API {registry_options.iot_api_url}"
                if registry_options.iot_api_url
                else "; registry: AWS IoT",
            )
            task_status.started(
                RunningGateway(
                    url,
                    port,
                    bridge,
                    driver,
                    processor,
                    loop,
                    watch=watch,
                    command_api_port=command_api_port,
                    metrics_port=metrics_port,
                )
            )


async def start_health(
    config: GatewayConfig,
    bridge: Bridge,
    driver: MqttDriver,
    loop: LoopMonitor,
    watch: RegistryWatch,
    events_driver: MqttDriver,
    *,
    processor: Processor | None = None,
    commands: CommandService | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``--metrics-port``: the gateway's metrics and health endpoints (gateway/health.py).

    With the processor in this process (``--processor``), its figures (``ocpp_processor_*``)
    are in the same registry: one scrape shows both.
    """
    # Imported only when asked for: a gateway without --metrics-port never loads prometheus_client.
    from .health import Readiness, serve_health
    from .metrics import GatewayCollector, gateway_registry

    metrics = config.metrics
    assert metrics.port is not None
    registry = gateway_registry(GatewayCollector(bridge, driver, loop, watch))
    if processor is not None:
        from .processor.metrics import ProcessorCollector

        registry.register(ProcessorCollector(processor, commands))
    await serve_health(
        registry,
        Readiness(bridge, watch, events_driver).reason,
        host=metrics.host,
        port=metrics.port,
        task_status=task_status,
    )
