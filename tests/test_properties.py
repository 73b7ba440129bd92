"""Property-based tests of the pure cores that face untrusted input."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.messages import Call, CallError, CallResult

from gateway.errors import InvalidIdentity
from gateway.identity import cp_id_for, identity_from_path, validate_identity
from gateway.ocppj import FrameError, parse_frame

THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")
ALLOWED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-_=|@.")
ERROR_CODES = {"FormatViolation", "FormationViolation", "MessageTypeNotSupported"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@given(st.text(max_size=80))
@settings(max_examples=500)
def test_identity_is_valid_and_reversible_or_refused_with_a_short_reason(text: str) -> None:
    try:
        identity = validate_identity(text)
    except InvalidIdentity as exc:
        assert 0 < len(exc.reason.encode()) <= 123
        return
    assert 1 <= len(identity.cp_id) <= 48 and set(identity.cp_id) <= ALLOWED
    assert THING_NAME.fullmatch(identity.thing_name)
    assert cp_id_for(identity.thing_name) == identity.cp_id
    assert (
        identity.in_topic == identity.cp_id + "/in"
        and "+" not in identity.in_topic
        and "#" not in identity.in_topic
    )


@given(st.text(max_size=120))
def test_any_path_gives_an_identity_or_an_invalid_identity(path: str) -> None:
    try:
        identity = identity_from_path("/" + path)
    except InvalidIdentity:
        return
    assert "/" not in identity.cp_id and ":" not in identity.cp_id


@given(
    st.one_of(st.text(max_size=200), json_values.map(json.dumps)), st.sampled_from(["1.6", "2.0.1"])
)
@settings(max_examples=500)
def test_frame_parser_never_fails_unexpectedly(text: str, version: str) -> None:
    try:
        frame = parse_frame(text, version)
    except FrameError as exc:
        assert exc.code in ERROR_CODES
        assert exc.message_id == "-1" or 0 < len(exc.message_id) <= 36
        assert json.loads(exc.to_call_error())[0] == 4
        if version == "1.6":
            assert exc.code == "FormationViolation"
        return
    assert isinstance(frame, (Call, CallResult, CallError))


@given(
    st.sampled_from([2, 3, 4]),
    st.text(min_size=1, max_size=36),
    st.text(min_size=1, max_size=30),
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
def test_well_formed_frames_parse(
    type_id: int, message_id: str, action: str, payload: dict
) -> None:
    frame = {
        2: [2, message_id, action, payload],
        3: [3, message_id, payload],
        4: [4, message_id, "GenericError", action, payload],
    }[type_id]
    parsed = parse_frame(json.dumps(frame), "2.0.1")
    assert parsed.unique_id == message_id
