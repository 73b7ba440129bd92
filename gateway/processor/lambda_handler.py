"""AWS Lambda's entry point for the message processor: ``gateway.processor.lambda_handler.handler``.

Deploy this package as a Python 3.11+ Lambda function with the handler
``gateway.processor.lambda_handler.handler``, invoked by an IoT rule whose SQL
is :data:`.lambda_event.RULE_SQL`::

    SELECT topic(1) AS chargePointId, encode(*, 'base64') AS frame FROM '+/in'

It answers with the MQTT processor's handler table (:mod:`.lambda_host`).
Its configuration is the processor's own options, read from the function's
environment as ``PROCESSOR_<OPTION>`` variables (gateway/processor/config.py,
docs/configuration.md); those a Lambda function uses:

* ``PROCESSOR_IOT_DATA_URL``: the account's iot-data endpoint
  (``https://<prefix>-ats.iot.<region>.amazonaws.com``); offline, fakeiot's API;
* ``PROCESSOR_IOT_API_URL``: offline only (fakeiot's API, also its DynamoDB);
* ``PROCESSOR_REGION``: default the function's ``AWS_REGION``;
* ``PROCESSOR_HEARTBEAT_INTERVAL``, ``PROCESSOR_HANDLERS``,
  ``PROCESSOR_AUTHORIZATION``, ``PROCESSOR_ID_TOKEN_TABLE``, ``PROCESSOR_LOG_LEVEL``.

The MQTT options are ignored.  IAM: ``iot:Publish`` on ``topic/*/out``,
``iot:GetThingShadow`` and ``iot:UpdateThingShadow`` on the Things, and
``dynamodb:GetItem`` on the id-token table with ``id-token-table``.

One container runs one invocation at a time; its processor and boto3 clients
are made on its first event and kept for the next ones (the cache of recent
answers with them).  A host that calls :func:`handler` from several threads
(fakeiot's Lambda action) gets one container per thread, as Lambda would run
one container per concurrent invocation.  A configuration error (an unknown
option value, a handler module that cannot be loaded) is raised from every
event until it is fixed: it is the function's, not a charge point's.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import ocpp.messages
import trio

from ..aws import AwsSettings, make_client
from ..errors import ConfigError
from .config import ProcessorConfig, build_processor_parser, parse_processor_config
from .idtokens import IdTokenList, build_authorizer
from .lambda_host import LambdaProcessor
from .registry import load_registry
from .service import HANDLER_TIMEOUT, ProcessorSettings

log = logging.getLogger(__name__)

# ocpp validates in an asyncio executor unless told otherwise; we run under Trio.
ocpp.messages.ASYNC_VALIDATION = False

# Without a Lambda context (a test invocation), the time an event may take.
DEFAULT_TIME_LEFT = HANDLER_TIMEOUT
# Of the remaining time Lambda reports, what is left for returning before it would stop the function.
RETURN_RESERVE = 0.2


class _MonotonicClock(trio.abc.Clock):
    """The system's monotonic clock with no offset: the same time in every ``trio.run``, so that
    the cache of recent answers (which keeps Trio times) holds across the events of a container."""

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return time.monotonic()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return deadline - time.monotonic()


_CLOCK = _MonotonicClock()


def lambda_config(environ: Mapping[str, str]) -> ProcessorConfig:
    """The processor's options from a function's environment; raises ConfigError naming the bad one."""
    env = dict(environ)
    if not env.get("PROCESSOR_REGION") and env.get("AWS_REGION"):
        env["PROCESSOR_REGION"] = env["AWS_REGION"]
    return parse_processor_config([], env, build_processor_parser())


class Container:
    """What one Lambda container keeps between events: the processor and its clients."""

    def __init__(self, config: ProcessorConfig) -> None:
        logging.getLogger("gateway").setLevel(config.log_level)
        registry = load_registry(config.handlers)  # HandlerLoadError: the function's configuration
        settings = ProcessorSettings(
            heartbeat_interval=config.heartbeat_interval, handler_modules=config.handlers
        )
        self.iot_data = make_client(
            AwsSettings(
                region=config.region,
                iot_endpoint_url=config.iot_api_url,
                iot_data_endpoint_url=config.iot_data_url,
            ),
            "iot-data",
        )
        try:
            self.authorizer = build_authorizer(config)
        except BaseException:
            self.iot_data.close()
            raise
        self.processor = LambdaProcessor(
            self.iot_data, settings, authorizer=self.authorizer, registry=registry
        )

    def invoke(self, event: Any, context: Any) -> dict[str, Any]:
        time_left = _time_left(context) - RETURN_RESERVE
        run = functools.partial(self.processor.process, event, time_left)
        return trio.run(run, clock=_CLOCK).as_json()

    def close(self) -> None:
        self.iot_data.close()
        if isinstance(self.authorizer, IdTokenList):
            self.authorizer.close()


def _time_left(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return DEFAULT_TIME_LEFT
    try:
        return float(remaining()) / 1000.0
    except (TypeError, ValueError):
        return DEFAULT_TIME_LEFT


class _Containers(threading.local):
    container: Container | None = None
    generation = 0


_local = _Containers()
_all: list[Container] = []
_all_lock = threading.Lock()
_generation = 0  # close_containers() moves it on: every thread's container is then stale


def _container(environ: Mapping[str, str]) -> Container:
    container = _local.container
    if container is None or _local.generation != _generation:
        try:
            container = Container(lambda_config(environ))
        except ConfigError as exc:
            log.error("processor: the function's configuration is wrong: %s", exc)
            raise
        with _all_lock:
            _all.append(container)
            _local.container, _local.generation = container, _generation
    return container


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda's entry point: answer the frame in one IoT rule event (see the module's notes)."""
    return _container(os.environ).invoke(event, context)


def close_containers() -> None:
    """Close every container's clients; the next event makes new ones (tests, fakeiot's stop)."""
    global _generation
    with _all_lock:
        containers = list(_all)
        _all.clear()
        _generation += 1
    for container in containers:
        container.close()
