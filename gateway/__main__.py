"""``python -m gateway``: run the gateway (see ``--help``).

With a broker configured (``--iot-endpoint`` or ``--mqtt-host``) this is the product.
Without one it runs the development stack (gateway/devstack.py: an embedded fakeiot and
the message processor), imported here only then, and says loudly that it is not for
production; a production setting without a broker refuses to start instead.

With ``--workers N`` above 1 the process supervises N worker processes that share the port
(gateway/supervisor.py, gateway/worker.py) and serves nothing itself.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .config import GatewayConfig, dev_stack_refusal, load_config
from .errors import GatewayError, leaves
from .logthrottle import configure_logging

if TYPE_CHECKING:
    from .app import RunningGateway

log = logging.getLogger("gateway")

INSTALL_DEV = (
    "no MQTT broker configured and the development stack is not installed ({missing}): "
    "pip install -e '.[dev]' to run it, or configure a broker with --iot-endpoint "
    "(GATEWAY_IOT_ENDPOINT, AWS IoT Core) or --mqtt-host (GATEWAY_MQTT_HOST)"
)

RunDevStack = Callable[..., Awaitable[None]]


Announce = Callable[["RunningGateway", Any], None]


def _announce(config: GatewayConfig, running: RunningGateway, stack: Any) -> None:
    print(f"OCPP gateway listening on {running.url}/<charge-point-id>", flush=True)
    if stack is not None:
        _print_dev_stack(config, stack.fakeiot)


def _print_summary(running: RunningGateway) -> None:
    # How the process kept up (event-loop lag, GC pauses): worth a look after a load test or an incident.
    print(f"gateway stopped: {running.loop.describe()}", flush=True)


async def _main(
    config: GatewayConfig,
    run_dev_stack: RunDevStack | None,
    *,
    announce: Announce | None = None,
    summary: Callable[[RunningGateway], None] = _print_summary,
    lifeline: int | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or, with ``lifeline``, until that file descriptor reads
    end-of-file: the supervisor of a worker is gone), then drain.

    ``announce(running, dev_stack)`` once serving; ``summary(running)`` once stopped.
    """
    # Here, not at import: a supervisor (gateway/supervisor.py) never serves.
    from .app import run_gateway

    running: RunningGateway | None = None
    stop = trio.Event()
    # Installed before anything starts: a signal during start-up stops it cleanly too.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    stop.set()
                    return

            async def stop_on_lifeline_end(fd: int) -> None:
                await _wait_end_of_file(fd)
                log.warning("the supervisor is gone: shutting down")
                stop.set()

            async def drain_on_stop() -> None:
                await stop.wait()
                if running is not None:
                    await running.bridge.drain()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(drain_on_stop)
            if lifeline is not None:
                nursery.start_soon(stop_on_lifeline_end, lifeline)
            stack: Any = None
            if run_dev_stack is None:
                running = await nursery.start(run_gateway, config)
            else:
                stack = await nursery.start(run_dev_stack, config)
                running = stack.gateway
            assert running is not None
            if announce is None:
                _announce(config, running, stack)
            else:
                announce(running, stack)
    if running is not None:
        summary(running)


async def _wait_end_of_file(fd: int) -> None:
    """Return once ``fd`` (a pipe nobody writes to) reads end-of-file: its writer has closed it."""
    while True:
        await trio.lowlevel.wait_readable(fd)
        if not os.read(fd, 4096):
            return


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
    configure_logging(config.runtime.log_level, log_format=config.runtime.log_format)
    if config.runtime.workers > 1:
        from .supervisor import supervise

        return supervise(config)
    try:
        trio.run(_main, config, run_dev_stack)
    except BaseException as exc:  # noqa: BLE001 - sorted below, re-raised unless it is a known start-up error
        messages = startup_errors(exc, config)
        if messages is None:
            raise
        for message in messages:
            print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


def startup_errors(exc: BaseException, config: GatewayConfig) -> list[str] | None:
    """What to tell the operator about a known start-up error (a bad setting, a busy port);
    None: not one of those (a bug, an interrupt), to be raised on."""
    errors = leaves(exc)
    if not all(isinstance(e, (GatewayError, OSError)) for e in errors):
        return None
    return [
        f"cannot listen on {config.server.host}:{config.server.port}: {error}"
        if isinstance(error, OSError)
        else str(error)
        for error in errors
    ]


if __name__ == "__main__":
    sys.exit(main())
