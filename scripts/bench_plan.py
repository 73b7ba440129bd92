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

    def scale_seconds(self, n: int) -> float:
        return n / self.ramp + self.boot_delay + self.hold

    def throughput_timeline(self) -> tuple[float, float, float]:
        """(measure from, late group at, duration) in seconds after the load test's start."""
        measure_from = self.throughput_cps / CONNECT_RATE + self.boot_delay + 3.0
        late_at = measure_from + self.window + 0.5
        duration = late_at + self.late_cps / CONNECT_RATE + self.boot_delay + 5.0
        return measure_from, late_at, duration

    def estimate_s(self, scale_variants: int, other_variants: int, quiet: bool = False) -> float:
        total = 0.0
        if "scale" in self.parts:
            total += scale_variants * sum(
                self.scale_seconds(n) + RUN_OVERHEAD_S for n in self.sizes
            )
        if "storm" in self.parts and self.storm:
            total += other_variants * (self.storm_hold + RUN_OVERHEAD_S)
        if "throughput" in self.parts:
            total += (
                (scale_variants + quiet)
                * len(self.loads)
                * (self.throughput_timeline()[2] + RUN_OVERHEAD_S)
            )
        return total * self.repeat + 30.0  # the stack and the registrations
