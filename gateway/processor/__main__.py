"""``python -m gateway.processor``: run the message processor on its own.

Like the AWS sample's Lambda, but as an MQTT client: point it at the broker
(fakeiot, Mosquitto...) and the registry/shadow API the gateways use.
Its options (gateway/processor/config.py) also read ``PROCESSOR_<OPTION>``
environment variables.
"""

from __future__ import annotations

import logging
import signal
import sys

import trio

from ..aws import AwsSettings, make_clients
from ..errors import ConfigError, GatewayError
from ..looplag import LoopMonitor
from ..mqtt_link import MqttSettings, open_mqtt_driver
from .config import ProcessorConfig, load_processor_config
from .service import Processor, ProcessorSettings, inbound_topic


async def _run(config: ProcessorConfig, mqtt: MqttSettings) -> None:
    _, iot_data = await trio.to_thread.run_sync(
        make_clients, AwsSettings(region=config.region, iot_endpoint_url=config.iot_api_url)
    )
    settings = ProcessorSettings(
        client_id=config.client_id,
        shared_group=config.shared_group,
        heartbeat_interval=config.heartbeat_interval,
    )
    loop = LoopMonitor()
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with open_mqtt_driver(mqtt) as driver, trio.open_nursery() as nursery:
                await nursery.start(loop.run)
                await nursery.start(Processor(driver, iot_data, settings).run_supervised)
                print(
                    f"processor: answering {inbound_topic(settings)} on {mqtt.host}:{mqtt.port} "
                    f"as {settings.client_id}",
                    flush=True,
                )
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    finally:
        iot_data.close()
    print(f"processor stopped: {loop.describe()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    config = load_processor_config(argv)
    try:
        mqtt = MqttSettings(
            host=config.mqtt_host,
            port=config.mqtt_port,
            username=config.mqtt_username,
            password=config.mqtt_password,
            ssl_context=config.ssl_context(),
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        trio.run(_run, config, mqtt)
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
