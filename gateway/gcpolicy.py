"""When the garbage collector may stop the gateway, and for how long.

A gateway holding 10,000 charge points keeps a few million Python objects
alive, and every collection stops the one thread that serves every charge
point.  CPython's default policy goes wrong here twice:

* **Full collections** (generation 2) run whenever the objects promoted into
  the oldest generation grew by 25 %; at 5,000 CPs that was a 300-970 ms
  pause about once a minute (see docs/performance.md).
* **Young collections** (generations 0 and 1) are triggered by a counter of
  container *allocations minus deallocations*.  Under steady traffic each
  message frees objects of the previous one that had grown old (a CP's
  waiting coroutines, its last frame) and allocates their replacements, so
  the counter barely moves while the youngest generation fills up: at
  5,000 CPs the collector found 45,000 objects in generation 0 and 120,000
  in generation 1 when it finally ran, and those collections paused the
  loop 20-120 ms.

:class:`GcPolicy` runs one Trio task that changes three things:

* the objects that exist once the gateway is up (modules, classes,
  configuration) are frozen (``gc.freeze()``): they live for the whole
  process, and no collection walks them again;
* every ``young_interval`` seconds (default 0.1) generations 0 and 1 are
  collected, so each young collection handles what survived the last
  tenth of a second: a few milliseconds at 10,000 CPs.  CPython's own
  young collections still run when allocations outpace that;
* what start-up freed (the registry client's parsed model, import-time garbage) is given
  back to the system at once (glibc's ``malloc_trim``), not kept resident for the process's life;
* automatic full collections are off; one runs every ``full_interval``
  seconds (default 300), so the one long pause is bounded in frequency.

The price: cyclic garbage that lived past a young collection (for example
the objects of a disconnected CP's connection) waits up to
``full_interval`` seconds to be freed.  The two settings are independent:
``full_interval=0`` keeps CPython's full collections (and freezes nothing),
``young_interval=0`` keeps CPython's young collections only.
"""

from __future__ import annotations

import ctypes
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

    def __init__(self, full_interval: float = 300.0, young_interval: float = 0.1) -> None:
        self.full_interval = full_interval
        self.young_interval = young_interval
        self.full_collections = 0
        self.young_collections = 0
        self.last_pause_s = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply the policy until cancelled; CPython's own policy is back once the last one ends."""
        scheduled_full = self.full_interval > 0
        if not scheduled_full and self.young_interval <= 0:
            task_status.started()
            return
        if scheduled_full:
            self._activate()
        try:
            task_status.started()
            tick = self.young_interval if self.young_interval > 0 else self.full_interval
            next_full = trio.current_time() + self.full_interval
            while True:
                await trio.sleep(tick)
                if scheduled_full and trio.current_time() >= next_full:
                    self.collect()
                    next_full = trio.current_time() + self.full_interval
                elif self.young_interval > 0:
                    # Generation 1 with generation 0: what survives goes to the old generation at once,
                    # so each object is examined by one young collection, not two.
                    gc.collect(1)
                    self.young_collections += 1
        finally:
            if scheduled_full:
                self._deactivate()

    @classmethod
    def _activate(cls) -> None:
        cls._active += 1
        if cls._active == 1:
            gc.collect()
            gc.freeze()
            release_freed_memory()
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


def release_freed_memory() -> bool:
    """Give the C heap's free memory back to the system (glibc's ``malloc_trim(0)``); False
    where the C library has no such call (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: its C library's
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
