"""A token bucket (pure: the caller passes the clock)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = -1.0
    last: float | None = None

    def take(self, now: float) -> bool:
        """Spend one token at time ``now``; False when none is left."""
        if self.last is None:
            self.tokens, self.last = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Pacer:
    """Admission at ``rate`` per second with bursts of ``burst``, by waiting (GCRA; pure).

    :meth:`reserve` books the next free slot and says how long to wait for
    it, or refuses (books nothing) when that wait would exceed ``max_wait``.
    Used for MQTT connects: a reconnect storm is admitted at a bounded rate
    (AWS IoT limits connects per second per account) instead of failing.
    """

    rate: float
    burst: int = 1
    max_wait: float = 60.0
    _tat: float = float("-inf")  # theoretical arrival time of the next request

    def reserve(self, now: float) -> float | None:
        if self.rate <= 0:
            return 0.0
        interval = 1.0 / self.rate
        tat = max(self._tat, now)
        wait = max(0.0, tat - (self.burst - 1) * interval - now)
        if wait > self.max_wait:
            return None
        self._tat = tat + interval
        return wait
