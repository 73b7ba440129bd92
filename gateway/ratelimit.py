"""Rate limits (pure: the caller passes the clock): a token bucket, a pacer, a per-key throttle."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


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
    _released: list[float] = field(
        default_factory=list
    )  # booked admission times given back (a heap)

    def reserve(self, now: float) -> float | None:
        """Book a slot: the seconds to wait for it, or None (nothing booked) if over ``max_wait``.

        A slot given back with :meth:`release` is handed to the next caller
        first, so a request abandoned while it waited costs nobody a slot.
        """
        if self.rate <= 0:
            return 0.0
        while self._released:
            at = heapq.heappop(self._released)
            if at > now:
                return at - now
        interval = 1.0 / self.rate
        tat = max(self._tat, now)
        wait = max(0.0, tat - (self.burst - 1) * interval - now)
        if wait > self.max_wait:
            return None
        self._tat = tat + interval
        return wait

    def release(self, admit_at: float, now: float) -> None:
        """Give back the slot booked for ``admit_at`` by a request that no longer waits for it."""
        if self.rate > 0 and admit_at > now:
            heapq.heappush(self._released, admit_at)


@dataclass
class KeyThrottle:
    """At most ``rate`` events per second per key, bursts of ``burst`` (pure).

    AWS IoT accepts one MQTT CONNECT per second per client id; the gateway
    applies the same bound per charge point id before it opens anything, so
    one id reconnecting in a tight loop (or two chargers configured with the
    same id) costs at most ``rate`` connects per second.  Keys whose bucket
    is full again are forgotten, so memory stays bounded by the keys active
    in the last ``burst / rate`` seconds.
    """

    rate: float = 1.0
    burst: int = 3
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _next_prune: float = 0.0

    def allow(self, key: str, now: float) -> bool:
        """Spend one of ``key``'s tokens; False (nothing spent) when it has none."""
        if self.rate <= 0:
            return True
        if now >= self._next_prune:
            self._prune(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket.take(now)

    def refund(self, key: str) -> None:
        """Give back a token spent with :meth:`allow` (the event it paid for did not happen)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(float(self.burst), bucket.tokens + 1.0)

    def would_allow(self, key: str, now: float) -> bool:
        """Whether :meth:`allow` would succeed now, without spending anything."""
        bucket = self._buckets.get(key)
        if self.rate <= 0 or bucket is None or bucket.last is None:
            return True
        return min(self.burst, bucket.tokens + (now - bucket.last) * self.rate) >= 1.0

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        refill = self.burst / self.rate
        self._buckets = {
            k: b for k, b in self._buckets.items() if b.last is not None and now - b.last < refill
        }
        self._next_prune = now + refill


@dataclass
class FailureBackoff:
    """Exponential backoff after repeated failures, per key (pure).

    The first ``free`` failures of a key cost nothing; after that the key is
    blocked for ``base * 2**k`` seconds after each failure (k = failures
    beyond ``free``), at most ``cap``.  A success clears the key; a key quiet
    for ``2 * cap`` is forgotten, so memory is bounded by the keys failing
    recently.  Used against password guessing, per source address and per
    charge point id.
    """

    free: int = 5
    base: float = 1.0
    cap: float = 300.0
    _failures: dict[str, tuple[int, float]] = field(
        default_factory=dict
    )  # key -> (count, last failure)
    _next_prune: float = 0.0

    def blocked_for(self, key: str, now: float) -> float:
        """Seconds ``key`` must still wait (0: it may try now)."""
        entry = self._failures.get(key)
        if entry is None or entry[0] < self.free:
            return 0.0
        count, last = entry
        return max(0.0, last + min(self.cap, self.base * 2.0 ** min(count - self.free, 30)) - now)

    def failed(self, key: str, now: float) -> None:
        if now >= self._next_prune:
            self._failures = {k: v for k, v in self._failures.items() if now - v[1] < 2 * self.cap}
            self._next_prune = now + self.cap
        count = self._failures.get(key, (0, now))[0]
        self._failures[key] = (count + 1, now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
