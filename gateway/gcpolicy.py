"""When the garbage collector may stop the gateway, and for how long.

A gateway holding 10,000 charge points keeps a few million Python objects
alive.  CPython's default policy runs a *full* (generation 2) collection
whenever the objects promoted into the oldest generation grew by 25 %, and
at that size a full collection stops the one thread that serves every
charge point for most of a second (measured: 300-970 ms at 5,000 CPs, see
BENCHMARKS.md).  Under steady traffic that happens every minute or so, and
each time every CP's frames wait.

:class:`GcPolicy` changes two things and nothing else:

* the objects that exist once the gateway is up (modules, classes,
  configuration) are frozen (``gc.freeze()``): they live for the whole
  process, and no collection walks them again;
* automatic full collections are off; instead a full collection runs every
  ``full_interval`` seconds (default 300), from a Trio task, so the pause is
  bounded in frequency and predictable.  Young collections (generations 0
  and 1, a few milliseconds) stay automatic, so short-lived cycles are
  still reclaimed at once.

The price: cyclic garbage that reached the oldest generation (for example
the objects of a disconnected CP's connection) waits up to
``full_interval`` seconds to be freed.  ``full_interval=0`` keeps CPython's
default policy.
"""

from __future__ import annotations

import gc
import logging
import time

import trio

log = logging.getLogger(__name__)

# gc.set_threshold's third value counts generation-1 collections between full ones; with this many,
# CPython itself (almost) never starts one.
_NEVER = 1 << 30


class GcPolicy:
    # Several gateways in one process (tests) share the interpreter's collector: the first one
    # that starts changes the thresholds, the last one that stops puts them back.
    _active = 0
    _saved: tuple[int, int, int] | None = None

    def __init__(self, full_interval: float = 300.0) -> None:
        self.full_interval = full_interval
        self.full_collections = 0
        self.last_pause_s = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply the policy until cancelled; CPython's own policy is back once the last one ends."""
        if self.full_interval <= 0:
            task_status.started()
            return
        self._activate()
        try:
            task_status.started()
            while True:
                await trio.sleep(self.full_interval)
                self.collect()
        finally:
            self._deactivate()

    @classmethod
    def _activate(cls) -> None:
        cls._active += 1
        if cls._active == 1:
            gc.collect()
            gc.freeze()
            cls._saved = gc.get_threshold()
            gen0, gen1, _ = cls._saved
            gc.set_threshold(gen0, gen1, _NEVER)

    @classmethod
    def _deactivate(cls) -> None:
        cls._active -= 1
        if cls._active == 0 and cls._saved is not None:
            gc.set_threshold(*cls._saved)
            gc.unfreeze()

    def collect(self) -> int:
        """One full collection now; returns the number of objects it freed."""
        started = time.perf_counter()
        freed = gc.collect(2)
        self.last_pause_s = time.perf_counter() - started
        self.full_collections += 1
        log.debug("full GC: %d unreachable objects, %.0f ms", freed, self.last_pause_s * 1000)
        return freed
