"""Waiting for a condition instead of sleeping for a guessed time.

Where a test can be told (an event, a message, a line of output), it waits for that.  Where the
state it waits for is changed by another thread (paho's network loop, boto3 calls run in threads)
or another process, nothing can wake the test up: :func:`until` polls the condition with a short
interval under a deadline, and fails with a message that says what did not happen.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


async def until(
    predicate: Callable[[], object],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str | None = None,
) -> None:
    """Return once ``predicate()`` is true; AssertionError after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(interval)
        return
    raise AssertionError(f"not true within {timeout:g} s: {what or _describe(predicate)}")


def _describe(predicate: Callable[[], object]) -> str:
    code = getattr(predicate, "__code__", None)
    if code is None:
        return repr(predicate)
    return f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"
