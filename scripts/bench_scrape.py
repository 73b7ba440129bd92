"""Our gateway's figures for scripts/bench.py, read from its Prometheus endpoint (``--metrics-port``).

:class:`Scraper` scrapes ``/metrics`` every ``interval`` seconds while a run lasts, as Prometheus
would (so a run with metrics on pays what a scraped gateway pays), and keeps the last answer;
:func:`loop_figures` and :func:`gateway_counts` turn a scrape into the figures the benchmark
reports.  Parsing is prometheus_client's own (``text_string_to_metric_families``).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
PREFIX = "ocpp_gateway_"


def scrape(port: int, timeout: float = 5.0) -> Samples:
    """One scrape of ``http://127.0.0.1:port/metrics``: {(sample name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the gateway did not report it."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def loop_figures(samples: Samples) -> dict[str, float]:
    """The event loop's figures (gateway/looplag.py) as the gateway exports them."""
    lag_count = value(samples, PREFIX + "event_loop_lag_seconds_count")
    lag_sum = value(samples, PREFIX + "event_loop_lag_seconds_sum")
    young = max(value(samples, PREFIX + "gc_pause_max_seconds", generation=g) for g in ("0", "1"))
    return {
        "lag_max_ms": value(samples, PREFIX + "event_loop_lag_max_seconds") * 1000,
        "lag_mean_ms": lag_sum / lag_count * 1000 if lag_count else 0.0,
        "stalls": int(value(samples, PREFIX + "event_loop_stalls_total")),
        "stall_threshold_ms": 250.0,
        "full_gcs": int(value(samples, PREFIX + "gc_pause_seconds_count", generation="2")),
        "full_gc_max_ms": value(samples, PREFIX + "gc_pause_max_seconds", generation="2") * 1000,
        "young_gc_max_ms": young * 1000,
    }


def gateway_counts(samples: Samples) -> dict[str, float]:
    """What the gateway itself counted over the run: frames each way, admissions and refusals."""
    refused = sum(v for (name, _), v in samples.items() if name == PREFIX + "refusals_total")
    return {
        "frames_cp_to_mqtt": value(samples, PREFIX + "frames_total", direction="cp_to_mqtt"),
        "frames_mqtt_to_cp": value(samples, PREFIX + "frames_total", direction="mqtt_to_cp"),
        "admissions": value(samples, PREFIX + "admissions_total"),
        "refusals": refused,
        "calls_unanswered": value(samples, PREFIX + "calls_unanswered_total"),
        "cpu_seconds": value(samples, "process_cpu_seconds_total"),
        "rss_mib": value(samples, "process_resident_memory_bytes") / 2**20,
    }


class Scraper:
    """Scrapes a gateway every ``interval`` s in a thread until :meth:`stop` (which joins it)."""

    def __init__(self, port: int, interval: float = 5.0) -> None:
        self.port, self.interval = port, interval
        self.last: Samples | None = None
        self.scrapes = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._once()

    def _once(self) -> None:
        try:
            self.last = scrape(self.port)
            self.scrapes += 1
        except OSError as exc:  # urllib's errors are OSErrors: kept, shown with the run
            if len(self.errors) < 20:
                self.errors.append(str(exc))

    def stop(self) -> Samples | None:
        """Stop the thread, scrape once more (the run's final figures) and return them."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=self.interval + 10)
            self._once()
        return self.last

    def summary(self) -> dict[str, Any]:
        return {"scrapes": self.scrapes, "errors": self.errors}


def scrape_cpu_ms(port: int, cpu_seconds: Callable[[], float], scrapes: int = 20) -> float:
    """The gateway's CPU milliseconds per scrape, measured while it is idle: ``scrapes`` scrapes
    back to back, the gateway's CPU time (``cpu_seconds()``, from /proc) before and after,
    less what the same time idle costs it.  Direct, so not lost in a loaded run's noise."""
    start = cpu_seconds()
    began = time.perf_counter()
    for _ in range(scrapes):
        scrape(port)
    spent, took = cpu_seconds() - start, time.perf_counter() - began
    idle_start = cpu_seconds()
    time.sleep(took)
    idle = cpu_seconds() - idle_start
    return max(0.0, spent - idle) * 1000 / scrapes
