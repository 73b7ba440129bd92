"""The event-loop lag monitor and the garbage-collection policy, in a real Trio loop."""

from __future__ import annotations

import gc
import logging
import time

import pytest
import trio
from trio.testing import MockClock

from gateway.gcpolicy import GcPolicy
from gateway.looplag import LoopMonitor


async def test_a_blocking_call_shows_up_as_a_stall(caplog: pytest.LogCaptureFixture) -> None:
    # Real time on purpose: the stall is a real blocking call, which only the real clock sees.
    monitor = LoopMonitor(interval=0.01, warn_after=0.1)
    with caplog.at_level(logging.WARNING, logger="gateway.looplag"):
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)
            await trio.sleep(0.05)
            time.sleep(0.3)  # what a slow callback does to every other task
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert monitor.stalls == 1
    assert 0.25 <= monitor.lag_max < 1.0
    assert monitor.samples > 3
    assert [r.getMessage() for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert "1 stalls over 100 ms" in monitor.describe() and "young GCs max" in monitor.describe()


async def test_gc_pauses_are_timed_by_generation() -> None:
    monitor = LoopMonitor()
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        gc.collect(2)
        nursery.cancel_scope.cancel()
    assert monitor.summary()["gc"]["gen2"]["count"] >= 1
    assert monitor._on_gc not in gc.callbacks  # the hook is removed with the task


async def test_gc_policy_schedules_full_collections_and_restores_cpython_defaults(
    autojump_clock: MockClock,
) -> None:
    before = gc.get_threshold()
    policy = GcPolicy(full_interval=0.05)  # checked every young_interval (0.1 s by default)
    async with trio.open_nursery() as nursery:
        await nursery.start(policy.run)
        assert gc.get_threshold()[:2] == before[:2]  # young collections unchanged
        assert gc.get_threshold()[2] > 1_000_000  # no automatic full collections
        assert gc.get_freeze_count() > 0  # what existed at start-up is frozen
        await trio.sleep(0.25)  # on the autojump clock: ticks at 0.1 and 0.2 s
        assert policy.full_collections == 2 and policy.young_collections == 0
        nursery.cancel_scope.cancel()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_young_collections_keep_up_with_steady_churn(autojump_clock: MockClock) -> None:
    # The gateway's steady state in miniature: each new object replaces an old one, so CPython's
    # allocations-minus-deallocations counter never reaches its threshold.
    old = [[i] for i in range(20_000)]
    policy = GcPolicy(full_interval=60, young_interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(policy.run)
        for i in range(len(old)):
            old[i] = [i]
        assert len(gc.get_objects(0)) >= 19_000  # CPython alone has not collected them
        await trio.sleep(0.025)  # on the autojump clock: ticks at 0.01 and 0.02 s
        assert policy.young_collections == 2
        assert len(gc.get_objects(0)) + len(gc.get_objects(1)) < 5_000
        nursery.cancel_scope.cancel()


async def test_gc_policy_zero_keeps_cpython_policy() -> None:
    before = gc.get_threshold()
    async with trio.open_nursery() as nursery:
        await nursery.start(GcPolicy(full_interval=0, young_interval=0).run)
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        nursery.cancel_scope.cancel()


async def test_young_collections_run_with_cpython_full_collections(
    autojump_clock: MockClock,
) -> None:
    before = gc.get_threshold()
    policy = GcPolicy(full_interval=0, young_interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(policy.run)
        assert (
            gc.get_threshold() == before and gc.get_freeze_count() == 0
        )  # full collections: CPython's
        await trio.sleep(0.035)  # on the autojump clock: ticks at 0.01, 0.02 and 0.03 s
        assert policy.young_collections == 3
        nursery.cancel_scope.cancel()
    assert policy.full_collections == 0
