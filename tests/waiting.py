"""Waiting for a condition instead of sleeping for a guessed time.

Where a test can be told (an event, a message, a line of output), it waits for that.  Where the
state it waits for is changed by another thread (paho's network loop, boto3 calls run in threads)
or another process, nothing can wake the test up: :func:`until` polls the condition with a short
interval under a deadline, and fails with a message that says what did not happen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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


async def until_protocol_recorded(aws: Any, cp_id: str) -> None:
    """Wait until the gateway has recorded ``cp_id``'s OCPP version in its shadow.

    The gateway publishes it over MQTT just after the WebSocket opens, so a test that commands
    a CP at once could find no version yet (the command API's 409) unless it waits for this.
    """

    def recorded() -> bool:
        try:
            payload = aws[1].get_thing_shadow(thingName=cp_id)["payload"].read()
            return "ocppProtocol" in json.loads(payload)["state"]["reported"]
        except Exception:  # noqa: BLE001 - no shadow yet
            return False

    await until(recorded, what=f"the gateway recorded {cp_id}'s protocol in its shadow")
