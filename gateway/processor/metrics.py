"""The processor's Prometheus metrics, read from its plain counters at scrape time.

As for the gateway (gateway/metrics.py): the processor counts in plain attributes where things
happen (:class:`.answering.Answerer`'s ``calls``, ``cp_answers`` and ``handler_seconds``,
:class:`.service.Processor`, :class:`.command_service.CommandService`'s ``outcomes``), and
:class:`ProcessorCollector` turns them into metric families when Prometheus scrapes, in a
registry of its own.  Labels are bounded: an action outside the known set is ``other``, an
error code outside OCPP's ``other``, and no label ever holds a CP id.

``python -m gateway.processor --metrics-port`` serves them with ``/healthz`` and ``/readyz``
(ready: connected to the broker and subscribed to ``+/in``).  A gateway that runs the processor
in its own process (``--processor``, the development stack) registers this collector in its own
registry: one ``/metrics`` shows both (gateway/app.py).

docs/operations.md lists every metric with its meaning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import trio
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..health import BROKER_DOWN, serve_health
from .command_service import CommandService
from .service import Processor

PREFIX = "ocpp_processor_"


def _version_label(version: str) -> str:
    """``1.6`` -> ``ocpp1.6``: the gateway's spelling of the same label (the subprotocol)."""
    return f"ocpp{version}"


@dataclass(eq=False)  # registered by identity (a CollectorRegistry hashes its collectors)
class ProcessorCollector(Collector):
    """Every figure of one processor (and its command service, where it runs one)."""

    processor: Processor
    commands: CommandService | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._calls()
        if self.commands is not None:
            yield from self._commands(self.commands)

    def _calls(self) -> Iterator[Metric]:
        processor = self.processor
        calls = CounterMetricFamily(
            PREFIX + "calls",
            "CALLs of charge points answered, by OCPP version, action and outcome (answered, or "
            "the CALLERROR's code)",
            labels=["ocpp_version", "action", "outcome"],
        )
        for (version, action, outcome), count in sorted(processor.calls.items()):
            calls.add_metric([_version_label(version), action, outcome], count)
        yield calls
        latency = HistogramMetricFamily(
            PREFIX + "handler_seconds",
            "Time to answer one CALL: schema checks and the handler",
            labels=[],
        )
        histogram = processor.handler_seconds
        latency.add_metric([], histogram.cumulative(), histogram.total)
        yield latency
        answers = CounterMetricFamily(
            PREFIX + "cp_answers",
            "CALLRESULTs and CALLERRORs received from charge points (answers to CSMS CALLs)",
            labels=["ocpp_version", "type"],
        )
        for (version, kind), count in sorted(processor.cp_answers.items()):
            answers.add_metric([_version_label(version), kind], count)
        yield answers
        yield CounterMetricFamily(
            PREFIX + "duplicate_calls",
            "CALLs received again and given their first answer without being handled again",
            value=processor.duplicates,
        )
        yield CounterMetricFamily(
            PREFIX + "internal_errors",
            "Messages whose handling failed or timed out (a CALL is answered InternalError)",
            value=processor.internal_errors,
        )
        yield CounterMetricFamily(
            PREFIX + "messages_ignored",
            "Messages on +/in dropped unanswered: the topic holds no valid charge point id",
            value=processor.ignored,
        )
        yield CounterMetricFamily(
            PREFIX + "reconnects",
            "Times the processor's broker connection was lost and opened again",
            value=processor.reconnects,
        )
        yield GaugeMetricFamily(
            PREFIX + "broker_connected",
            "1 while the processor is connected to the broker and subscribed to +/in",
            value=processor.subscribed,
        )

    def _commands(self, commands: CommandService) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            PREFIX + "commands",
            "Commands of the command API, by action and outcome (accepted, rejected, "
            "invalid_response, timeout, refused, error)",
            labels=["action", "outcome"],
        )
        for (action, outcome), count in sorted(commands.outcomes.items()):
            outcomes.add_metric([action, outcome], count)
        yield outcomes
        yield CounterMetricFamily(
            PREFIX + "commands_sent",
            "CALLs the command API published to charge points",
            value=commands.sent,
        )


def processor_registry(collector: ProcessorCollector) -> CollectorRegistry:
    """A registry of this processor's own: its collector and the process's figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


async def serve_processor_health(
    collector: ProcessorCollector,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``--metrics-port``: ``/metrics``, ``/healthz``, ``/readyz`` until cancelled; ``started(port)``."""

    async def not_ready() -> str | None:
        return None if collector.processor.subscribed else BROKER_DOWN

    await serve_health(
        processor_registry(collector),
        not_ready,
        host=host,
        port=port,
        task_status=task_status,
    )
