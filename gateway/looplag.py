"""How late the Trio event loop runs its tasks, and how long the GC stops it.

Everything in a gateway process shares one thread: a callback that takes
200 ms delays every charge point's frames by 200 ms.  :class:`LoopMonitor`
makes that visible.  A task sleeps ``interval`` seconds over and over and
records how much later than asked it woke up (the *lag*), and a
``gc.callbacks`` hook records every garbage-collector pause by generation,
so a stall can be told apart from a full collection.  Stalls longer than
``warn_after`` are logged (at most one line per ``warn_every`` seconds);
:meth:`LoopMonitor.summary` has the figures (the gateway logs them when it
stops; the load generator prints its own, so a slow generator is never
mistaken for a slow gateway).
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from .histogram import PAUSE_BUCKETS, FixedHistogram

log = logging.getLogger(__name__)


@dataclass
class LoopMonitor:
    interval: float = 0.05
    warn_after: float = 0.25
    warn_every: float = 10.0
    log_stalls: bool = True
    samples: int = 0
    lag_max: float = 0.0
    lag_total: float = 0.0
    stalls: int = 0  # wake-ups later than warn_after
    # Per generation: [count, total, max, last] seconds (running figures: nothing grows).
    gc_pauses: dict[int, list[float]] = field(
        default_factory=lambda: {g: [0, 0.0, 0.0, 0.0] for g in (0, 1, 2)}
    )
    # The same figures as fixed-bucket histograms, for :mod:`.metrics`.
    lag: FixedHistogram = field(default_factory=lambda: FixedHistogram(PAUSE_BUCKETS))
    gc_histograms: dict[int, FixedHistogram] = field(
        default_factory=lambda: {g: FixedHistogram(PAUSE_BUCKETS) for g in (0, 1, 2)}
    )
    _gc_started: float | None = None
    _last_warning: float = float("-inf")

    # -- the GC hook ------------------------------------------------------------

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            pause = time.perf_counter() - self._gc_started
            figures = self.gc_pauses[info["generation"]]
            figures[0] += 1
            figures[1] += pause
            figures[2] = max(figures[2], pause)
            figures[3] = pause
            self.gc_histograms[info["generation"]].observe(pause)
            self._gc_started = None

    # -- the probe -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample until cancelled (start it in a nursery)."""
        gc.callbacks.append(self._on_gc)
        try:
            task_status.started()
            while True:
                asked = trio.current_time() + self.interval
                await trio.sleep_until(asked)
                self.record(trio.current_time() - asked)
        finally:
            gc.callbacks.remove(self._on_gc)

    def record(self, lag: float) -> None:
        self.samples += 1
        self.lag.observe(lag)
        self.lag_total += lag
        self.lag_max = max(self.lag_max, lag)
        if lag < self.warn_after:
            return
        self.stalls += 1
        now = time.monotonic()
        if self.log_stalls and now - self._last_warning >= self.warn_every:
            self._last_warning = now
            log.warning(
                "event loop stalled %.0f ms (stalls over %.0f ms so far: %d; last full GC %.0f ms)",
                lag * 1000,
                self.warn_after * 1000,
                self.stalls,
                self.gc_pauses[2][3] * 1000,
            )

    def summary(self) -> dict[str, Any]:
        def pauses(generation: int) -> dict[str, float | int]:
            count, total, longest, _ = self.gc_pauses[generation]
            return {"count": int(count), "max_ms": longest * 1000, "total_ms": total * 1000}

        return {
            "lag_max_ms": self.lag_max * 1000,
            "lag_mean_ms": (self.lag_total / self.samples * 1000) if self.samples else 0.0,
            "stalls": self.stalls,
            "stall_threshold_ms": self.warn_after * 1000,
            "gc": {f"gen{g}": pauses(g) for g in (0, 1, 2)},
        }

    def describe(self) -> str:
        s = self.summary()
        gen2 = s["gc"]["gen2"]
        young = max(s["gc"]["gen0"]["max_ms"], s["gc"]["gen1"]["max_ms"])
        return (
            f"event loop lag max {s['lag_max_ms']:.0f} ms, mean {s['lag_mean_ms']:.1f} ms, "
            f"{s['stalls']} stalls over {s['stall_threshold_ms']:.0f} ms; "
            f"full GCs {gen2['count']} (max {gen2['max_ms']:.0f} ms), young GCs max {young:.0f} ms"
        )
