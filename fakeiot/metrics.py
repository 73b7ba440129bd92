"""fakeiot's Prometheus metrics (``GET /metrics`` on its API port), read at scrape time.

fakeiot counts where things happen, in :class:`~fakeiot.tally.Tally` objects (thread-safe:
the broker's loop, its store thread and the API's request threads all count) or, for a count
only the broker's loop writes, a plain int; :class:`FakeIotCollector` turns them into metric
families when scraped, in a registry of its own (never the global one: the tests run several
fakeiots in one process).

``/metrics`` answers without a SigV4 signature, like ``/health``: it holds counts only, labelled
by fixed words, API route patterns and rule names, never a Thing name, client id, payload or
key (see docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .api import IotApi
from .broker import FakeIotBroker
from .rules import RulesEngine

PREFIX = "fakeiot_"


@dataclass(eq=False)  # registered by identity
class FakeIotCollector(Collector):
    """The figures of one fakeiot: broker, rules, registry API, shadows."""

    broker: FakeIotBroker
    api: IotApi
    rules: RulesEngine | None
    # The connected MQTT clients, counted on the broker's loop (None: it did not answer).
    connected: Callable[[], int | None]

    def collect(self) -> Iterator[Metric]:
        broker = self.broker
        connected = self.connected()
        if connected is not None:
            yield GaugeMetricFamily(
                PREFIX + "mqtt_connected_clients", "MQTT clients connected now", value=connected
            )
        yield CounterMetricFamily(
            PREFIX + "mqtt_messages_published",
            "Messages the broker routed: from clients, the API (Publish, registry events), "
            "shadow answers, rule republishes and presence events",
            value=broker.published.total(),
        )
        yield CounterMetricFamily(
            PREFIX + "mqtt_messages_delivered",
            "Messages written to subscribed clients (one per receiving client)",
            value=broker.counters.delivered,
        )
        yield CounterMetricFamily(
            PREFIX + "mqtt_messages_dropped",
            "Messages dropped because a client's outgoing queue was full",
            value=broker.counters.dropped,
        )
        refusals = CounterMetricFamily(
            PREFIX + "policy_refusals",
            "Requests the IoT policy refused, by action: connect (CONNECT refused), publish "
            "(the client is disconnected), subscribe",
            labels=["action"],
        )
        counts = broker.policy_refusals.snapshot()
        for action in ("connect", "publish", "subscribe"):
            refusals.add_metric([action], counts.get((action,), 0))
        yield refusals
        yield from self._rules()
        yield from self._console()
        calls = CounterMetricFamily(
            PREFIX + "api_requests",
            "Requests to the HTTP API (registry, shadows, rules, DynamoDB...), by route and status",
            labels=["operation", "status"],
        )
        for (operation, status), count in sorted(self.api.calls.snapshot().items()):
            calls.add_metric([operation, status], count)
        yield calls
        updates = CounterMetricFamily(
            PREFIX + "shadow_updates",
            "Shadow updates (over MQTT or the API), by result",
            labels=["result"],
        )
        counts = self.api.shadows.updates.snapshot()
        for result in ("accepted", "rejected"):
            updates.add_metric([result], counts.get((result,), 0))
        yield updates

    def _rules(self) -> Iterator[Metric]:
        executions = CounterMetricFamily(
            PREFIX + "rule_executions",
            "Rules run on a message whose topic they match, by rule and outcome (selected, "
            "filtered, error, action_failed)",
            labels=["rule", "outcome"],
        )
        if self.rules is not None:
            for (rule, outcome), count in sorted(self.rules.executions.snapshot().items()):
                executions.add_metric([rule, outcome], count)
        yield executions

    def _console(self) -> Iterator[Metric]:
        tap = self.broker.tap  # None: fakeiot serves no console (--no-console)
        if tap is None:
            return
        yield GaugeMetricFamily(
            PREFIX + "console_live_views",
            "Live MQTT views of the web console open now",
            value=tap.viewers,
        )
        yield CounterMetricFamily(
            PREFIX + "console_frames_dropped",
            "Messages a live view of the web console missed because it fell behind (queue full)",
            value=tap.dropped,
        )
        yield CounterMetricFamily(
            PREFIX + "console_views_refused",
            "Live views refused because the most allowed were open",
            value=tap.refused_viewers,
        )


def fakeiot_registry(collector: FakeIotCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition in the format ``accept`` asks for, and its content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
