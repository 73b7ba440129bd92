"""``python -m gateway.processor``: run the message processor on its own.

Like the AWS sample's Lambda, but as an MQTT client: point it at the broker
(fakeiot, Mosquitto...) and the registry/shadow API the gateways use.
Options also read ``PROCESSOR_<OPTION>`` environment variables.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path

import trio

from ..aws import AwsSettings, make_clients
from ..errors import ConfigError, GatewayError
from ..looplag import LoopMonitor
from ..mqtt_link import MqttSettings, open_mqtt_driver
from .service import Processor, ProcessorSettings


def parse_args(argv: list[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    def env(name: str, default: object) -> object:
        return environ.get("PROCESSOR_" + name.upper().replace("-", "_")) or default

    defaults = ProcessorSettings()
    p = argparse.ArgumentParser(
        prog="python -m gateway.processor",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--mqtt-host", default=env("mqtt-host", "127.0.0.1"), help="MQTT broker host")
    p.add_argument("--mqtt-port", type=int, default=env("mqtt-port", 1883), help="MQTT broker port")
    p.add_argument(
        "--mqtt-username",
        default=env("mqtt-username", None),
        help="MQTT user name (fakeiot's backend role: fakeiot-backend)",
    )
    p.add_argument(
        "--mqtt-password-file",
        default=env("mqtt-password-file", None),
        help="file holding the MQTT password (fakeiot: <data-dir>/backend-password); "
        "or set PROCESSOR_MQTT_PASSWORD",
    )
    p.add_argument(
        "--ca-file",
        default=env("ca-file", None),
        help="MQTT over TLS: CA bundle that signs the broker",
    )
    p.add_argument(
        "--cert-file",
        default=env("cert-file", None),
        help="MQTT over TLS: client certificate (PEM)",
    )
    p.add_argument(
        "--key-file",
        default=env("key-file", None),
        help="MQTT over TLS: private key of --cert-file",
    )
    p.add_argument(
        "--iot-api-url",
        default=env("iot-api-url", None),
        help="registry/shadow API (fakeiot); unset: AWS IoT",
    )
    p.add_argument("--region", default=env("region", "us-east-1"), help="AWS region")
    p.add_argument(
        "--client-id",
        default=env("client-id", defaults.client_id),
        help="MQTT client id (persistent session)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=int,
        default=env("heartbeat-interval", defaults.heartbeat_interval),
        help="interval returned in BootNotification responses, seconds",
    )
    p.add_argument(
        "--log-level",
        default=env("log-level", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    return p.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    _, iot_data = await trio.to_thread.run_sync(
        make_clients, AwsSettings(region=args.region, iot_endpoint_url=args.iot_api_url)
    )
    settings = ProcessorSettings(
        client_id=args.client_id, heartbeat_interval=args.heartbeat_interval
    )
    mqtt = MqttSettings(
        host=args.mqtt_host,
        port=int(args.mqtt_port),
        username=args.mqtt_username,
        password=args.mqtt_password,
        ssl_context=args.ssl_context,
    )
    loop = LoopMonitor()
    async with open_mqtt_driver(mqtt) as driver:
        async with trio.open_nursery() as nursery:
            await nursery.start(loop.run)
            await nursery.start(Processor(driver, iot_data, settings).run_supervised)
            print(f"processor: answering +/in on {args.mqtt_host}:{args.mqtt_port}", flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    print(f"processor stopped: {loop.describe()}", flush=True)
    iot_data.close()


def _prepare(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Read the password and the TLS files; raises GatewayError-derived ConfigError with what is wrong."""
    args.mqtt_password = environ.get("PROCESSOR_MQTT_PASSWORD") or None
    if args.mqtt_password_file:
        try:
            args.mqtt_password = Path(args.mqtt_password_file).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read --mqtt-password-file {args.mqtt_password_file}: {exc.strerror}"
            ) from None
    args.ssl_context = None
    if args.cert_file or args.key_file or args.ca_file:
        if not (args.cert_file and args.key_file):
            raise ConfigError("MQTT over TLS needs --cert-file and --key-file")
        try:
            context = ssl.create_default_context(cafile=args.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(args.cert_file, args.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --ca-file/--cert-file/--key-file: {exc}") from None
        args.ssl_context = context


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, os.environ)
    try:
        _prepare(args, os.environ)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        trio.run(_run, args)
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
