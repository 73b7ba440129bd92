"""The frozen sub-configurations that code receives from :class:`gateway.config.GatewayConfig`.

Each holds one group of options (``config.tls``, ``config.mqtt``...), built by
:func:`gateway.options.section`; the options' defaults, help and checks are declared
once, in gateway/config.py.  Fields are named like the options without the group's
prefix (``mqtt_host`` -> ``MqttOptions.host``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host[:port]`` of an AWS IoT data endpoint -> (host, port); port 8883 by default."""
    host, colon, port = endpoint.rpartition(":")
    if not colon:
        return endpoint, 8883
    return host, int(port)


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    base_path: str
    subprotocols: tuple[str, ...]
    max_frame_size: int
    handshake_timeout: float


@dataclass(frozen=True)
class TlsOptions:
    certfile: Path | None
    keyfile: Path | None
    terminated_upstream: bool
    client_ca_file: Path | None
    cpo_name: str | None
    cert_binding: str
    min_security_profile: int

    @property
    def direct(self) -> bool:
        """The gateway terminates TLS itself (it serves wss://, it sees client certificates)."""
        return self.certfile is not None

    @property
    def secure_transport(self) -> bool:
        """Connections count as TLS for security profile 2."""
        return self.direct or self.terminated_upstream


@dataclass(frozen=True)
class LimitsOptions:
    max_connections: int
    max_message_rate: float
    max_message_burst: int
    cp_reconnect_rate: float
    cp_reconnect_burst: int
    ping_interval: float
    pong_timeout: float
    call_timeout: float
    close_timeout: float
    drain_timeout: float


@dataclass(frozen=True)
class MqttOptions:
    max_backlog_bytes: int
    iot_endpoint: str | None
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    host: str | None
    port: int
    require_broker: bool
    username: str | None
    password: str | None = field(repr=False)
    password_file: Path | None
    keepalive: int
    connect_rate: float
    connect_burst: int
    connect_max_wait: float

    @property
    def embedded(self) -> bool:
        return self.host is None and self.iot_endpoint is None

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) of the broker; None: none configured."""
        if self.iot_endpoint is not None:
            return split_endpoint(self.iot_endpoint)
        if self.host is not None:
            return self.host, self.port
        return None


@dataclass(frozen=True)
class RegistryOptions:
    iot_api_url: str | None
    region: str
    ttl: float
    negative_ttl: float
    rate: float
    prefetch: bool


@dataclass(frozen=True)
class ProcessorOptions:
    processor: bool | None  # None: only with the development stack, which sets it
    mqtt_username: str | None
    mqtt_password: str | None = field(repr=False)
    mqtt_password_file: Path | None
    heartbeat_interval: int
    authorization: str
    id_token_table: str
    http_port: int | None

    @property
    def run(self) -> bool:
        return bool(self.processor)


@dataclass(frozen=True)
class MetricsOptions:
    port: int | None  # None: no metrics endpoint
    host: str


@dataclass(frozen=True)
class DevStackOptions:
    fakeiot_api_port: int
    data_dir: Path


@dataclass(frozen=True)
class RuntimeOptions:
    full_interval: float
    young_interval: float
    workers: int
    log_level: str
    log_format: str
