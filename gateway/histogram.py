"""A fixed-bucket histogram of plain ints (pure): cheap enough to observe on a hot path.

The gateway counts in plain attributes and leaves the Prometheus objects to scrape time
(:mod:`.metrics`): observing here is a short loop over a handful of bounds and two additions,
no lock, no label look-up.  :meth:`FixedHistogram.cumulative` gives what a Prometheus
histogram exposes (``le`` bounds with cumulative counts, ``+Inf`` last).
"""

from __future__ import annotations

# Seconds: from a fast local round trip to a slow CSMS or broker.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds: event-loop lag and GC pauses, where anything above 0.1 s is already bad.
PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class FixedHistogram:
    """Counts of observations per bucket (upper bounds ``bounds``, then +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be increasing")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # not cumulative; the last is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.total += value
        index = 0
        for bound in self.bounds:
            if value <= bound:
                break
            index += 1
        self.counts[index] += 1

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, observations <= le), ..., ("+Inf", all)]`` as Prometheus exposes them."""
        running = 0
        buckets: list[tuple[str, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return buckets
