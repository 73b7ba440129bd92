"""The options of ``python -m gateway.processor``, declared once (see gateway/options.py).

Each is a flag and a ``PROCESSOR_...`` environment variable (``--mqtt-host`` /
``PROCESSOR_MQTT_HOST``); a flag wins over the variable, the variable over the
default.  Options the gateway also has take the gateway's default.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .. import options
from ..config import LOG_LEVELS, GatewayConfig, read_password
from ..config_options import (
    DEFAULT_ID_TOKEN_TABLE,
    LOG_FORMATS,
    PROCESSOR_AUTHORIZERS,
    check_table_name,
)
from ..errors import ConfigError
from ..options import option

PROCESSOR_PREFIX = "PROCESSOR_"
PROCESSOR_GROUPS = {
    "mqtt": "MQTT broker",
    "processor": "Processor",
    "commands": "Commands to charge points (docs/commands.md)",
    "authorization": "Authorization (docs/authorization.md)",
    "metrics": "Metrics and health (docs/operations.md)",
}
AUTHORIZERS = PROCESSOR_AUTHORIZERS


def _check_module_names(names: tuple[str, ...]) -> str | None:
    bad = [n for n in names if not all(part.isidentifier() for part in n.split("."))]
    return f"has {bad[0]!r}, not a Python module name (e.g. mypackage.handlers)" if bad else None


DEFAULT_CLIENT_ID = "cpo:processor"
MAX_SHARED_GROUP = 64


def _check_shared_group(group: str) -> str | None:
    if not group or len(group) > MAX_SHARED_GROUP:
        return f"must be 1 to {MAX_SHARED_GROUP} characters"
    if any(c in group for c in "/+#") or not group.isprintable() or group.strip() != group:
        return "must not hold '/', '+', '#', spaces at either end or control characters"
    return None


def replica_client_id(group: str, hostname: str) -> str:
    """The client id of a replica of ``group`` that was not given one: stable where the host name is
    (a Kubernetes StatefulSet's pod, a compose service's ``hostname:``)."""
    return f"{DEFAULT_CLIENT_ID}:{group}:{hostname}"[:128]  # AWS IoT's client id limit


@dataclass(frozen=True)
class ProcessorConfig:
    """Every option of ``python -m gateway.processor``; build it with :func:`load_processor_config`."""

    mqtt_host: str = option("127.0.0.1", "MQTT broker host", group="mqtt")
    mqtt_port: int = option(
        GatewayConfig.mqtt_port, "MQTT broker port", group="mqtt", min=0, max=65535
    )
    mqtt_username: str | None = option(
        None, "MQTT user name (fakeiot's backend role: fakeiot-backend)", group="mqtt"
    )
    mqtt_password: str | None = option(
        None,
        "MQTT password; prefer the environment variable to the flag",
        group="mqtt",
        secret=True,
    )
    mqtt_password_file: Path | None = option(
        None,
        "file holding the MQTT password (fakeiot: <data-dir>/backend-password)",
        group="mqtt",
    )
    ca_file: Path | None = option(
        None, "MQTT over TLS: CA bundle that signs the broker", group="mqtt", is_file=True
    )
    cert_file: Path | None = option(
        None, "MQTT over TLS: client certificate (PEM)", group="mqtt", is_file=True
    )
    key_file: Path | None = option(
        None, "MQTT over TLS: private key of --cert-file", group="mqtt", is_file=True
    )
    iot_api_url: str | None = option(
        None,
        "registry/shadow API (fakeiot), also its DynamoDB for --authorization id-token-table; "
        "unset: AWS",
        group="processor",
    )
    iot_data_url: str | None = option(
        None,
        "iot-data endpoint (shadows, Publish) where it differs from --iot-api-url: on AWS the "
        "account's https://<prefix>-ats.iot.<region>.amazonaws.com (aws iot describe-endpoint "
        "--endpoint-type iot:Data-ATS); unset: --iot-api-url, else boto3's default",
        group="processor",
    )
    region: str = option(GatewayConfig.region, "AWS region", group="processor")
    client_id: str = option(
        DEFAULT_CLIENT_ID,
        "MQTT client id (persistent session); with --shared-group each replica needs its own, "
        "stable across restarts (default there: cpo:processor:<group>:<host name>)",
        group="processor",
    )
    shared_group: str | None = option(
        None,
        "run as one of N replicas: subscribe $share/<group>/+/in, so that the broker gives each "
        "CALL to one replica of the group (unset: +/in, a single processor)",
        group="processor",
        check=_check_shared_group,
    )
    heartbeat_interval: int = option(
        GatewayConfig.heartbeat_interval,
        "interval returned in BootNotification responses, seconds",
        group="processor",
        min=1,
    )
    handlers: tuple[str, ...] = option(
        (),
        "Python modules whose @handler functions answer CALLs, replacing the defaults "
        "(comma-separated; later ones win); see docs/processor.md",
        group="processor",
        check=_check_module_names,
        metavar="MODULES",
        default_text="none",
    )
    log_level: str = option("INFO", "how much to log", group="processor", choices=LOG_LEVELS)
    log_format: str = option(
        "text",
        "text, or json: one JSON object a line (time, level, logger, message, cp_id, exc)",
        group="processor",
        choices=LOG_FORMATS,
    )
    # -- commands to charge points (gateway/processor/command_service.py, docs/commands.md) --
    command_timeout: float = option(
        30.0, "seconds a command sent to a CP waits for its answer", group="commands", above=0
    )
    command_queue: int = option(
        10,
        "commands per CP that may wait behind the outstanding one; beyond: refused (HTTP 429)",
        group="commands",
        min=0,
    )
    http_port: int | None = option(
        None,
        "serve the command API (POST /charge-points/{id}/calls/{action}) on this port; "
        "unset: no HTTP API (0: any free port)",
        group="commands",
        min=0,
        max=65535,
    )
    http_host: str = option(
        "127.0.0.1",
        "address of the command API; it has no authentication unless --http-token is set",
        group="commands",
    )
    http_token: str | None = option(
        None,
        "bearer token the command API requires (Authorization: Bearer ...); prefer the "
        "environment variable to the flag",
        group="commands",
        secret=True,
    )
    authorization: str = option(
        "accept-all",
        "who may charge: accept-all (every id token Accepted: development only) or "
        "id-token-table (the DynamoDB table --id-token-table, on fakeiot when --iot-api-url is set)",
        group="authorization",
        choices=AUTHORIZERS,
    )
    id_token_table: str = option(
        DEFAULT_ID_TOKEN_TABLE,
        "DynamoDB table of id tokens (key idToken; status, expiryDate, groupIdToken)",
        group="authorization",
        check=check_table_name,
    )

    # -- metrics and health (gateway/processor/metrics.py, docs/operations.md) --
    metrics_port: int | None = option(
        None,
        "serve GET /metrics (Prometheus), /healthz and /readyz on this port; unset: none (0: any "
        "free port)",
        group="metrics",
        min=0,
        max=65535,
    )
    metrics_host: str = option(
        "127.0.0.1",
        "address the metrics port binds (no authentication: loopback, or a network only "
        "Prometheus reaches)",
        group="metrics",
    )

    def ssl_context(self) -> ssl.SSLContext | None:
        """Mutual TLS 1.2+ to the broker when a client certificate is configured."""
        if self.cert_file is None or self.key_file is None:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --ca-file/--cert-file/--key-file: {exc}") from None
        return context


def build_processor_parser() -> argparse.ArgumentParser:
    parser, _ = options.build_parser(
        ProcessorConfig,
        PROCESSOR_PREFIX,
        PROCESSOR_GROUPS,
        prog="python -m gateway.processor",
        usage="%(prog)s [options]   (python -m gateway.processor --help lists them)",
        description=(
            "Run the message processor on its own: an MQTT client of the broker (fakeiot, "
            "Mosquitto, AWS IoT...) that answers the CPs' CALLs on +/in, using the registry/shadow "
            "API the gateways use.  Each option can also be set with the environment variable "
            "PROCESSOR_<OPTION>."
        ),
    )
    return parser


def parse_processor_config(
    argv: Sequence[str] | None, environ: Mapping[str, str], parser: argparse.ArgumentParser
) -> ProcessorConfig:
    """Flags and environment -> the configuration; raises ConfigError naming the bad option."""
    given_twice = [a for a in argv or () if a == "--handlers" or a.startswith("--handlers=")]
    if len(given_twice) > 1:
        raise ConfigError("--handlers given more than once: list the modules comma-separated")
    found = options.specs(ProcessorConfig, PROCESSOR_PREFIX)
    config, given = options.resolve(ProcessorConfig, parser, found, argv, environ)
    if (config.cert_file or config.key_file or config.ca_file) and not (
        config.cert_file and config.key_file
    ):
        raise ConfigError("MQTT over TLS needs --cert-file and --key-file")
    options.check_files(config, found, given)
    password = read_password(config.mqtt_password, config.mqtt_password_file, "--mqtt-password")
    client_id = config.client_id
    if config.shared_group is not None and "client_id" not in given:
        # N replicas under one client id would take each other over: each gets its own.
        client_id = replica_client_id(config.shared_group, socket.gethostname())
    return replace(config, mqtt_password=password, client_id=client_id)


def load_processor_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ProcessorConfig:
    """Parse flags and environment; exits with a usage error (status 2) on bad input."""
    parser = build_processor_parser()
    try:
        return parse_processor_config(argv, os.environ if environ is None else environ, parser)
    except ConfigError as exc:
        parser.error(str(exc))
