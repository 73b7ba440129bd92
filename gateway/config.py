"""The gateway's configuration, read from flags and environment.

The options are declared once, in :mod:`gateway.config_options` (:class:`GatewayConfig`):
each is a command-line flag and a ``GATEWAY_...`` environment variable of the same name
(``--mqtt-host`` / ``GATEWAY_MQTT_HOST``); a flag wins over the variable, the variable
over the default.  No other module reads the environment.

``python -m gateway.config --markdown`` writes docs/configuration.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from . import options
from .config_options import DEFAULT_DATA_DIR, GROUPS, LOG_LEVELS, PREFIX, GatewayConfig
from .errors import ConfigError

__all__ = [
    "DEFAULT_DATA_DIR",
    "GROUPS",
    "LOG_LEVELS",
    "PREFIX",
    "ConfigError",
    "GatewayConfig",
    "build_parser",
    "dev_stack_refusal",
    "load_config",
    "parse_config",
    "read_password",
]


def read_password(value: str | None, file: Path | None, flag: str) -> str | None:
    """The password given directly or read from its file (never both)."""
    if file is None:
        return value
    if value is not None:
        raise ConfigError(f"give {flag} or {flag}-file, not both")
    try:
        return file.expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {flag}-file {file}: {exc.strerror}") from None


def _cross_check(config: GatewayConfig) -> GatewayConfig:
    """Checks involving several options; reads the password files."""
    if (config.certfile is None) != (config.keyfile is None):
        raise ConfigError("--certfile and --keyfile go together")
    if config.iot_endpoint is not None:
        if config.mqtt_host is not None:
            raise ConfigError("--iot-endpoint and --mqtt-host are alternatives: give one")
        if config.cert_file is None or config.key_file is None:
            raise ConfigError(
                "--iot-endpoint needs --cert-file and --key-file (the gateway's X.509 client certificate)"
            )
    elif config.mqtt_host is not None and (config.cert_file or config.key_file or config.ca_file):
        raise ConfigError(
            "--ca-file, --cert-file and --key-file are for --iot-endpoint (MQTT over TLS), "
            "not --mqtt-host"
        )
    if (config.cert_file is None) != (config.key_file is None):
        raise ConfigError("--cert-file and --key-file go together")
    if config.client_ca_file is not None and (config.certfile is None or config.cpo_name is None):
        raise ConfigError(
            "--client-ca-file (security profile 3) needs --certfile/--keyfile (wss://) and --cpo-name"
        )
    if config.max_backlog_bytes < config.max_frame_size:
        raise ConfigError("--max-backlog-bytes must be at least --max-frame-size")
    _check_workers(config)
    if (
        config.metrics_port
        and config.workers > 1
        and config.metrics_port + config.workers - 1 > 65535
    ):
        raise ConfigError(
            f"--metrics-port {config.metrics_port} with --workers {config.workers}: worker i "
            "serves on --metrics-port + i - 1, past 65535; choose a lower port"
        )
    return replace(
        config,
        mqtt_password=read_password(
            config.mqtt_password, config.mqtt_password_file, "--mqtt-password"
        ),
        processor_mqtt_password=read_password(
            config.processor_mqtt_password,
            config.processor_mqtt_password_file,
            "--processor-mqtt-password",
        ),
    )


def _check_workers(config: GatewayConfig) -> None:
    """What --workers above 1 cannot run: each worker is a whole gateway process."""
    if config.workers == 1:
        return
    if config.embedded:
        raise ConfigError(
            f"--workers {config.workers} needs a broker: the development stack (no --mqtt-host or "
            "--iot-endpoint) is one process; run python -m fakeiot on its own and give --mqtt-host "
            "and --iot-api-url (docs/fakeiot.md), or drop --workers"
        )
    if config.processor:
        raise ConfigError(
            f"--processor with --workers {config.workers} would run one processor per worker on "
            "the same MQTT client id: run python -m gateway.processor on its own (with "
            "--shared-group for several) and drop --processor"
        )


def build_parser() -> argparse.ArgumentParser:
    parser, _ = options.build_parser(
        GatewayConfig,
        PREFIX,
        GROUPS,
        prog="python -m gateway",
        usage="%(prog)s [options]   (python -m gateway --help lists them)",
        description=(
            "OCPP-J WebSocket to MQTT gateway.  Each option can also be set with the environment "
            "variable GATEWAY_<OPTION> (e.g. GATEWAY_MQTT_HOST); a flag wins over the variable.  "
            "Without --iot-endpoint or --mqtt-host the development stack runs: an embedded fakeiot "
            "(MQTT broker, Thing registry, shadows) and the message processor in this process "
            "(needs pip install -e '.[dev]'; not for production)."
        ),
    )
    return parser


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Flags and environment -> the configuration; raises ConfigError naming the bad option.

    Argparse's own errors (an unknown flag, ``--port eighty``) still exit with its usage message.
    """
    environ = os.environ if environ is None else environ
    parser, found = options.build_parser(GatewayConfig, PREFIX)
    return _resolve(parser, found, argv, environ)


def _resolve(
    parser: argparse.ArgumentParser,
    found: list[options.Spec],
    argv: Sequence[str] | None,
    environ: Mapping[str, str],
) -> GatewayConfig:
    config, given = options.resolve(GatewayConfig, parser, found, argv, environ)
    config = _cross_check(replace(config, given=frozenset(given)))
    options.check_files(config, found, given)
    return config


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Parse flags and environment; exits with a usage error (status 2) on bad input."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    try:
        config = _resolve(parser, options.specs(GatewayConfig, PREFIX), argv, environ)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.getLogger(__name__).debug("configuration: %s", config)
    return config


def _labels(name: str) -> str:
    return f"--{name.replace('_', '-')} ({PREFIX}{name.upper()})"


def dev_stack_refusal(config: GatewayConfig) -> str | None:
    """Why this configuration must not fall back to the development stack, or None.

    Without a broker ``python -m gateway`` runs fakeiot in-process; a setting that only makes
    sense in production means the operator forgot the broker, so it refuses instead.
    """
    if not config.embedded:
        return None
    broker = "set --iot-endpoint (GATEWAY_IOT_ENDPOINT) or --mqtt-host (GATEWAY_MQTT_HOST)"
    if config.require_broker:
        return (
            f"no MQTT broker configured: {broker}; --require-broker ({PREFIX}REQUIRE_BROKER) "
            "rules out the development stack"
        )
    for name in ("cert_file", "key_file", "ca_file"):
        if name in config.given:
            return (
                f"--iot-endpoint ({PREFIX}IOT_ENDPOINT) is missing: {_labels(name)} is set for "
                "AWS IoT Core, so the development stack does not start"
            )
    if "region" in config.given:
        return (
            f"no MQTT broker configured: {broker}; {_labels('region')} is set for AWS, so the "
            "development stack does not start"
        )
    if config.iot_api_url is not None:
        return (
            "--iot-api-url names a registry API but no MQTT broker is configured: the development "
            f"stack would use its own fakeiot instead; {broker} too, or drop --iot-api-url"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.config", description="Document the configuration."
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print docs/configuration.md", required=True
    )
    parser.parse_args(argv)
    from .config_docs import configuration_markdown

    sys.stdout.write(configuration_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
