"""OCPP-J frame parsing and error codes per version (pure)."""

import json

import pytest
from ocpp.messages import Call, CallError, CallResult

from gateway.ocppj import FrameError, error_code_for, parse_frame


@pytest.mark.parametrize(
    ("version", "code"), [("1.6", "FormationViolation"), ("2.0.1", "FormatViolation")]
)
@pytest.mark.parametrize(
    "text", ["not json", '{"a": 1}', "[]", '"x"', "[2]", '[2, 5, "Heartbeat", {}]']
)
def test_unreadable_frames_get_minus_one_and_the_versions_code(
    version: str, code: str, text: str
) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(text, version)
    assert info.value.message_id == "-1"
    assert info.value.code == code
    error = json.loads(info.value.to_call_error())
    assert error[:3] == [4, "-1", code]


def test_unknown_message_type() -> None:
    with pytest.raises(FrameError) as v201:
        parse_frame('[7, "id1", "Heartbeat", {}]', "2.0.1")
    assert (v201.value.code, v201.value.message_id) == ("MessageTypeNotSupported", "id1")
    with pytest.raises(FrameError) as v16:
        parse_frame('[7, "id1", "Heartbeat", {}]', "1.6")
    assert v16.value.code == "FormationViolation"


@pytest.mark.parametrize(
    "text",
    [
        '[2, "id1", "Heartbeat"]',
        '[2, "id1", 5, {}]',
        '[2, "id1", "Heartbeat", []]',
        '[3, "id1"]',
        '[4, "id1", 1, 2, {}]',
    ],
)
def test_bad_shapes_keep_a_readable_id(text: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(text, "2.0.1")
    assert info.value.message_id == "id1"
    assert info.value.code == "FormatViolation"


def test_too_long_message_id() -> None:
    with pytest.raises(FrameError, match="longer than 36") as info:
        parse_frame(json.dumps([2, "x" * 37, "Heartbeat", {}]), "2.0.1")
    assert info.value.message_id == "-1"


def test_good_frames() -> None:
    assert isinstance(parse_frame('[2, "a", "Heartbeat", {}]', "2.0.1"), Call)
    assert isinstance(parse_frame('[3, "a", {}]', "1.6"), CallResult)
    assert isinstance(parse_frame('[4, "a", "InternalError", "x", {}]', "1.6"), CallError)


def test_error_code_spelling_per_version() -> None:
    assert error_code_for("1.6", "OccurrenceConstraintViolation") == "OccurenceConstraintViolation"
    assert error_code_for("2.0.1", "FormationViolation") == "FormatViolation"
    assert error_code_for("2.0.1", "TypeConstraintViolation") == "TypeConstraintViolation"
