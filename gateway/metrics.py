"""The gateway's Prometheus metrics: read from its plain counters at scrape time.

Nothing here runs per message.  The gateway counts in plain attributes where things happen
(:class:`.pumps.Traffic`, :class:`.session.Bridge`, :class:`.registry.Registry`,
:class:`.mqtt_link.MqttDriver`, :class:`.calls.CallTimeouts`, :class:`.looplag.LoopMonitor`
...); :class:`GatewayCollector` turns them into metric families when Prometheus scrapes,
in a :class:`prometheus_client.CollectorRegistry` of the gateway's own (never the global one:
several gateways in one process, as in the tests, each export their own figures).

docs/operations.md lists every metric with its meaning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .histogram import FixedHistogram
from .looplag import LoopMonitor
from .mqtt_link import MqttDriver
from .revocation import RegistryWatch
from .session import Bridge

PREFIX = "ocpp_gateway_"


def _histogram(
    name: str, documentation: str, histogram: FixedHistogram | None = None
) -> HistogramMetricFamily:
    """A histogram family; with ``histogram``, its one unlabelled sample is added."""
    family = HistogramMetricFamily(
        PREFIX + name, documentation, labels=[] if histogram is not None else None
    )
    if histogram is not None:
        _add(family, histogram, [])
    return family


def _add(family: HistogramMetricFamily, histogram: FixedHistogram, label_values: list[str]) -> None:
    family.add_metric(label_values, histogram.cumulative(), histogram.total)


@dataclass(eq=False)  # registered by identity (a CollectorRegistry hashes its collectors)
class GatewayCollector(Collector):
    """Every figure of one gateway process, as Prometheus metric families."""

    bridge: Bridge
    driver: MqttDriver
    loop: LoopMonitor
    watch: RegistryWatch | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        yield from self._traffic()
        yield from self._mqtt()
        yield from self._registry()
        yield from self._runtime()

    def _connections(self) -> Iterator[Metric]:
        bridge = self.bridge
        by_version = Counter(session.subprotocol for session in bridge.sessions.all())
        connected = GaugeMetricFamily(
            PREFIX + "connected_charge_points",
            "Charge points bridged to MQTT now, by OCPP version (the subprotocol agreed)",
            labels=["ocpp_version"],
        )
        for version in bridge.settings.subprotocols:
            connected.add_metric([version], by_version.get(version, 0))
        yield connected
        yield GaugeMetricFamily(
            PREFIX + "pending_connections",
            "Connections between their upgrade request and the end of admission",
            value=bridge.pending,
        )
        yield CounterMetricFamily(
            PREFIX + "admissions",
            "Charge point connections admitted and bridged",
            value=bridge.connections,
        )
        refusals = CounterMetricFamily(
            PREFIX + "refusals",
            "Connections refused with a WebSocket close, by close code and cause",
            labels=["close_code", "cause"],
        )
        for (code, cause), count in sorted(bridge.refusals.items()):
            refusals.add_metric([str(code), cause], count)
        yield refusals
        passwords = bridge.passwords
        failures = CounterMetricFamily(
            PREFIX + "auth_failures",
            "Upgrade requests answered HTTP 401 (checked and failed, or blocked after failures)",
            labels=["result"],
        )
        failures.add_metric(["failed"], passwords.failures - passwords.blocked)
        failures.add_metric(["blocked"], passwords.blocked)
        yield failures
        yield CounterMetricFamily(
            PREFIX + "password_hashes",
            "Slow password checks (PBKDF2) run",
            value=passwords.hashes,
        )
        yield GaugeMetricFamily(
            PREFIX + "draining", "1 while the gateway drains (refuses CPs)", value=bridge.draining
        )
        if self.watch is not None:
            yield CounterMetricFamily(
                PREFIX + "revocations",
                "Connected charge points closed because their Thing was deleted or its "
                "credentials changed",
                value=self.watch.revoked,
            )

    def _traffic(self) -> Iterator[Metric]:
        traffic = self.bridge.traffic
        frames = CounterMetricFamily(
            PREFIX + "frames",
            "WebSocket text frames forwarded, by direction",
            labels=["direction"],
        )
        frames.add_metric(["cp_to_mqtt"], traffic.frames_from_cp)
        frames.add_metric(["mqtt_to_cp"], traffic.frames_to_cp)
        yield frames
        data = CounterMetricFamily(
            PREFIX + "payload_bytes",
            "Bytes of the frames forwarded (UTF-8 payload), by direction",
            labels=["direction"],
        )
        data.add_metric(["cp_to_mqtt"], traffic.bytes_from_cp)
        data.add_metric(["mqtt_to_cp"], traffic.bytes_to_cp)
        yield data
        calls = self.bridge.calls
        round_trips = _histogram(
            "call_round_trip_seconds",
            "A charge point's CALL forwarded to MQTT -> the CSMS's answer forwarded to it "
            "(measured while --call-timeout is on)",
            calls.round_trips,
        )
        yield round_trips
        yield CounterMetricFamily(
            PREFIX + "calls_unanswered",
            "CALLs of charge points the CSMS did not answer within --call-timeout (the gateway "
            "answered them with a CALLERROR)",
            value=self.bridge.calls_timed_out,
        )
        yield GaugeMetricFamily(
            PREFIX + "calls_waiting",
            "CALLs of charge points waiting for the CSMS's answer now",
            value=len(calls),
        )

    def _mqtt(self) -> Iterator[Metric]:
        driver = self.driver
        yield GaugeMetricFamily(
            PREFIX + "mqtt_connections",
            "MQTT connections of charge points open now",
            value=driver.link_count,
        )
        connect = _histogram(
            "mqtt_connect_seconds",
            "Time to open a charge point's MQTT connection (TCP, TLS, CONNECT -> CONNACK)",
            driver.connect_seconds,
        )
        yield connect
        yield CounterMetricFamily(
            PREFIX + "mqtt_connect_failures",
            "Charge point MQTT connections the broker refused or that could not reach it",
            value=driver.connect_failures,
        )
        yield GaugeMetricFamily(
            PREFIX + "mqtt_connect_queue",
            "Charge points waiting for their turn under --mqtt-connect-rate now",
            value=driver.waiting,
        )
        yield CounterMetricFamily(
            PREFIX + "mqtt_connect_paced",
            "Charge point MQTT connections that had to wait for --mqtt-connect-rate",
            value=driver.admission_waits,
        )
        yield CounterMetricFamily(
            PREFIX + "mqtt_connect_rate_refusals",
            "Charge points closed because their turn would come after --mqtt-connect-max-wait",
            value=driver.admission_refusals,
        )
        if self.watch is not None:
            yield GaugeMetricFamily(
                PREFIX + "registry_events_connected",
                "1 while the connection receiving registry events ($aws/events/thing/...) is up",
                value=self.watch.subscribed,
            )

    def _registry(self) -> Iterator[Metric]:
        registry = self.bridge.registry
        yield CounterMetricFamily(
            PREFIX + "registry_lookups",
            "DescribeThing calls made to the Thing registry",
            value=registry.lookups,
        )
        yield CounterMetricFamily(
            PREFIX + "registry_cache_hits",
            "Registry look-ups answered from the gateway's cache",
            value=registry.cache_hits,
        )
        yield CounterMetricFamily(
            PREFIX + "registry_errors",
            "DescribeThing calls that failed (the registry unreachable or erring)",
            value=registry.errors,
        )
        yield CounterMetricFamily(
            PREFIX + "registry_rate_limited",
            "Registry look-ups refused by --registry-rate (the CP was told to retry)",
            value=registry.rate_limited,
        )

    def _runtime(self) -> Iterator[Metric]:
        loop = self.loop
        lag = _histogram(
            "event_loop_lag_seconds",
            f"How late the event loop woke a task that sleeps {loop.interval:g} s over and over",
            loop.lag,
        )
        yield lag
        pauses = HistogramMetricFamily(
            PREFIX + "gc_pause_seconds",
            "Garbage collector pauses, by generation (2: full collections)",
            labels=["generation"],
        )
        for generation, histogram in sorted(loop.gc_histograms.items()):
            _add(pauses, histogram, [str(generation)])
        yield pauses
        # The longest of each since start: a histogram's buckets only bound it.
        yield GaugeMetricFamily(
            PREFIX + "event_loop_lag_max_seconds",
            "The event loop's longest lag since the gateway started",
            value=loop.lag_max,
        )
        longest = GaugeMetricFamily(
            PREFIX + "gc_pause_max_seconds",
            "The longest garbage collector pause since the gateway started, by generation",
            labels=["generation"],
        )
        for generation, (_, _, pause_max, _) in sorted(loop.gc_pauses.items()):
            longest.add_metric([str(generation)], pause_max)
        yield longest
        yield CounterMetricFamily(
            PREFIX + "event_loop_stalls",
            f"Event loop wake-ups later than {loop.warn_after * 1000:.0f} ms (each one is logged, "
            "rate-limited)",
            value=loop.stalls,
        )


def gateway_registry(collector: GatewayCollector) -> CollectorRegistry:
    """A registry of this gateway's own: its collector and the process's figures (``process_*``).
    The global default registry is never used."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    # CPU seconds, resident memory, open file descriptors of this process (read from /proc at
    # scrape time; absent where there is no /proc).
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """``registry``'s exposition in the format the scraper's ``Accept`` header asks for (the
    Prometheus text format, or OpenMetrics), and its content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
