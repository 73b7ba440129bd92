"""scripts/bench.py's plan: which gateways run (:class:`Variant`), the sizes, loads and timings
(:class:`Plan`), and how long the whole plan takes.  Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from bench_peer import PeerSpec

PREFIX = "LT"
CONNECT_RATE = 500.0  # the throughput runs' ramps (and the gateway's --mqtt-connect-rate)
RUN_OVERHEAD_S = 8.0  # start, 1 s idle, stop and the load test's own start, per run
SCRAPE_INTERVAL = 5.0  # our gateway's /metrics, as a (keen) Prometheus would scrape it


@dataclass(frozen=True)
class Variant:
    """One gateway under test: ours (plain or TLS to the broker) or a peer."""

    name: str
    tls: bool = False
    peer: PeerSpec | None = None
    metrics: bool = True  # ours: --metrics-port, scraped every SCRAPE_INTERVAL s during the run


@dataclass(frozen=True)
class Plan:
    sizes: list[int]
    hold: float
    ramp: float
    storm: int
    storm_hold: float
    throughput_cps: int
    loads: list[int]
    window: float
    late_cps: int
    boot_delay: float
    repeat: int
    parts: set[str]
    # The metrics part: ours with and without --metrics-port at a load the machine carries (not
    # saturated, so both forward what is offered and CPU per message is all that differs).
    metrics_load: int = 500
    metrics_cps: int = 250
    metrics_pairs: int = 4

    def scale_seconds(self, n: int) -> float:
        return n / self.ramp + self.boot_delay + self.hold

    def throughput_timeline(self) -> tuple[float, float, float]:
        """(measure from, late group at, duration) in seconds after the load test's start."""
        measure_from = self.throughput_cps / CONNECT_RATE + self.boot_delay + 3.0
        late_at = measure_from + self.window + 0.5
        duration = late_at + self.late_cps / CONNECT_RATE + self.boot_delay + 5.0
        return measure_from, late_at, duration

    def metrics_timeline(self) -> tuple[float, float]:
        """(measure from, duration) in seconds after the load test's start, for the metrics part."""
        measure_from = self.metrics_cps / CONNECT_RATE + self.boot_delay + 3.0
        return measure_from, measure_from + self.window + 1.0

    def estimate_s(self, scale_variants: int, other_variants: int, quiet: bool = False) -> float:
        """Seconds the plan takes; ``quiet``: ours without metrics runs (the metrics part)."""
        repeated = 0.0  # the parts run --repeat times per gateway
        if "scale" in self.parts:
            repeated += scale_variants * sum(
                self.scale_seconds(n) + RUN_OVERHEAD_S for n in self.sizes
            )
        if "storm" in self.parts and self.storm:
            repeated += other_variants * (self.storm_hold + RUN_OVERHEAD_S)
        if "throughput" in self.parts:
            repeated += (
                scale_variants * len(self.loads) * (self.throughput_timeline()[2] + RUN_OVERHEAD_S)
            )
        once = 0.0  # the metrics part: --metrics-pairs pairs, one run with metrics and one without
        if "metrics" in self.parts and quiet:
            once = 2 * self.metrics_pairs * (self.metrics_timeline()[1] + RUN_OVERHEAD_S)
        return repeated * self.repeat + once + 30.0  # + the stack and the registrations
