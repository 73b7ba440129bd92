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
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logging.getLogger("gateway").info("received %s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        trio.run(_main, config)
    except (GatewayError, FakeIotError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
