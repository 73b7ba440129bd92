"""Bounds of the message processor against hostile charge points (review rev-proc).

Each test reproduces one finding through real sockets where the behaviour crosses one: a CP
through the embedded gateway, or straight on MQTT; pure bounds are unit-tested directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from gateway.app import RunningGateway
from gateway.chargepoint import connect, heartbeat
from gateway.processor.handlers import Call


async def test_a_handler_that_never_returns_is_answered_internal_error_in_time(
    gateway: RunningGateway, register: Callable[..., None]
) -> None:
    """A hung handler held its slot (and the broker's in-flight window) for ever: after enough of
    them no CP was answered.  Now each CALL is bounded by the handler timeout."""
    processor = gateway.processor
    assert processor is not None

    async def hangs(call: Call) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    processor.handlers.register("2.0.1", "DataTransfer", hangs)
    processor.settings = replace(processor.settings, handler_timeout=0.5)
    register("CPHANG")
    async with connect(gateway.url, "CPHANG") as cp:
        for n in range(3):
            await cp.send_text(json.dumps([2, f"dt-{n}", "DataTransfer", {"vendorId": "x"}]))
        # Well before the gateway's own --call-timeout (30 s): the processor answered.
        with trio.fail_after(5):
            answers = [json.loads(await cp.receive_text()) for _ in range(3)]
        assert sorted(a[1] for a in answers) == ["dt-0", "dt-1", "dt-2"]
        for answer in answers:
            assert answer[0] == 4 and answer[2] == "InternalError"
            assert "0.5 s" in answer[3]
        assert not processor._answering  # no slot held
        with trio.fail_after(10):
            assert "currentTime" in await cp.call(*heartbeat())
