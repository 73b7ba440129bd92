"""The gateway's configuration: one frozen dataclass from flags and environment.

Every option is a command-line flag and a ``GATEWAY_...`` environment
variable of the same name (``--mqtt-host`` / ``GATEWAY_MQTT_HOST``); a flag
wins over the variable, the variable over the default.  No other module
reads the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .client_certs import BINDINGS
from .errors import ConfigError
from .subprotocol import DEFAULT_SUBPROTOCOLS, OCPP_VERSIONS

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "fakeiot"


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    base_path: str = ""  # CPs connect to <base_path>/<cp-id>; "" : /<cp-id>
    subprotocols: tuple[str, ...] = DEFAULT_SUBPROTOCOLS
    max_frame_size: int = 128 * 1024
    ping_interval: float = 60.0
    pong_timeout: float = 30.0
    handshake_timeout: float = 10.0
    max_connections: int = 20_000
    max_message_rate: float = 20.0
    max_message_burst: int = 40
    certfile: Path | None = None
    keyfile: Path | None = None
    tls_terminated_upstream: bool = False
    client_ca_file: Path | None = (
        None  # CAs of charge point client certificates (security profile 3)
    )
    cpo_name: str | None = None
    cert_binding: str = "cn-or-san"
    min_security_profile: int = 0
    mqtt_host: str | None = None  # None (and no iot_endpoint): start an embedded fakeiot
    mqtt_port: int = 1883
    mqtt_keepalive: int = 60
    mqtt_username: str | None = (
        None  # the CP connections' MQTT credential (fakeiot: fakeiot-gateway)
    )
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_connect_rate: float = 100.0
    mqtt_connect_burst: int = 100
    mqtt_connect_max_wait: float = 120.0
    drain_timeout: float = 10.0
    close_timeout: float = 5.0
    call_timeout: float = 30.0
    cp_reconnect_rate: float = 1.0
    cp_reconnect_burst: int = 3
    max_backlog_bytes: int = 1024 * 1024
    gc_full_interval: float = 300.0  # 0: CPython's own full-collection policy (see gcpolicy.py)
    gc_young_interval: float = (
        0.1  # 0: young collections only when CPython's allocation counter says so
    )
    iot_endpoint: str | None = None  # host[:port] of AWS IoT Core (MQTT over mutual TLS, port 8883)
    ca_file: Path | None = None  # CAs that sign the broker's certificate (AWS: AmazonRootCA1.pem)
    cert_file: Path | None = None  # the gateway's X.509 client certificate
    key_file: Path | None = None
    processor_mqtt_username: str | None = None
    processor_mqtt_password: str | None = field(default=None, repr=False)
    iot_api_url: str | None = None
    region: str = "us-east-1"
    fakeiot_api_port: int = 8090
    data_dir: Path = field(default=DEFAULT_DATA_DIR)
    processor: bool | None = None  # None: only with the embedded fakeiot
    heartbeat_interval: int = 10
    registry_ttl: float = 60.0
    registry_negative_ttl: float = 2.0
    registry_rate: float = 200.0
    log_level: str = "INFO"

    @property
    def embedded(self) -> bool:
        return self.mqtt_host is None and self.iot_endpoint is None

    @property
    def broker_address(self) -> tuple[str, int] | None:
        """(host, port) of an external broker, or None for the embedded fakeiot."""
        if self.iot_endpoint is not None:
            host, _, port = (
                self.iot_endpoint.rpartition(":")
                if ":" in self.iot_endpoint
                else (self.iot_endpoint, "", "")
            )
            return host, int(port) if port else 8883
        if self.mqtt_host is not None:
            return self.mqtt_host, self.mqtt_port
        return None

    @property
    def run_processor(self) -> bool:
        return self.embedded if self.processor is None else self.processor


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get("GATEWAY_" + name.upper().replace("-", "_"))
    return value if value not in (None, "") else None


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    d = GatewayConfig()

    def default(name: str, fallback: object) -> object:
        value = _env(environ, name)
        return value if value is not None else fallback

    p = argparse.ArgumentParser(
        prog="python -m gateway",
        usage="%(prog)s [options]   (python -m gateway --help lists them)",
        description=(
            "OCPP-J WebSocket to MQTT gateway.  Each option can also be set with the environment variable "
            "GATEWAY_<OPTION> (e.g. GATEWAY_MQTT_HOST).  Without --mqtt-host an embedded fakeiot "
            "(MQTT broker, Thing registry, shadows) and the message processor run in this process."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--host", default=default("host", d.host), help="address the WebSocket server binds"
    )
    p.add_argument(
        "--port",
        type=int,
        default=default("port", d.port),
        help="WebSocket port (0: any free port)",
    )
    p.add_argument(
        "--base-path",
        default=default("base-path", d.base_path),
        help="path before the CP id in the WebSocket URL, e.g. /ocpp for ws://host/ocpp/<cp-id>; "
        "any other path is refused (1008)",
    )
    p.add_argument(
        "--subprotocols",
        default=default("subprotocols", ",".join(d.subprotocols)),
        help=f"OCPP subprotocols offered, in order of preference (known: {', '.join(OCPP_VERSIONS)})",
    )
    p.add_argument(
        "--max-frame-size",
        type=int,
        default=default("max-frame-size", d.max_frame_size),
        help="largest WebSocket message accepted, in bytes (larger: close 1009)",
    )
    p.add_argument(
        "--ping-interval",
        type=float,
        default=default("ping-interval", d.ping_interval),
        help="seconds between WebSocket pings to each CP (0: no pings)",
    )
    p.add_argument(
        "--pong-timeout",
        type=float,
        default=default("pong-timeout", d.pong_timeout),
        help="a CP that does not answer a ping within this many seconds is closed (1011)",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        default=default("handshake-timeout", d.handshake_timeout),
        help="seconds a client has to send its WebSocket upgrade request",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=default("max-connections", d.max_connections),
        help="CP connections this process holds at most; more are closed with 1013 (try again later)",
    )
    p.add_argument(
        "--max-message-rate",
        type=float,
        default=default("max-message-rate", d.max_message_rate),
        help="messages per second a CP may send on average (0: no limit); beyond: close 1008",
    )
    p.add_argument(
        "--max-message-burst",
        type=int,
        default=default("max-message-burst", d.max_message_burst),
        help="messages a CP may send at once above the average rate",
    )
    p.add_argument(
        "--certfile",
        default=default("certfile", None),
        help="serve wss:// (TLS 1.2+) with this PEM certificate chain (OCPP security profile 2)",
    )
    p.add_argument("--keyfile", default=default("keyfile", None), help="private key of --certfile")
    p.add_argument(
        "--tls-terminated-upstream",
        action="store_true",
        default=_bool(default("tls-terminated-upstream", None)) or False,
        help="plain ws:// connections arrive through a TLS-terminating load balancer: "
        "treat them as TLS for security profile 2",
    )
    p.add_argument(
        "--iot-endpoint",
        default=default("iot-endpoint", None),
        help="AWS IoT Core data endpoint HOST[:PORT] (aws iot describe-endpoint --endpoint-type iot:Data-ATS); "
        "each CP's MQTT connection uses TLS 1.2+ with --cert-file/--key-file; port 8883 by default",
    )
    p.add_argument(
        "--ca-file",
        default=default("ca-file", None),
        help="PEM CA bundle that signs the broker's certificate (AWS: AmazonRootCA1.pem; default: system CAs)",
    )
    p.add_argument(
        "--cert-file",
        default=default("cert-file", None),
        help="the gateway's X.509 client certificate (PEM)",
    )
    p.add_argument(
        "--key-file", default=default("key-file", None), help="private key of --cert-file (PEM)"
    )
    p.add_argument(
        "--processor-mqtt-username",
        default=default("processor-mqtt-username", None),
        help="MQTT user name of the in-process message processor (fakeiot's backend role: fakeiot-backend)",
    )
    p.add_argument(
        "--processor-mqtt-password",
        default=default("processor-mqtt-password", None),
        help="its password; prefer the environment variable GATEWAY_PROCESSOR_MQTT_PASSWORD",
    )
    p.add_argument(
        "--processor-mqtt-password-file",
        default=default("processor-mqtt-password-file", None),
        help="read that password from this file (fakeiot writes <data-dir>/backend-password)",
    )
    p.add_argument(
        "--client-ca-file",
        default=default("client-ca-file", None),
        help="security profile 3: ask wss:// clients for a certificate and verify it against these CAs (PEM)",
    )
    p.add_argument(
        "--cpo-name",
        default=default("cpo-name", None),
        help="security profile 3: the O of every charge point certificate must contain this name",
    )
    p.add_argument(
        "--cert-binding",
        default=default("cert-binding", d.cert_binding),
        choices=BINDINGS,
        help="security profile 3: where the certificate must name the CP id of the URL",
    )
    p.add_argument(
        "--min-security-profile",
        type=int,
        default=default("min-security-profile", d.min_security_profile),
        choices=[0, 1, 2, 3],
        help="refuse charge points registered with a lower security profile "
        "(1: every CP needs a password)",
    )
    p.add_argument(
        "--mqtt-host",
        default=default("mqtt-host", None),
        help="plain-TCP MQTT broker host (Mosquitto, fakeiot...); unset and no --iot-endpoint: "
        "start an embedded fakeiot",
    )
    p.add_argument(
        "--mqtt-port",
        type=int,
        default=default("mqtt-port", d.mqtt_port),
        help="MQTT broker port (also the embedded fakeiot's port)",
    )
    p.add_argument(
        "--mqtt-username",
        default=default("mqtt-username", None),
        help="MQTT user name of every CP connection (a standalone fakeiot: fakeiot-gateway; the embedded "
        "fakeiot fills it in)",
    )
    p.add_argument(
        "--mqtt-password",
        default=default("mqtt-password", None),
        help="its password; prefer the environment variable GATEWAY_MQTT_PASSWORD",
    )
    p.add_argument(
        "--mqtt-password-file",
        default=default("mqtt-password-file", None),
        help="read that password from this file (fakeiot writes <data-dir>/gateway-password)",
    )
    p.add_argument(
        "--mqtt-keepalive",
        type=int,
        default=default("mqtt-keepalive", d.mqtt_keepalive),
        help="MQTT keepalive of each CP's connection, seconds",
    )
    p.add_argument(
        "--mqtt-connect-rate",
        type=float,
        default=default("mqtt-connect-rate", d.mqtt_connect_rate),
        help="new MQTT connections per second from this process (AWS IoT limits connects per second per "
        "account); a reconnect storm waits its turn instead of failing (0: no limit)",
    )
    p.add_argument(
        "--mqtt-connect-burst",
        type=int,
        default=default("mqtt-connect-burst", d.mqtt_connect_burst),
        help="MQTT connections allowed at once above that rate",
    )
    p.add_argument(
        "--mqtt-connect-max-wait",
        type=float,
        default=default("mqtt-connect-max-wait", d.mqtt_connect_max_wait),
        help="a CP whose MQTT connection would wait longer for its turn is closed with 1013 (try again later)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=default("drain-timeout", d.drain_timeout),
        help="on SIGTERM/SIGINT: seconds to wait for CPs to acknowledge the 1001 close before exiting",
    )
    p.add_argument(
        "--call-timeout",
        type=float,
        default=default("call-timeout", d.call_timeout),
        help="a CP's CALL that the CSMS has not answered within this many seconds is answered by the "
        "gateway with CALLERROR InternalError (0: never)",
    )
    p.add_argument(
        "--close-timeout",
        type=float,
        default=default("close-timeout", d.close_timeout),
        help="seconds a closing or refused connection waits for the CP's close frame before the TCP "
        "connection is aborted",
    )
    p.add_argument(
        "--cp-reconnect-rate",
        type=float,
        default=default("cp-reconnect-rate", d.cp_reconnect_rate),
        help="connections per second accepted per CP id (AWS IoT: one MQTT CONNECT/s per client id); "
        "faster: close 1013 (0: no limit)",
    )
    p.add_argument(
        "--cp-reconnect-burst",
        type=int,
        default=default("cp-reconnect-burst", d.cp_reconnect_burst),
        help="connections of one CP id allowed at once above that rate",
    )
    p.add_argument(
        "--max-backlog-bytes",
        type=int,
        default=default("max-backlog-bytes", d.max_backlog_bytes),
        help="bytes from <cp-id>/out buffered for a CP that does not read them; beyond: close 1008",
    )
    p.add_argument(
        "--gc-full-interval",
        type=float,
        default=default("gc-full-interval", d.gc_full_interval),
        help="seconds between full garbage collections, which pause every CP for up to a second at 10,000 "
        "CPs; 0: CPython's own full collections (frequent at that size)",
    )
    p.add_argument(
        "--gc-young-interval",
        type=float,
        default=default("gc-young-interval", d.gc_young_interval),
        help="seconds between young garbage collections, which keeps each one to a few milliseconds "
        "under steady traffic; 0: only when CPython's allocation counter triggers one",
    )
    p.add_argument(
        "--iot-api-url",
        default=default("iot-api-url", None),
        help="endpoint of the IoT registry/shadow API (fakeiot's URL); unset with --mqtt-host: AWS IoT",
    )
    p.add_argument("--region", default=default("region", d.region), help="AWS region for boto3")
    p.add_argument(
        "--fakeiot-api-port",
        type=int,
        default=default("fakeiot-api-port", d.fakeiot_api_port),
        help="HTTP API port of the embedded fakeiot",
    )
    p.add_argument(
        "--data-dir",
        default=default("data-dir", str(d.data_dir)),
        help="where the embedded fakeiot keeps its registry and shadows",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--processor",
        dest="processor",
        action="store_const",
        const=True,
        default=_bool(default("processor", None)),
        help="run the message processor in this process (default: only with the embedded fakeiot)",
    )
    group.add_argument(
        "--no-processor",
        dest="processor",
        action="store_const",
        const=False,
        help="do not run the message processor here",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=int,
        default=default("heartbeat-interval", d.heartbeat_interval),
        help="interval the processor returns in BootNotification responses, seconds",
    )
    p.add_argument(
        "--registry-ttl",
        type=float,
        default=default("registry-ttl", d.registry_ttl),
        help="how long a registered Thing is cached, seconds",
    )
    p.add_argument(
        "--registry-negative-ttl",
        type=float,
        default=default("registry-negative-ttl", d.registry_negative_ttl),
        help="how long an unknown Thing is cached, seconds",
    )
    p.add_argument(
        "--registry-rate",
        type=float,
        default=default("registry-rate", d.registry_rate),
        help="DescribeThing calls per second from this process (AWS: about 350/s per account, shared by "
        "every gateway); more wait up to 10 s, then the CP is closed with 1013",
    )
    p.add_argument(
        "--log-level",
        default=default("log-level", d.log_level),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG logs every frame",
    )
    return p


def _bool(value: object) -> bool | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"expected true or false, not {value!r}")


def _password(
    value: str | None, file: str | None, option: str = "--processor-mqtt-password"
) -> str | None:
    if file is None:
        return value
    if value is not None:
        raise ConfigError(f"give {option} or {option}-file, not both")
    try:
        return Path(file).expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {option}-file {file}: {exc.strerror}") from None


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Parse flags and environment; exits with a usage error on bad input."""
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    try:
        args = parser.parse_args(argv)
        subprotocols = tuple(s.strip() for s in str(args.subprotocols).split(",") if s.strip())
        unknown = [s for s in subprotocols if s not in OCPP_VERSIONS]
        if unknown or not subprotocols:
            raise ConfigError(
                f"--subprotocols: unknown {unknown or 'empty list'}; known: {', '.join(OCPP_VERSIONS)}"
            )
        config = GatewayConfig(
            host=args.host,
            port=int(args.port),
            base_path=args.base_path.rstrip("/"),
            subprotocols=subprotocols,
            max_frame_size=int(args.max_frame_size),
            ping_interval=float(args.ping_interval),
            pong_timeout=float(args.pong_timeout),
            handshake_timeout=float(args.handshake_timeout),
            max_connections=int(args.max_connections),
            max_message_rate=float(args.max_message_rate),
            max_message_burst=int(args.max_message_burst),
            certfile=Path(args.certfile).expanduser() if args.certfile else None,
            keyfile=Path(args.keyfile).expanduser() if args.keyfile else None,
            tls_terminated_upstream=bool(args.tls_terminated_upstream),
            client_ca_file=Path(args.client_ca_file).expanduser() if args.client_ca_file else None,
            cpo_name=args.cpo_name or None,
            cert_binding=args.cert_binding,
            min_security_profile=int(args.min_security_profile),
            mqtt_host=args.mqtt_host,
            mqtt_port=int(args.mqtt_port),
            mqtt_keepalive=int(args.mqtt_keepalive),
            mqtt_username=args.mqtt_username,
            mqtt_password=_password(args.mqtt_password, args.mqtt_password_file, "--mqtt-password"),
            mqtt_connect_rate=float(args.mqtt_connect_rate),
            mqtt_connect_burst=int(args.mqtt_connect_burst),
            mqtt_connect_max_wait=float(args.mqtt_connect_max_wait),
            drain_timeout=float(args.drain_timeout),
            close_timeout=float(args.close_timeout),
            call_timeout=float(args.call_timeout),
            cp_reconnect_rate=float(args.cp_reconnect_rate),
            cp_reconnect_burst=int(args.cp_reconnect_burst),
            max_backlog_bytes=int(args.max_backlog_bytes),
            gc_full_interval=float(args.gc_full_interval),
            gc_young_interval=float(args.gc_young_interval),
            iot_endpoint=args.iot_endpoint,
            ca_file=Path(args.ca_file).expanduser() if args.ca_file else None,
            cert_file=Path(args.cert_file).expanduser() if args.cert_file else None,
            key_file=Path(args.key_file).expanduser() if args.key_file else None,
            processor_mqtt_username=args.processor_mqtt_username,
            processor_mqtt_password=_password(
                args.processor_mqtt_password, args.processor_mqtt_password_file
            ),
            iot_api_url=args.iot_api_url,
            region=args.region,
            fakeiot_api_port=int(args.fakeiot_api_port),
            data_dir=Path(args.data_dir).expanduser(),
            processor=args.processor,
            heartbeat_interval=int(args.heartbeat_interval),
            registry_ttl=float(args.registry_ttl),
            registry_negative_ttl=float(args.registry_negative_ttl),
            registry_rate=float(args.registry_rate),
            log_level=args.log_level,
        )
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    for name in ("port", "mqtt_port", "fakeiot_api_port"):
        if not 0 <= getattr(config, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 65535")
    if config.base_path and (
        not config.base_path.startswith("/")
        or any(c in config.base_path for c in "?#%+ ")
        or "//" in config.base_path
    ):
        parser.error(
            f"--base-path must look like /ocpp (a path starting with '/'), not {config.base_path!r}"
        )
    if config.max_frame_size < 1024:
        parser.error("--max-frame-size must be at least 1024 bytes")
    if config.ping_interval < 0 or config.pong_timeout <= 0 or config.handshake_timeout <= 0:
        parser.error(
            "--ping-interval must be >= 0; --pong-timeout and --handshake-timeout must be > 0"
        )
    if (config.certfile is None) != (config.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    if config.iot_endpoint is not None:
        if config.mqtt_host is not None:
            parser.error("--iot-endpoint and --mqtt-host are alternatives: give one")
        try:
            address = config.broker_address
        except ValueError:
            address = None
        if address is None or not address[0] or not 0 < address[1] <= 65535:
            parser.error(f"--iot-endpoint must be HOST[:PORT], not {config.iot_endpoint!r}")
        if config.cert_file is None or config.key_file is None:
            parser.error(
                "--iot-endpoint needs --cert-file and --key-file (the gateway's X.509 client certificate)"
            )
    elif config.cert_file is not None or config.ca_file is not None:
        parser.error("--ca-file, --cert-file and --key-file are for --iot-endpoint (MQTT over TLS)")
    if (config.cert_file is None) != (config.key_file is None):
        parser.error("--cert-file and --key-file go together")
    if config.client_ca_file is not None and (config.certfile is None or config.cpo_name is None):
        parser.error(
            "--client-ca-file (security profile 3) needs --certfile/--keyfile (wss://) and --cpo-name"
        )
    if config.cert_binding not in BINDINGS:
        parser.error(f"--cert-binding must be {', '.join(BINDINGS[:-1])} or {BINDINGS[-1]}")
    for path in (
        config.certfile,
        config.keyfile,
        config.ca_file,
        config.cert_file,
        config.key_file,
        config.client_ca_file,
    ):
        if path is not None and not path.is_file():
            parser.error(f"no such file: {path}")
    if (
        config.mqtt_connect_rate < 0
        or config.mqtt_connect_burst < 1
        or config.mqtt_connect_max_wait < 0
    ):
        parser.error(
            "--mqtt-connect-rate and --mqtt-connect-max-wait must be >= 0, --mqtt-connect-burst >= 1"
        )
    if config.drain_timeout < 0:
        parser.error("--drain-timeout must be >= 0")
    if config.call_timeout < 0:
        parser.error("--call-timeout must be >= 0 (0: never)")
    if config.close_timeout <= 0:
        parser.error("--close-timeout must be > 0")
    if config.cp_reconnect_rate < 0 or config.cp_reconnect_burst < 1:
        parser.error("--cp-reconnect-rate must be >= 0 and --cp-reconnect-burst >= 1")
    if config.max_backlog_bytes < config.max_frame_size:
        parser.error("--max-backlog-bytes must be at least --max-frame-size")
    if config.gc_full_interval < 0:
        parser.error("--gc-full-interval must be >= 0 (0: CPython's default)")
    if config.gc_young_interval < 0:
        parser.error("--gc-young-interval must be >= 0 (0: CPython's allocation counter only)")
    if config.max_message_rate < 0 or config.max_message_burst < 1:
        parser.error("--max-message-rate must be >= 0 and --max-message-burst >= 1")
    if config.max_connections < 1:
        parser.error("--max-connections must be at least 1")
    if config.registry_rate <= 0:
        parser.error("--registry-rate must be > 0")
    if config.heartbeat_interval < 1:
        parser.error("--heartbeat-interval must be at least 1 second")
    logging.getLogger(__name__).debug("configuration: %s", config)
    return config
