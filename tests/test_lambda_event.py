"""The Lambda function's event, as the IoT rule on +/in gives it (pure)."""

from __future__ import annotations

import base64

import pytest

from fakeiot.rules.sql import Message, parse
from gateway.identity import thing_name_for
from gateway.processor.lambda_event import MAX_FRAME_TEXT, RULE_SQL, BadEvent, parse_event


def test_the_rules_output_is_the_functions_event() -> None:
    frame = b'[2,"m1","Heartbeat",{}]'
    # fakeiot evaluates the very rule the deployment creates.
    event = parse(RULE_SQL).evaluate(Message("CP*7/in", frame))
    parsed = parse_event(event)
    assert parsed.frame == frame
    assert parsed.identity.cp_id == "CP*7"
    assert parsed.identity.thing_name == thing_name_for("CP*7")
    assert parsed.identity.out_topic == "CP*7/out"


def test_extra_fields_are_ignored_and_any_bytes_are_a_frame() -> None:
    event = {"chargePointId": "CP1", "frame": base64.b64encode(b"\x00\xff").decode(), "x": 1}
    assert parse_event(event).frame == b"\x00\xff"


def test_a_frame_beyond_aws_iots_largest_message_is_refused() -> None:
    text = "A" * (MAX_FRAME_TEXT + 4)
    with pytest.raises(BadEvent, match="longer than AWS IoT's 128 KiB message"):
        parse_event({"chargePointId": "CP1", "frame": text})
    assert (
        len(parse_event({"chargePointId": "CP1", "frame": "A" * MAX_FRAME_TEXT}).frame)
        == (128 * 1024 + 2) // 3 * 3
    )
