"""Thread-safe counts by label, for fakeiot's metrics (fakeiot/metrics.py reads them).

fakeiot counts on several threads: the broker's asyncio loop, its store worker, one thread per
API request, the Lambda workers.  ``count += 1`` on a shared int is a read, an add and a write
that two threads can interleave (an increment lost), and copying a dict another thread is adding
a key to can raise; a :class:`Tally` takes a lock for both, which costs well under a microsecond
per event.  It imports nothing of ``prometheus_client``: only a scrape loads that.
"""

from __future__ import annotations

import threading
from collections import Counter


class Tally:
    """Counts keyed by a tuple of label values; :meth:`add` from any thread, :meth:`snapshot` too."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, ...]] = Counter()

    def add(self, *labels: str, count: int = 1) -> None:
        with self._lock:
            self._counts[labels] += count

    def forget(self, first: str) -> None:
        """Drop every count whose first label is ``first`` (a label value that no longer exists)."""
        with self._lock:
            for labels in [k for k in self._counts if k[:1] == (first,)]:
                del self._counts[labels]

    def snapshot(self) -> dict[tuple[str, ...], int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())
