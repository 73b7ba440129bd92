"""The gateway answers a CP whose CALL the CSMS never answers: the pure tracker, and end to end."""

from __future__ import annotations

import json
from typing import Any

import trio

from fakeiot import FakeIot
from gateway.app import RunningGateway, run_gateway
from gateway.calls import CallTimeouts, frame_kind, timeout_call_error
from gateway.chargepoint import CallErrorReceived, connect, heartbeat
from gateway.mqtt_link import MqttDriver

from .conftest import gateway_config


def test_frame_kind_reads_type_and_id_without_parsing() -> None:
    assert frame_kind('[2,"a1","Heartbeat",{}]') == (2, "a1")
    assert frame_kind(' [ 3 , "a1" , {}]') == (3, "a1")
    assert frame_kind('[4,"x","InternalError","",{}]') == (4, "x")
    for text in (
        '[5,"a",{}]',
        '[2,1,"Heartbeat",{}]',
        '{"a":1}',
        "",
        '[2,"' + "x" * 37 + '"]',
        '[2,"a\\"b"]',
    ):
        assert frame_kind(text) is None


def test_a_call_times_out_once_and_a_late_answer_is_dropped() -> None:
    calls = CallTimeouts(timeout=10)
    calls.sent_by_cp("cp", '[2,"1","Heartbeat",{}]', now=0)
    assert calls.expired(9.9) == []
    assert calls.expired(10) == [("cp", "1")]
    assert calls.expired(20) == []  # reported once
    # Late: the CP already had its CALLERROR.
    assert calls.sent_to_cp("cp", '[3,"1",{}]', 20) is False
    assert calls.sent_to_cp("cp", '[2,"9","Reset",{}]', 20) is True  # CSMS CALLs always go through
    calls.sent_by_cp("cp", '[2,"2","Heartbeat",{}]', now=20)
    assert calls.sent_to_cp("cp", '[3,"2",{}]', 20) is True  # answered in time
    assert calls.expired(100) == [] and len(calls) == 0
    calls.forget("cp")
    assert calls.sent_to_cp("cp", '[3,"1",{}]', 100) is True


def test_answered_calls_record_their_round_trip() -> None:
    calls = CallTimeouts(timeout=10)
    calls.sent_by_cp("a", '[2,"1","Heartbeat",{}]', now=0)
    calls.sent_by_cp("b", '[2,"1","Heartbeat",{}]', now=0)
    assert calls.sent_to_cp("a", '[3,"1",{}]', 0.003) is True
    assert calls.sent_to_cp("b", '[4,"1","InternalError","",{}]', 0.2) is True
    assert calls.sent_to_cp("b", '[3,"7",{}]', 0.3) is True  # answers nothing waiting: not timed
    histogram = calls.round_trips
    assert histogram.count == 2 and abs(histogram.total - 0.203) < 1e-9
    buckets = dict(histogram.cumulative())
    assert (buckets["0.0025"], buckets["0.005"], buckets["0.1"], buckets["0.25"]) == (0, 1, 1, 2)
    assert buckets["+Inf"] == 2


def test_zero_disables_and_the_error_is_valid_ocpp_j() -> None:
    calls = CallTimeouts(timeout=0)
    calls.sent_by_cp("cp", '[2,"1","Heartbeat",{}]', now=0)
    assert calls.expired(1e9) == []
    assert json.loads(timeout_call_error("1", 30)) == [
        4,
        "1",
        "InternalError",
        "CSMS did not answer within 30 s",
        {},
    ]


async def test_an_unanswered_call_gets_a_callerror_and_a_late_answer_is_dropped(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any, mqtt_driver: MqttDriver
) -> None:
    register("CP1")
    # No processor: nobody answers CP1's CALLs.
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, processor=False, call_timeout=0.5)
    )
    async with connect(gateway.url, "CP1") as cp, mqtt_driver.link("test:csms") as csms:
        with trio.fail_after(5):
            try:
                await cp.call(*heartbeat())
                raise AssertionError("expected a CALLERROR")
            except CallErrorReceived as exc:
                error = exc
        assert (
            error.code == "InternalError"
            and error.description == "CSMS did not answer within 0.5 s"
        )
        assert gateway.bridge.calls_timed_out == 1
        await csms.publish(
            "CP1/out", json.dumps([3, error.message_id, {"currentTime": "x"}]).encode()
        )  # too late
        await csms.publish("CP1/out", b'[2,"csms-1","Reset",{"type":"Immediate"}]')
        with trio.fail_after(5):
            assert (
                json.loads(await cp.receive_text())[1] == "csms-1"
            )  # the late answer never reached the CP
