"""The one thread where fakeiot's broker runs store operations, off its asyncio event loop.

SQLite writes (a shadow update over MQTT, a rule's table item) can take
milliseconds, or wait for an HTTP API thread's transaction; on the broker's
event loop that would stall every client.  :class:`StoreWorker` runs them in
a single thread of its own, one at a time in the order they were submitted
(so two writes to the same shadow or table item land in the order the broker
saw the messages), and the caller resumes only once the operation has
committed (so nothing is published about a write before it is stored).  The
broker owns it and closes it, joining the thread, when it shuts down.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class StoreWorker:
    """Runs blocking store calls in one thread, in submission order (call :meth:`run` on the loop)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fakeiot-store")

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` in the worker thread; returns (or raises) what it did."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(function, *args, **kwargs)
        )

    def close(self) -> None:
        """Finish what was submitted and join the thread (idempotent)."""
        self._executor.shutdown(wait=True)
