"""Wiring: the WebSocket server, the MQTT driver, the registry, and optionally
an embedded fakeiot and the message processor, all in one Trio nursery."""

from __future__ import annotations

import logging
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from functools import partial

import trio

from fakeiot.policy import BACKEND_USERNAME, GATEWAY_USERNAME
from fakeiot.service import FakeIot, FakeIotConfig, running_fakeiot

from .aws import AwsSettings, make_clients
from .config import GatewayConfig
from .errors import ConfigError
from .gcpolicy import GcPolicy
from .looplag import LoopMonitor
from .mqtt_link import MqttDriver, MqttSettings, open_mqtt_driver
from .processor import Processor, ProcessorSettings
from .registry import Registry
from .revocation import RegistryWatch
from .session import Bridge, LocalSessions, SessionSettings
from .websocket import GatewayWebSocketServer, serve

log = logging.getLogger(__name__)


def server_ssl_context(config: GatewayConfig) -> ssl.SSLContext | None:
    """TLS 1.2+ for wss:// when a certificate is configured."""
    if config.certfile is None or config.keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(config.certfile), str(config.keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --certfile/--keyfile: {exc}") from None
    if config.client_ca_file is not None:
        # Profile 3 CPs send a certificate; profile 1/2 CPs on the same port do not: optional here,
        # required per CP by its registered profile (session.py).
        try:
            context.load_verify_locations(cafile=str(config.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --client-ca-file: {exc}") from None
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def mqtt_ssl_context(config: GatewayConfig) -> ssl.SSLContext | None:
    """Mutual TLS 1.2+ to the IoT endpoint with the gateway's client certificate."""
    if config.iot_endpoint is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        assert config.cert_file is not None and config.key_file is not None
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --ca-file/--cert-file/--key-file: {exc}") from None
    return context


@dataclass
class RunningGateway:
    """What :func:`run_gateway` reports through ``task_status.started()``."""

    url: str
    port: int
    bridge: Bridge
    driver: MqttDriver
    fakeiot: FakeIot | None
    processor: Processor | None
    loop: LoopMonitor
    watch: RegistryWatch | None = None


async def run_gateway(
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[RunningGateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled.  Reports a :class:`RunningGateway` once serving."""
    async with AsyncExitStack() as stack:
        iot: FakeIot | None = None
        address, api_url = config.broker_address, config.iot_api_url
        backend_user, backend_password = (
            config.processor_mqtt_username,
            config.processor_mqtt_password,
        )
        device_user, device_password = config.mqtt_username, config.mqtt_password
        mqtt_tls = mqtt_ssl_context(config)
        if config.embedded:
            iot = await stack.enter_async_context(
                running_fakeiot(
                    FakeIotConfig(
                        host="127.0.0.1",
                        mqtt_port=config.mqtt_port,
                        api_port=config.fakeiot_api_port,
                        data_dir=config.data_dir,
                        region=config.region,
                    )
                )
            )
            address, api_url = ("127.0.0.1", iot.mqtt_port), iot.api_url
            backend_user, backend_password = BACKEND_USERNAME, iot.backend_password
            device_user, device_password = (
                GATEWAY_USERNAME,
                iot.gateway_password,
            )  # the gateway's principal
        assert address is not None
        mqtt_host, mqtt_port = address
        iot_client, iot_data = await trio.to_thread.run_sync(
            make_clients, AwsSettings(region=config.region, iot_endpoint_url=api_url)
        )
        stack.callback(iot_client.close)
        stack.callback(iot_data.close)
        settings = MqttSettings(
            host=mqtt_host,
            port=mqtt_port,
            keepalive=config.mqtt_keepalive,
            username=device_user,
            password=device_password,
            ssl_context=mqtt_tls,
            connect_rate=config.mqtt_connect_rate,
            connect_burst=config.mqtt_connect_burst,
            connect_max_wait=config.mqtt_connect_max_wait,
            max_backlog_bytes=config.max_backlog_bytes,
        )
        driver = await stack.enter_async_context(open_mqtt_driver(settings))
        # Its own driver, so that ``driver.link_count`` counts charge points only.
        events_driver = await stack.enter_async_context(open_mqtt_driver(settings))
        processor_driver = driver
        if config.run_processor and backend_user is not None:
            processor_driver = await stack.enter_async_context(
                # The processor consumes every CP's CALLs: a far larger backlog than one CP's.
                open_mqtt_driver(
                    replace(
                        settings,
                        username=backend_user,
                        password=backend_password,
                        max_backlog_bytes=64 << 20,
                    )
                )
            )
        registry = Registry(
            iot_client,
            ttl=config.registry_ttl,
            negative_ttl=config.registry_negative_ttl,
            rate=config.registry_rate,
        )
        bridge = Bridge(
            driver=driver,
            registry=registry,
            sessions=LocalSessions(),
            settings=SessionSettings(
                subprotocols=config.subprotocols,
                base_path=config.base_path,
                ping_interval=config.ping_interval,
                pong_timeout=config.pong_timeout,
                max_connections=config.max_connections,
                max_message_rate=config.max_message_rate,
                max_message_burst=config.max_message_burst,
                tls=config.certfile is not None or config.tls_terminated_upstream,
                tls_direct=config.certfile is not None,
                min_security_profile=config.min_security_profile,
                cpo_name=config.cpo_name if config.client_ca_file is not None else None,
                cert_binding=config.cert_binding,
                drain_timeout=config.drain_timeout,
                close_timeout=config.close_timeout,
                call_timeout=config.call_timeout,
                reconnect_rate=config.cp_reconnect_rate,
                reconnect_burst=config.cp_reconnect_burst,
            ),
        )

        ssl_context = server_ssl_context(config)
        loop = LoopMonitor()
        async with trio.open_nursery() as nursery:
            await nursery.start(loop.run)
            await nursery.start(bridge.run_call_timeouts)
            watch = RegistryWatch(bridge, events_driver)
            await nursery.start(watch.run)
            await nursery.start(GcPolicy(config.gc_full_interval, config.gc_young_interval).run)
            processor = None
            if config.run_processor:
                processor = Processor(
                    processor_driver,
                    iot_data,
                    ProcessorSettings(heartbeat_interval=config.heartbeat_interval),
                )
                # Supervised: a processor crash after it started is logged and restarted, never ends the gateway.
                await nursery.start(processor.run_supervised)
            server: GatewayWebSocketServer = await nursery.start(
                partial(
                    serve,
                    bridge.handle,
                    config.host,
                    config.port,
                    ssl_context,
                    max_message_size=config.max_frame_size,
                    connect_timeout=config.handshake_timeout,
                    disconnect_timeout=config.close_timeout,
                )
            )
            port = server.port
            url = f"{'wss' if ssl_context else 'ws'}://{config.host}:{port}{config.base_path}"
            log.info(
                "gateway: serving OCPP-J (%s) on %s/<charge-point-id>; MQTT %s://%s:%d%s",
                ", ".join(config.subprotocols),
                url,
                "mqtts" if mqtt_tls else "mqtt",
                mqtt_host,
                mqtt_port,
                f"; registry API {api_url}" if api_url else "; registry: AWS IoT",
            )
            task_status.started(
                RunningGateway(url, port, bridge, driver, iot, processor, loop, watch=watch)
            )
