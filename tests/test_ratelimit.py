"""The rate limits of gateway/ratelimit.py, on a clock the test drives (pure, no sockets, no sleeping)."""

from __future__ import annotations

import pytest

from gateway.ratelimit import KeyThrottle, Pacer, TokenBucket


def test_token_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)  # one token back after 0.5 s at 2/s
    assert [bucket.take(10.0) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]  # never above the burst


def test_pacer_admits_a_burst_at_once_then_one_per_interval() -> None:
    pacer = Pacer(rate=10.0, burst=3, max_wait=60.0)
    waits = [pacer.reserve(0.0) for _ in range(6)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3])


def test_pacer_refuses_past_max_wait_and_books_nothing() -> None:
    pacer = Pacer(rate=2.0, burst=1, max_wait=1.0)
    assert [pacer.reserve(0.0) for _ in range(3)] == pytest.approx([0.0, 0.5, 1.0])
    assert pacer.reserve(0.0) is None  # 1.5 s away: over max_wait
    assert pacer.reserve(0.0) is None  # the refusal booked no slot
    # Once time has passed, the next free slot (t = 1.5) is within reach again.
    assert pacer.reserve(0.6) == pytest.approx(0.9)


def test_pacer_recovers_its_burst_after_a_quiet_period() -> None:
    pacer = Pacer(rate=1.0, burst=2, max_wait=10.0)
    assert [pacer.reserve(0.0) for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])
    assert [pacer.reserve(100.0) for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])


def test_a_released_slot_goes_to_the_next_caller_first() -> None:
    pacer = Pacer(rate=1.0, burst=1, max_wait=10.0)
    assert pacer.reserve(0.0) == 0.0
    abandoned = pacer.reserve(0.0)
    assert abandoned is not None and abandoned == pytest.approx(1.0)
    pacer.release(0.0 + abandoned, now=0.2)  # its CP went away while waiting for t = 1
    assert pacer.reserve(0.3) == pytest.approx(
        0.7
    )  # the freed slot at t = 1, not a new one at t = 2
    assert pacer.reserve(0.3) == pytest.approx(1.7)  # then the booking continues at t = 2


def test_a_released_slot_already_past_is_not_handed_out() -> None:
    pacer = Pacer(rate=1.0, burst=1, max_wait=10.0)
    pacer.reserve(0.0)
    pacer.release(0.5, now=1.0)  # admit time already past: nothing to give back
    assert pacer.reserve(1.0) == pytest.approx(0.0)


def test_pacer_with_rate_zero_never_waits() -> None:
    pacer = Pacer(rate=0.0, burst=1, max_wait=0.0)
    assert [pacer.reserve(0.0) for _ in range(100)] == [0.0] * 100


def test_key_throttle_is_per_key_refunds_and_forgets_idle_keys() -> None:
    throttle = KeyThrottle(rate=1.0, burst=2)
    assert [throttle.allow("A", 0.0) for _ in range(3)] == [True, True, False]
    assert throttle.allow("B", 0.0)  # another key has its own bucket
    assert not throttle.would_allow("A", 0.5)
    assert throttle.would_allow("A", 1.0) and throttle.allow("A", 1.0)
    throttle.refund("A")
    assert throttle.allow("A", 1.0)
    assert len(throttle) == 2
    throttle.allow("C", 10.0)  # a prune runs: A and B have been quiet for longer than burst / rate
    assert len(throttle) == 1
