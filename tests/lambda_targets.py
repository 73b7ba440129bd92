"""Functions fakeiot's Lambda action runs in the tests (``tests.lambda_targets:<name>``).

Each records what it was given in :data:`CALLS` (event, context attributes, thread name) so that
a test can check how it was invoked.  ``blocking`` waits on :data:`RELEASE` (bounded), to hold a
worker while a test floods the runner; ``failing`` raises; ``exiting`` calls ``sys.exit``.

Also a processor handler module (``PROCESSOR_HANDLERS=tests.lambda_targets``): a Heartbeat
handler that never answers in time.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import trio

from gateway.processor.handlers import Call, Json, handler

CALLS: list[dict[str, Any]] = []
RELEASE = threading.Event()
_lock = threading.Lock()


def _record(event: Any, context: Any) -> None:
    with _lock:
        CALLS.append(
            {
                "event": event,
                "function_name": context.function_name,
                "aws_request_id": context.aws_request_id,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "thread": threading.current_thread().name,
            }
        )


def recording(event: Any, context: Any) -> dict[str, Any]:
    _record(event, context)
    return {"ok": True}


def blocking(event: Any, context: Any) -> None:
    _record(event, context)
    RELEASE.wait(timeout=10)


def failing(event: Any, context: Any) -> None:
    _record(event, context)
    raise RuntimeError("the function failed on purpose")


def exiting(event: Any, context: Any) -> None:
    _record(event, context)
    sys.exit(3)


def reset() -> None:
    with _lock:
        CALLS.clear()
    RELEASE.clear()


not_callable = 42


@handler("2.0.1", "Heartbeat")
async def slow_heartbeat(call: Call) -> Json:
    await trio.sleep(60)
    return {"currentTime": call.context.now()}
