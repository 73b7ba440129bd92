"""The gateway's options, each declared once (see :mod:`gateway.options` for the machinery).

Each field of :class:`GatewayConfig` declared with :func:`~gateway.options.option` is a
command-line flag and a ``GATEWAY_...`` environment variable of the same name
(``--mqtt-host`` / ``GATEWAY_MQTT_HOST``).  Code receives the frozen sub-configurations
(``config.server``, ``config.tls``, ``config.mqtt``, ``config.limits``,
``config.registry``, ``config.processing``, ``config.devstack``, ``config.runtime``)
rather than loose fields.  Reading them from flags and the environment:
:mod:`gateway.config`.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import options
from .client_certs import BINDINGS
from .errors import ConfigError
from .options import option
from .subconfigs import (
    DevStackOptions,
    LimitsOptions,
    MetricsOptions,
    MqttOptions,
    ProcessorOptions,
    RegistryOptions,
    RuntimeOptions,
    ServerOptions,
    TlsOptions,
    split_endpoint,
)
from .subprotocol import DEFAULT_SUBPROTOCOLS, OCPP_VERSIONS

PREFIX = "GATEWAY_"
DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "fakeiot"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")

# Headings of the option groups, in the order --help and docs/configuration.md show them.
GROUPS = {
    "server": "WebSocket server",
    "tls": "TLS and charge point security",
    "limits": "Limits and timeouts",
    "mqtt": "MQTT broker",
    "registry": "Thing registry",
    "processor": "In-process message processor",
    "metrics": "Metrics and health (docs/operations.md)",
    "devstack": "Development stack (no broker configured)",
    "runtime": "Process",
}


def _base_path(text: str) -> str:
    return text.rstrip("/")


def _check_base_path(path: str) -> str | None:
    if path and (not path.startswith("/") or any(c in path for c in "?#%+ ") or "//" in path):
        return f"must look like /ocpp (a path starting with '/'), not {path!r}"
    return None


def _check_subprotocols(offered: tuple[str, ...]) -> str | None:
    unknown = [s for s in offered if s not in OCPP_VERSIONS]
    if unknown or not offered:
        return f"has unknown {unknown or 'empty list'}; known: {', '.join(OCPP_VERSIONS)}"
    return None


def _check_endpoint(endpoint: str) -> str | None:
    try:
        host, port = split_endpoint(endpoint)
    except ValueError:
        host, port = "", 0
    if not host or not 0 < port <= 65535:
        return f"must be HOST[:PORT], not {endpoint!r}"
    return None


def cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's cpuset, taskset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _parse_workers(text: str) -> int:
    if text.strip().lower() == "auto":
        return cores()
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"expected a number or auto, not {text!r}") from None


def _check_workers(workers: int) -> str | None:
    if workers > 1 and not sys.platform.startswith("linux"):
        return "above 1 needs Linux (SO_REUSEPORT spreads connections over the workers only there)"
    return None


# The processor's --authorization choices, for it (gateway.processor.config) and the in-process one.
PROCESSOR_AUTHORIZERS = ("accept-all", "id-token-table")
DEFAULT_ID_TOKEN_TABLE = "ocppIdTokens"


def check_table_name(name: str) -> str | None:
    """A DynamoDB table name (the processor's --id-token-table too)."""
    if re.fullmatch(r"[a-zA-Z0-9_.-]{3,255}", name) is None:
        return "must be a DynamoDB table name: 3-255 characters of [a-zA-Z0-9_.-]"
    return None


def _check_url(url: str) -> str | None:
    if not url.startswith(("http://", "https://")):
        return f"must be a URL such as http://127.0.0.1:8090, not {url!r}"
    return None


@dataclass(frozen=True)
class GatewayConfig:
    """Every option of ``python -m gateway``; build it with :func:`load_config`."""

    # server
    host: str = option("127.0.0.1", "address the WebSocket server binds", group="server")
    port: int = option(8080, "WebSocket port (0: any free port)", group="server", min=0, max=65535)
    base_path: str = option(
        "",
        "path before the CP id in the WebSocket URL, e.g. /ocpp for ws://host/ocpp/<cp-id>; "
        "any other path is refused (1008)",
        group="server",
        parse=_base_path,
        check=_check_base_path,
    )
    subprotocols: tuple[str, ...] = option(
        DEFAULT_SUBPROTOCOLS,
        f"OCPP subprotocols offered, in order of preference (known: {', '.join(OCPP_VERSIONS)})",
        group="server",
        check=_check_subprotocols,
        metavar="LIST",
    )
    max_frame_size: int = option(
        128 * 1024,
        "largest WebSocket message accepted, in bytes (larger: close 1009)",
        group="server",
        min=1024,
    )
    handshake_timeout: float = option(
        10.0,
        "seconds a client has to send its WebSocket upgrade request",
        group="server",
        above=0,
    )
    # tls
    certfile: Path | None = option(
        None,
        "serve wss:// (TLS 1.2+) with this PEM certificate chain (OCPP security profile 2)",
        group="tls",
        is_file=True,
    )
    keyfile: Path | None = option(None, "private key of --certfile", group="tls", is_file=True)
    tls_terminated_upstream: bool = option(
        False,
        "plain ws:// connections arrive through a TLS-terminating load balancer: "
        "treat them as TLS for security profile 2",
        group="tls",
    )
    client_ca_file: Path | None = option(
        None,
        "security profile 3: ask wss:// clients for a certificate and verify it against these CAs (PEM)",
        group="tls",
        is_file=True,
    )
    cpo_name: str | None = option(
        None,
        "security profile 3: the O of every charge point certificate must contain this name",
        group="tls",
    )
    cert_binding: str = option(
        "cn-or-san",
        "security profile 3: where the certificate must name the CP id of the URL",
        group="tls",
        choices=BINDINGS,
    )
    min_security_profile: int = option(
        0,
        "refuse charge points registered with a lower security profile (1: every CP needs a password)",
        group="tls",
        choices=(0, 1, 2, 3),
    )
    # limits
    max_connections: int = option(
        20_000,
        "CP connections this process holds at most; more are closed with 1013 (try again later)",
        group="limits",
        min=1,
    )
    max_message_rate: float = option(
        20.0,
        "messages per second a CP may send on average (0: no limit); beyond: close 1008",
        group="limits",
        min=0,
    )
    max_message_burst: int = option(
        40, "messages a CP may send at once above the average rate", group="limits", min=1
    )
    cp_reconnect_rate: float = option(
        1.0,
        "connections per second accepted per CP id (AWS IoT: one MQTT CONNECT/s per client id); "
        "faster: close 1013 (0: no limit)",
        group="limits",
        min=0,
    )
    cp_reconnect_burst: int = option(
        3, "connections of one CP id allowed at once above that rate", group="limits", min=1
    )
    ping_interval: float = option(
        60.0, "seconds between WebSocket pings to each CP (0: no pings)", group="limits", min=0
    )
    pong_timeout: float = option(
        30.0,
        "a CP that does not answer a ping within this many seconds is closed (1011)",
        group="limits",
        above=0,
    )
    call_timeout: float = option(
        30.0,
        "a CP's CALL that the CSMS has not answered within this many seconds is answered by the "
        "gateway with CALLERROR InternalError (0: never)",
        group="limits",
        min=0,
        note="(0: never)",
    )
    close_timeout: float = option(
        5.0,
        "seconds a closing or refused connection waits for the CP's close frame before the TCP "
        "connection is aborted",
        group="limits",
        above=0,
    )
    drain_timeout: float = option(
        10.0,
        "on SIGTERM/SIGINT: seconds to wait for CPs to acknowledge the 1001 close before exiting",
        group="limits",
        min=0,
    )
    max_backlog_bytes: int = option(
        1024 * 1024,
        "bytes from <cp-id>/out buffered for a CP that does not read them; beyond: close 1008 "
        "(at least --max-frame-size)",
        group="mqtt",
    )
    # mqtt
    iot_endpoint: str | None = option(
        None,
        "AWS IoT Core data endpoint HOST[:PORT] (aws iot describe-endpoint --endpoint-type iot:Data-ATS); "
        "each CP's MQTT connection uses TLS 1.2+ with --cert-file/--key-file; port 8883 by default",
        group="mqtt",
        check=_check_endpoint,
    )
    ca_file: Path | None = option(
        None,
        "PEM CA bundle that signs the broker's certificate (AWS: AmazonRootCA1.pem); "
        "unset: the system CAs",
        group="mqtt",
        is_file=True,
    )
    cert_file: Path | None = option(
        None, "the gateway's X.509 client certificate (PEM)", group="mqtt", is_file=True
    )
    key_file: Path | None = option(
        None, "private key of --cert-file (PEM)", group="mqtt", is_file=True
    )
    mqtt_host: str | None = option(
        None,
        "plain-TCP MQTT broker host (Mosquitto, fakeiot...); with neither this nor --iot-endpoint "
        "the embedded development stack runs",
        group="mqtt",
    )
    mqtt_port: int = option(
        1883, "MQTT broker port (also the embedded fakeiot's port)", group="mqtt", min=0, max=65535
    )
    require_broker: bool = option(
        False,
        "refuse to start without --iot-endpoint or --mqtt-host instead of running the embedded "
        "development stack (the container sets it)",
        group="mqtt",
    )
    mqtt_username: str | None = option(
        None,
        "MQTT user name of every CP connection (a standalone fakeiot: fakeiot-gateway; the "
        "development stack fills it in)",
        group="mqtt",
    )
    mqtt_password: str | None = option(
        None,
        "its password; prefer the environment variable to the flag",
        group="mqtt",
        secret=True,
    )
    mqtt_password_file: Path | None = option(
        None,
        "read that password from this file (fakeiot writes <data-dir>/gateway-password)",
        group="mqtt",
    )
    mqtt_keepalive: int = option(
        60, "MQTT keepalive of each CP's connection, seconds", group="mqtt", min=0
    )
    mqtt_connect_rate: float = option(
        100.0,
        "new MQTT connections per second from this process (AWS IoT limits connects per second per "
        "account); a reconnect storm waits its turn instead of failing (0: no limit)",
        group="mqtt",
        min=0,
    )
    mqtt_connect_burst: int = option(
        100, "MQTT connections allowed at once above that rate", group="mqtt", min=1
    )
    mqtt_connect_max_wait: float = option(
        120.0,
        "a CP whose MQTT connection would wait longer for its turn is closed with 1013 (try again later)",
        group="mqtt",
        min=0,
    )
    # registry
    iot_api_url: str | None = option(
        None,
        "endpoint of the IoT registry/shadow API (a standalone fakeiot's URL); unset: AWS IoT",
        group="registry",
        check=_check_url,
    )
    region: str = option("us-east-1", "AWS region for boto3", group="registry")
    registry_ttl: float = option(
        60.0, "how long a registered Thing is cached, seconds", group="registry", min=0
    )
    registry_negative_ttl: float = option(
        2.0, "how long an unknown Thing is cached, seconds", group="registry", min=0
    )
    registry_rate: float = option(
        200.0,
        "DescribeThing calls per second from this process (AWS: about 350/s per account, shared by "
        "every gateway); more wait up to 10 s, then the CP is closed with 1013",
        group="registry",
        above=0,
    )
    registry_prefetch: bool = option(
        False,
        "at start, list every Thing (ListThings, 250 a page) into the registry cache, so that the "
        "CPs reconnecting after a restart need no DescribeThing each; needs iot:ListThings",
        group="registry",
    )
    # processor
    processor: bool | None = option(
        None,
        "run the message processor in this process",
        group="processor",
        negative_flag="--no-processor",
        default_text="only with the development stack",
    )
    processor_mqtt_username: str | None = option(
        None,
        "MQTT user name of the in-process message processor (fakeiot's backend role: fakeiot-backend)",
        group="processor",
    )
    processor_mqtt_password: str | None = option(
        None,
        "its password; prefer the environment variable to the flag",
        group="processor",
        secret=True,
    )
    processor_mqtt_password_file: Path | None = option(
        None,
        "read that password from this file (fakeiot writes <data-dir>/backend-password)",
        group="processor",
    )
    heartbeat_interval: int = option(
        10,
        "interval the processor returns in BootNotification responses, seconds",
        group="processor",
        min=1,
    )
    processor_authorization: str = option(
        "accept-all",
        "who may charge, as the in-process processor decides: accept-all (every id token "
        "Accepted: development only) or id-token-table (the DynamoDB table "
        "--processor-id-token-table at --iot-api-url, AWS when unset; the development stack "
        "creates it on its fakeiot); see docs/authorization.md",
        group="processor",
        choices=PROCESSOR_AUTHORIZERS,
    )
    processor_id_token_table: str = option(
        DEFAULT_ID_TOKEN_TABLE,
        "DynamoDB table of id tokens for --processor-authorization id-token-table",
        group="processor",
        check=check_table_name,
    )
    processor_http_port: int | None = option(
        None,
        "serve the command API (POST /charge-points/{id}/calls/{action}, no authentication) on "
        "127.0.0.1 at this port; unset: none (0: any free port); see docs/commands.md",
        group="processor",
        min=0,
        max=65535,
    )
    # metrics
    metrics_port: int | None = option(
        None,
        "serve GET /metrics (Prometheus), /healthz and /readyz on this port; unset: none (0: any "
        "free port); with --workers N, worker i serves on this port + i - 1",
        group="metrics",
        min=0,
        max=65535,
    )
    metrics_host: str = option(
        "127.0.0.1",
        "address the metrics port binds (no authentication: loopback, or a network only "
        "Prometheus and the load balancer reach)",
        group="metrics",
    )
    # devstack
    fakeiot_api_port: int = option(
        8090, "HTTP API port of the embedded fakeiot", group="devstack", min=0, max=65535
    )
    data_dir: Path = option(
        DEFAULT_DATA_DIR,
        "where the embedded fakeiot keeps its registry and shadows",
        group="devstack",
        default_text="~/.local/share/fakeiot",
    )
    # runtime
    gc_full_interval: float = option(
        300.0,
        "seconds between full garbage collections, which pause every CP for up to a second at 10,000 "
        "CPs; 0: CPython's own full collections (frequent at that size)",
        group="runtime",
        min=0,
        note="(0: CPython's default)",
    )
    gc_young_interval: float = option(
        0.1,
        "seconds between young garbage collections, which keeps each one to a few milliseconds "
        "under steady traffic; 0: only when CPython's allocation counter triggers one",
        group="runtime",
        min=0,
        note="(0: CPython's allocation counter only)",
    )
    workers: int = option(
        1,
        "processes serving the port, each with its own MQTT connections and one core's worth of "
        "work (auto: one per core this process may use); above 1 the process supervises them: "
        "Linux only, needs a broker, and the in-process processor runs elsewhere "
        "(see docs/deploying.md)",
        group="runtime",
        parse=_parse_workers,
        check=_check_workers,
        min=1,
        max=1024,
        metavar="N|auto",
    )
    log_level: str = option("INFO", "DEBUG logs every frame", group="runtime", choices=LOG_LEVELS)
    log_format: str = option(
        "text",
        "text, or json: one JSON object a line (time, level, logger, message, cp_id, worker, exc; "
        "see docs/operations.md)",
        group="runtime",
        choices=LOG_FORMATS,
    )
    # Not an option: the options set by a flag or a variable (load_config fills it in).
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def server(self) -> ServerOptions:
        return options.section(self, ServerOptions, "server")

    @property
    def tls(self) -> TlsOptions:
        return options.section(self, TlsOptions, "tls", "tls_")

    @property
    def limits(self) -> LimitsOptions:
        return options.section(self, LimitsOptions, "limits")

    @property
    def mqtt(self) -> MqttOptions:
        return options.section(self, MqttOptions, "mqtt", "mqtt_")

    @property
    def registry(self) -> RegistryOptions:
        return options.section(self, RegistryOptions, "registry", "registry_")

    @property
    def processing(self) -> ProcessorOptions:
        """The in-process message processor's options."""
        return options.section(self, ProcessorOptions, "processor", "processor_")

    @property
    def metrics(self) -> MetricsOptions:
        return options.section(self, MetricsOptions, "metrics", "metrics_")

    @property
    def devstack(self) -> DevStackOptions:
        return options.section(self, DevStackOptions, "devstack")

    @property
    def runtime(self) -> RuntimeOptions:
        return options.section(self, RuntimeOptions, "runtime", "gc_")

    @property
    def embedded(self) -> bool:
        """No broker configured: only the development stack (gateway.devstack) can run this."""
        return self.mqtt.embedded
