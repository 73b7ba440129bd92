"""``python -m gateway``: run the gateway (see ``--help``)."""

from __future__ import annotations

import logging
import signal
import sys

import trio

from fakeiot.service import FakeIotError

from .app import RunningGateway, run_gateway
from .config import GatewayConfig, load_config
from .errors import GatewayError
from .logthrottle import configure_logging


async def _main(config: GatewayConfig) -> None:
    async with trio.open_nursery() as nursery:
        running: RunningGateway = await nursery.start(run_gateway, config)
        print(f"OCPP gateway listening on {running.url}/<charge-point-id>", flush=True)
        if running.fakeiot is not None:
            print(
                f"embedded fakeiot: MQTT mqtt://127.0.0.1:{running.fakeiot.mqtt_port}, "
                f"API {running.fakeiot.api_url}, data in {config.data_dir}",
                flush=True,
            )
            print(
                "embedded fakeiot: backend role (any topic, e.g. for mosquitto_sub): user fakeiot-backend, "
                f"password in {running.fakeiot.config.backend_password_file}",
                flush=True,
            )
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logging.getLogger("gateway").info(
                    "received %s: shutting down", signal.Signals(signum).name
                )
                await running.bridge.drain()
                nursery.cancel_scope.cancel()
                break
    # How the process kept up (event-loop lag, GC pauses): worth a look after a load test or an incident.
    print(f"gateway stopped: {running.loop.describe()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv)
    configure_logging(config.log_level)
    try:
        trio.run(_main, config)
    except BaseException as exc:  # noqa: BLE001 - sorted below, re-raised unless it is a known start-up error
        errors = _leaves(exc)
        if not all(isinstance(e, (GatewayError, FakeIotError, OSError)) for e in errors):
            raise
        for error in errors:
            if isinstance(error, OSError) and not isinstance(error, GatewayError):
                print(
                    f"error: cannot listen on {config.host}:{config.port}: {error}", file=sys.stderr
                )
            else:
                print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    """The individual errors inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


if __name__ == "__main__":
    sys.exit(main())
