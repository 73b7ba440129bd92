"""``python -m gateway``: run the gateway (see ``--help``).

With a broker configured (``--iot-endpoint`` or ``--mqtt-host``) this is the product.
Without one it runs the development stack (gateway/devstack.py: an embedded fakeiot and
the message processor), imported here only then, and says loudly that it is not for
production; a production setting without a broker refuses to start instead.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .app import RunningGateway, run_gateway
from .config import GatewayConfig, dev_stack_refusal, load_config
from .errors import GatewayError
from .logthrottle import configure_logging

log = logging.getLogger("gateway")

INSTALL_DEV = (
    "no MQTT broker configured and the development stack is not installed ({missing}): "
    "pip install -e '.[dev]' to run it, or configure a broker with --iot-endpoint "
    "(GATEWAY_IOT_ENDPOINT, AWS IoT Core) or --mqtt-host (GATEWAY_MQTT_HOST)"
)

RunDevStack = Callable[..., Awaitable[None]]


async def _main(config: GatewayConfig, run_dev_stack: RunDevStack | None) -> None:
    running: RunningGateway | None = None
    # Installed before anything starts: a signal during start-up stops it cleanly too.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    if running is not None:
                        await running.bridge.drain()
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            if run_dev_stack is None:
                running = await nursery.start(run_gateway, config)
                assert running is not None
                print(f"OCPP gateway listening on {running.url}/<charge-point-id>", flush=True)
            else:
                stack: Any = await nursery.start(run_dev_stack, config)
                running = stack.gateway
                assert running is not None
                print(f"OCPP gateway listening on {running.url}/<charge-point-id>", flush=True)
                _print_dev_stack(config, stack.fakeiot)
    if running is not None:
        # How the process kept up (event-loop lag, GC pauses): worth a look after a load test or an incident.
        print(f"gateway stopped: {running.loop.describe()}", flush=True)


def _print_dev_stack(config: GatewayConfig, iot: Any) -> None:
    print(
        f"development stack: embedded fakeiot MQTT mqtt://127.0.0.1:{iot.mqtt_port}, "
        f"API {iot.api_url}, data in {config.devstack.data_dir} (not for production)",
        flush=True,
    )
    print(
        "development stack: backend role (any topic, e.g. for mosquitto_sub): user fakeiot-backend, "
        f"password in {iot.config.backend_password_file}",
        flush=True,
    )


def _dev_stack() -> RunDevStack | str:
    """The development stack's entry point, or why it cannot run."""
    try:
        from .devstack import run_dev_stack
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in ("amqtt", "fakeiot"):
            raise
        return INSTALL_DEV.format(missing=f"no module named {missing!r}")
    return run_dev_stack


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv)
    run_dev_stack: RunDevStack | None = None
    if config.embedded:
        refusal = dev_stack_refusal(config)
        if refusal is not None:
            print(f"error: {refusal}", file=sys.stderr)
            return 2
        found = _dev_stack()
        if isinstance(found, str):
            print(f"error: {found}", file=sys.stderr)
            return 2
        run_dev_stack = found
    configure_logging(config.runtime.log_level)
    try:
        trio.run(_main, config, run_dev_stack)
    except BaseException as exc:  # noqa: BLE001 - sorted below, re-raised unless it is a known start-up error
        errors = _leaves(exc)
        if not all(isinstance(e, (GatewayError, OSError)) for e in errors):
            raise
        for error in errors:
            if isinstance(error, OSError):
                print(
                    f"error: cannot listen on {config.server.host}:{config.server.port}: {error}",
                    file=sys.stderr,
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
