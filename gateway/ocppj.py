"""OCPP-J framing (pure): parse RPC frames and build CALLERRORs per version.

OCPP-J frames are JSON arrays: ``[2, id, action, payload]`` (CALL),
``[3, id, payload]`` (CALLRESULT), ``[4, id, code, description, details]``
(CALLERROR).  Errors in a frame are answered with a CALLERROR whose code
depends on the OCPP version: 1.6 says ``FormationViolation`` (and spells
``OccurenceConstraintViolation``), 2.0.1 says ``FormatViolation`` and has
``MessageTypeNotSupported``.  A frame whose message id cannot be read is
answered with the id ``"-1"``.

Hostile input is bounded here, before anything recurses over it: JSON that
nests deeper than :data:`MAX_JSON_DEPTH` is refused by a scan of the text
(:func:`iotshared.strict_json.json_depth`) before ``json.loads`` or schema validation see it, and
``NaN``/``Infinity`` (not JSON) are refused by :func:`iotshared.strict_json.strict_loads`.  Every
CALLERROR built by :func:`call_error` is bounded too (description and
details clipped), so an answer never echoes a large payload back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ocpp.messages import Call, CallError, CallResult, MessageType

# The JSON bounds live in iotshared (fakeiot parses with them too); re-exported by name.
from iotshared.errors import JsonRejected as JsonRejected
from iotshared.errors import JsonTooDeep as JsonTooDeep
from iotshared.strict_json import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from iotshared.strict_json import json_depth as json_depth
from iotshared.strict_json import strict_loads as strict_loads

UNKNOWN_MESSAGE_ID = "-1"
MAX_MESSAGE_ID_LENGTH = 36

# OCPP-J 2.0.1 4.2.3: ErrorDescription is at most 255 characters.
MAX_DESCRIPTION_CHARS = 255
# ErrorDetails and ErrorDescription, each as JSON text: with a message id of at most 36 characters,
# every CALLERROR is under 3 KB, whatever the payload it answers.
MAX_FIELD_JSON_CHARS = 1024


@dataclass(eq=False)  # not frozen: Python assigns __traceback__ to exceptions as they propagate
class FrameError(Exception):
    """A frame that must be answered with a CALLERROR."""

    message_id: str
    code: str
    description: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_call_error(self) -> str:
        return call_error(self.message_id, self.code, self.description, self.details)


def format_violation_code(version: str) -> str:
    return "FormationViolation" if version == "1.6" else "FormatViolation"


def error_code_for(version: str, code: str) -> str:
    """Translate an ``ocpp`` package error code to the spelling of ``version``."""
    if version == "1.6":
        return {
            "FormatViolation": "FormationViolation",
            "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
            "MessageTypeNotSupported": "FormationViolation",
            "RpcFrameworkError": "FormationViolation",
        }.get(code, code)
    return {
        "FormationViolation": "FormatViolation",
        "OccurenceConstraintViolation": "OccurrenceConstraintViolation",
    }.get(code, code)


def call_error(
    message_id: str, code: str, description: str, details: dict[str, Any] | None = None
) -> str:
    """A CALLERROR frame; ``description`` and ``details`` are clipped (see :data:`MAX_FIELD_JSON_CHARS`)."""
    frame: str = CallError(
        message_id, code, clip_text(description, MAX_DESCRIPTION_CHARS), bounded_details(details)
    ).to_json()
    return frame


def clip_text(text: str, max_chars: int, max_json_chars: int = MAX_FIELD_JSON_CHARS) -> str:
    """``text``, cut (ending in ``...``) to ``max_chars`` characters and ``max_json_chars`` as JSON text."""
    if len(text) <= max_chars and len(json.dumps(text)) <= max_json_chars:
        return text
    cut = min(len(text), max_chars) - 3
    while cut > 0:
        candidate = text[:cut] + "..."
        excess = len(json.dumps(candidate)) - max_json_chars
        if excess <= 0:
            return candidate
        cut -= excess  # each character removed shortens the JSON text by at least one
    return "..."


def bounded_details(details: dict[str, Any] | None) -> dict[str, Any]:
    """``details`` if its JSON text fits :data:`MAX_FIELD_JSON_CHARS`, else ``{"cause": <clipped>}``."""
    if not details:
        return {}
    try:
        text = json.dumps(details, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = "(details not representable as JSON)"
    else:
        if len(text) <= MAX_FIELD_JSON_CHARS:
            return details
    cause = details.get("cause")
    text = cause if isinstance(cause, str) else text
    overhead = len('{"cause":}')
    return {"cause": clip_text(text, MAX_FIELD_JSON_CHARS, MAX_FIELD_JSON_CHARS - overhead)}


def call_result(message_id: str, payload: dict[str, Any]) -> str:
    text: str = CallResult(message_id, payload).to_json()  # ocpp is untyped
    return text


# `[2, "<id>"` at the start of a frame json.loads refused: a CALL whose id can still be echoed.
_LEADING_CALL_ID = re.compile(r'\s*\[\s*2\s*,\s*("(?:[^"\\]|\\.){1,216}")')


def _leading_call_id(text: str) -> str:
    match = _LEADING_CALL_ID.match(text)
    if match is None:
        return UNKNOWN_MESSAGE_ID
    try:
        raw_id = json.loads(match.group(1))
    except ValueError:
        return UNKNOWN_MESSAGE_ID
    return (
        raw_id
        if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_MESSAGE_ID_LENGTH
        else UNKNOWN_MESSAGE_ID
    )


def parse_frame(text: str, version: str) -> Call | CallResult | CallError:
    """Parse one OCPP-J frame sent by a charge point speaking ``version``.

    Returns an ``ocpp.messages`` Call, CallResult or CallError.  Raises
    :class:`FrameError` with the spec's error code when the frame is bad,
    including JSON nested deeper than :data:`MAX_JSON_DEPTH` and NaN/Infinity
    (answered with the CALL's id when the text starts ``[2, "<id>"``).
    """
    violation = format_violation_code(version)
    try:
        frame = strict_loads(text)
    except JsonRejected as exc:
        raise FrameError(_leading_call_id(text), violation, str(exc)) from None
    if not isinstance(frame, list) or not frame:
        raise FrameError(
            UNKNOWN_MESSAGE_ID,
            violation,
            "Message is not a JSON array [MessageTypeId, MessageId, ...]",
        )

    raw_id = frame[1] if len(frame) > 1 else None
    readable = isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_MESSAGE_ID_LENGTH
    message_id = str(raw_id) if readable else UNKNOWN_MESSAGE_ID
    type_id = frame[0]
    if type_id not in (
        MessageType.Call,
        MessageType.CallResult,
        MessageType.CallError,
    ) or isinstance(type_id, bool):
        code = "MessageTypeNotSupported" if version != "1.6" else violation
        raise FrameError(
            message_id, code, f"MessageTypeId {json.dumps(type_id)[:20]} is not supported"
        )
    if not isinstance(raw_id, str) or not raw_id:
        raise FrameError(
            UNKNOWN_MESSAGE_ID, violation, "MessageId is missing or not a non-empty string"
        )
    if not readable:
        raise FrameError(
            UNKNOWN_MESSAGE_ID,
            violation,
            f"MessageId is longer than {MAX_MESSAGE_ID_LENGTH} characters",
        )

    if type_id == MessageType.Call:
        if len(frame) != 4:
            raise FrameError(
                message_id, violation, "A CALL has 4 elements: [2, MessageId, Action, Payload]"
            )
        _, _, action, payload = frame
        if not isinstance(action, str) or not action:
            raise FrameError(message_id, violation, "Action must be a non-empty string")
        if not isinstance(payload, dict):
            raise FrameError(message_id, violation, "Payload must be a JSON object")
        return Call(message_id, action, payload)
    if type_id == MessageType.CallResult:
        if len(frame) != 3 or not isinstance(frame[2], dict):
            raise FrameError(
                message_id,
                violation,
                "A CALLRESULT is [3, MessageId, Payload] with an object payload",
            )
        return CallResult(message_id, frame[2])
    if len(frame) != 5 or not isinstance(frame[2], str) or not isinstance(frame[3], str):
        raise FrameError(
            message_id,
            violation,
            "A CALLERROR is [4, MessageId, ErrorCode, ErrorDescription, ErrorDetails]",
        )
    return CallError(message_id, frame[2], frame[3], frame[4])
