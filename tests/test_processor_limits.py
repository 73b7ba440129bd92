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
from gateway.mqtt_link import MqttDriver
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


async def test_the_version_map_is_bounded_and_a_forgotten_cp_is_read_from_its_shadow(
    gateway: RunningGateway, register: Callable[..., None], device_driver: MqttDriver
) -> None:
    """Every device that published a valid ``ocppProtocol`` shadow update added an entry for ever."""
    processor = gateway.processor
    assert processor is not None
    processor.versions.max_known = 3  # as ProcessorSettings(max_known_versions=3) would
    devices = [f"CPV{n}" for n in range(6)]
    register(*devices)
    update = b'{"state":{"reported":{"ocppProtocol":"ocpp1.6"}}}'
    for device in devices:
        async with device_driver.link(device) as link:
            await link.subscribe(f"{device}/out", 1)
            await link.publish(f"$aws/things/{device}/shadow/update", update, qos=1)
            # A CALL after the update (same client: in order): answered as 1.6 (idTagInfo).
            await link.publish(f"{device}/in", b'[2,"a1","Authorize",{"idTag":"T1"}]', qos=1)
            with trio.fail_after(10):
                _, answer = await link.receive()
            assert json.loads(answer) == [3, "a1", {"idTagInfo": {"status": "Accepted"}}]
        assert len(processor.versions.known) <= 3
    assert list(processor.versions.known) == devices[-3:]
    # The first device was forgotten: its version comes from its shadow again, not the 2.0.1 default.
    async with device_driver.link(devices[0]) as link:
        await link.subscribe(f"{devices[0]}/out", 1)
        await link.publish(f"{devices[0]}/in", b'[2,"a2","Authorize",{"idTag":"T1"}]', qos=1)
        with trio.fail_after(10):
            _, answer = await link.receive()
    assert json.loads(answer) == [3, "a2", {"idTagInfo": {"status": "Accepted"}}]
    assert len(processor.versions.known) == 3 and devices[0] in processor.versions.known
