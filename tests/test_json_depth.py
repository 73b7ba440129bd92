"""Bounding hostile JSON before it is parsed, and keeping CALLERRORs small (pure, no sockets)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from fakeiot import shadow
from fakeiot.shadow import ShadowError
from gateway.ocppj import (
    MAX_JSON_DEPTH,
    FrameError,
    JsonRejected,
    JsonTooDeep,
    call_error,
    json_depth,
    parse_frame,
    strict_loads,
)
from gateway.processor import Processor, ProcessorSettings


def nest(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


# -- the depth scanner ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("", 0),
        ("17", 0),
        ('"[[[{{{"', 0),
        ("[]", 1),
        ("{}", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "]]]]]]]", {"{{": "}}}}"}]', 2),  # brackets inside strings do not count
        (r'["a\"[[[[[", "b"]', 1),  # an escaped quote does not end the string
        (
            r'["a\\", [[["b"]]]]',
            4,
        ),  # an escaped backslash does: the quote after it closes the string
        (r'["a\\\"[[[", "]"]', 1),  # three backslashes: a backslash, then an escaped quote
        ('["\\u005b[[[", 1]', 1),  # \u escapes are string content
        ("[\n [\n  {}\n ]\n]", 3),
        ('["ü", ["\U0001f600", [{"€": []}]]]', 5),
    ],
)
def test_json_depth_counts_only_brackets_outside_strings(text: str, depth: int) -> None:
    assert json_depth(text, limit=100) == depth
    if text:
        expected: Any = json.loads(text)
        assert _real_depth(expected) == depth


def test_exactly_at_the_limit_passes_and_one_more_does_not() -> None:
    at_limit = nest(MAX_JSON_DEPTH)
    assert json_depth(at_limit) == MAX_JSON_DEPTH
    assert strict_loads(at_limit) is not None
    over = nest(MAX_JSON_DEPTH + 1)
    assert json_depth(over) == MAX_JSON_DEPTH + 1
    with pytest.raises(JsonTooDeep, match="deeper than 32"):
        strict_loads(over)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,  # never closed: json.loads would recurse into it all the same
        "{" + '"a":{' * 50_000,
        "]" + "[" * 1000,  # an unmatched closer first
        '"unclosed string" ' + "[" * 100,
        nest(981),
        nest(33),
        "[[]" * 40 + "]" * 40,  # a comb: never more than two "[" in a row
    ],
)
def test_deep_or_truncated_text_is_over_the_limit(text: str) -> None:
    assert json_depth(text) == MAX_JSON_DEPTH + 1
    with pytest.raises(JsonTooDeep):
        strict_loads(text)


def test_the_limit_stops_counting() -> None:
    assert json_depth(nest(10), limit=3) == 4
    assert json_depth(nest(3), limit=3) == 3
    assert json_depth(("[[]]" * 1000), limit=3) == 2


def _real_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_real_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_real_depth(v) for v in value), default=0)
    return 0


def _reference_depth(text: str) -> int:
    """Character by character, the way json.loads walks: the deepest it gets before it stops."""
    depth = top = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "\\":
            break  # invalid outside a string: json.loads stops here
        elif char in "[{":
            depth += 1
            top = max(top, depth)
        elif char in "]}":
            depth -= 1
    return top


def test_json_depth_matches_real_documents_and_bounds_any_text() -> None:
    rnd = random.Random(20240611)
    alphabet = ["[", "]", "{", "}", '"', "\\", "a", ",", ":", "ü", "\U0001f600", "\n"]

    def value(level: int) -> Any:
        roll = rnd.random()
        if level > 12 or roll < 0.3:
            return rnd.choice(
                [1, 2.5, None, True, "".join(rnd.choices(alphabet, k=rnd.randint(0, 6)))]
            )
        if roll < 0.65:
            return [value(level + 1) for _ in range(rnd.randint(0, 3))]
        return {
            "".join(rnd.choices(alphabet, k=rnd.randint(0, 4))): value(level + 1)
            for _ in range(rnd.randint(0, 3))
        }

    for _ in range(500):
        document = value(0)
        for text in (json.dumps(document), json.dumps(document, ensure_ascii=False, indent=1)):
            assert json_depth(text, limit=100) == _real_depth(document)
            cut = text[: rnd.randint(0, len(text))]  # a truncated document
            assert json_depth(cut, limit=100) >= min(_reference_depth(cut), 101)
    for _ in range(3000):
        garbage = "".join(rnd.choices(alphabet, k=rnd.randint(0, 60)))
        assert json_depth(garbage, limit=100) >= min(_reference_depth(garbage), 101)


# -- strict parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"a": NaN}', "NaN is not JSON"),
        ("[Infinity]", "Infinity is not JSON"),
        ("[-Infinity]", "-Infinity is not JSON"),
        ("[1e999]", "Number out of range"),
        ("[-1e400]", "Number out of range"),
        ("[" + "9" * 5000 + "]", "not valid JSON"),  # past CPython's int digit limit
        ("[1,", "not valid JSON"),
    ],
)
def test_strict_loads_refuses_what_is_not_json(text: str, why: str) -> None:
    with pytest.raises(JsonRejected, match=why):
        strict_loads(text)


def test_strict_loads_keeps_ordinary_numbers() -> None:
    assert strict_loads("[1, -2.5, 1e308, 0.1]") == [1, -2.5, 1e308, 0.1]


# -- frames --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "code"), [("1.6", "FormationViolation"), ("2.0.1", "FormatViolation")]
)
def test_a_deep_call_is_a_format_violation_with_its_id(version: str, code: str) -> None:
    text = '[2, "boot-1", "BootNotification", {"chargingStation": {"model": ' + nest(5000) + "}}]"
    with pytest.raises(FrameError) as info:
        parse_frame(text, version)
    assert (info.value.message_id, info.value.code) == ("boot-1", code)
    assert info.value.description == "JSON nests deeper than 32 levels"


def test_a_frame_at_the_limit_is_parsed() -> None:
    payload = '{"a": ' + nest(MAX_JSON_DEPTH - 2) + "}"  # the frame array + the payload object + 30
    frame = parse_frame(f'[2, "id", "DataTransfer", {payload}]', "2.0.1")
    assert frame.unique_id == "id"
    with pytest.raises(FrameError, match="deeper than 32"):
        parse_frame('[2, "id", "DataTransfer", {"a": ' + nest(MAX_JSON_DEPTH - 1) + "}]", "2.0.1")


@pytest.mark.parametrize(
    ("text", "message_id"),
    [
        ('[2, "hb-1", "Heartbeat", {"x": NaN}]', "hb-1"),
        ('[2,"hb-2","Heartbeat",{"x":Infinity}]', "hb-2"),
        ('[3, "r-1", {"x": NaN}]', "-1"),  # not a CALL: no id to echo
        ('[2, "' + "x" * 37 + '", "Heartbeat", {"x": NaN}]', "-1"),
        ('[2, "a\\"b", "Heartbeat", {"x": -Infinity}]', 'a"b'),
    ],
)
def test_nan_and_infinity_are_format_violations(text: str, message_id: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(text, "2.0.1")
    assert (info.value.message_id, info.value.code) == (message_id, "FormatViolation")
    assert "not JSON" in info.value.description


# -- CALLERRORs stay small ------------------------------------------------------------------------


@pytest.mark.parametrize("filler", ["a", '"', "ü", "\U0001f600", "\x00"])
def test_call_errors_are_bounded_whatever_they_carry(filler: str) -> None:
    huge = filler * 200_000
    text = call_error("x" * 36, "FormatViolation", huge, {"cause": huge})
    frame = json.loads(text)
    assert len(text.encode()) < 3072
    assert len(frame[3]) <= 255 and frame[3].endswith("...")
    assert len(json.dumps(frame[4], separators=(",", ":"))) <= 1024 and frame[4]["cause"].endswith(
        "..."
    )
    # Not a cause string: the details' JSON text is clipped into one.
    frame = json.loads(call_error("id", "InternalError", "x", {"a": [huge] * 3, "b": object()}))
    assert set(frame[4]) == {"cause"} and len(frame[4]["cause"]) < 1024


def test_small_call_errors_are_untouched() -> None:
    assert json.loads(
        call_error(
            "id", "ProtocolError", "Payload is missing", {"cause": "'idTag' is a required property"}
        )
    ) == [
        4,
        "id",
        "ProtocolError",
        "Payload is missing",
        {"cause": "'idTag' is a required property"},
    ]


# -- the processor's shadow-update path and fakeiot's shadows ----------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'{"state":{"reported":' + nest(100_000).encode() + b"}}",
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'{"state": 1}',
        b'{"state":{"reported":{"ocppProtocol":{}}}}',
        b'{"state":{"reported":{"ocppProtocol":["ocpp1.6"]}}}',
        b'{"state":{"reported":{"ocppProtocol":NaN}}}',
        b"",
    ],
)
def test_processor_drops_unreadable_shadow_updates(payload: bytes) -> None:
    processor = Processor(None, None, ProcessorSettings())  # type: ignore[arg-type]
    processor.versions.learn("$aws/things/CP1/shadow/update", payload)
    assert processor.versions.known == {}
    processor.versions.learn(
        "$aws/things/CP1/shadow/update", b'{"state":{"reported":{"ocppProtocol":"ocpp1.6"}}}'
    )
    assert processor.versions.known == {"CP1": "1.6"}


def test_fakeiot_refuses_deep_requests_before_parsing_them() -> None:
    with pytest.raises(ShadowError, match="too many levels of nesting") as info:
        shadow.parse_request(b'{"state":{"reported":' + nest(100_000).encode() + b"}}")
    assert info.value.code == 400
    with pytest.raises(ShadowError, match="Invalid JSON"):
        shadow.parse_request(b'{"state":{"reported":{"a":NaN}}}')
    with pytest.raises(ShadowError, match="Invalid JSON"):
        shadow.parse_request(b"\xff\xfe")


def test_fakeiot_counts_arrays_as_levels_of_nesting() -> None:
    six_levels = {
        "a": [{"b": [{"c": [1]}]}]
    }  # reported itself, then a list, object, list, object, list
    assert (
        shadow.update(None, 0, {"state": {"reported": six_levels}}, now=1).stored["state"][
            "reported"
        ]
        == six_levels
    )
    seven_levels = {"a": [{"b": [{"c": [[1]]}]}]}
    with pytest.raises(ShadowError, match="too many levels of nesting"):
        shadow.update(None, 0, {"state": {"reported": seven_levels}}, now=1)
    # The same limit holds for the request text, lists included.
    assert shadow.parse_request(json.dumps({"state": {"reported": six_levels}}).encode())
    with pytest.raises(ShadowError, match="too many levels of nesting"):
        shadow.parse_request(json.dumps({"state": {"reported": {"a": [[[[[[[1]]]]]]]}}}).encode())
