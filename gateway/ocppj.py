"""OCPP-J framing (pure): parse RPC frames and build CALLERRORs per version.

OCPP-J frames are JSON arrays: ``[2, id, action, payload]`` (CALL),
``[3, id, payload]`` (CALLRESULT), ``[4, id, code, description, details]``
(CALLERROR).  Errors in a frame are answered with a CALLERROR whose code
depends on the OCPP version: 1.6 says ``FormationViolation`` (and spells
``OccurenceConstraintViolation``), 2.0.1 says ``FormatViolation`` and has
``MessageTypeNotSupported``.  A frame whose message id cannot be read is
answered with the id ``"-1"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ocpp.messages import Call, CallError, CallResult, MessageType

UNKNOWN_MESSAGE_ID = "-1"
MAX_MESSAGE_ID_LENGTH = 36


@dataclass(frozen=True)
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
    return {"FormationViolation": "FormatViolation", "OccurenceConstraintViolation": "OccurrenceConstraintViolation"}.get(
        code, code
    )


def call_error(message_id: str, code: str, description: str, details: dict[str, Any] | None = None) -> str:
    return CallError(message_id, code, description, details or {}).to_json()


def call_result(message_id: str, payload: dict[str, Any]) -> str:
    return CallResult(message_id, payload).to_json()


def parse_frame(text: str, version: str) -> Call | CallResult | CallError:
    """Parse one OCPP-J frame sent by a charge point speaking ``version``.

    Returns an ``ocpp.messages`` Call, CallResult or CallError.  Raises
    :class:`FrameError` with the spec's error code when the frame is bad.
    """
    violation = format_violation_code(version)
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameError(UNKNOWN_MESSAGE_ID, violation, "Message is not valid JSON") from None
    if not isinstance(frame, list) or not frame:
        raise FrameError(UNKNOWN_MESSAGE_ID, violation, "Message is not a JSON array [MessageTypeId, MessageId, ...]")

    raw_id = frame[1] if len(frame) > 1 else None
    readable = isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_MESSAGE_ID_LENGTH
    message_id = str(raw_id) if readable else UNKNOWN_MESSAGE_ID
    type_id = frame[0]
    if type_id not in (MessageType.Call, MessageType.CallResult, MessageType.CallError) or isinstance(type_id, bool):
        code = "MessageTypeNotSupported" if version != "1.6" else violation
        raise FrameError(message_id, code, f"MessageTypeId {json.dumps(type_id)[:20]} is not supported")
    if not isinstance(raw_id, str) or not raw_id:
        raise FrameError(UNKNOWN_MESSAGE_ID, violation, "MessageId is missing or not a non-empty string")
    if not readable:
        raise FrameError(UNKNOWN_MESSAGE_ID, violation, f"MessageId is longer than {MAX_MESSAGE_ID_LENGTH} characters")

    if type_id == MessageType.Call:
        if len(frame) != 4:
            raise FrameError(message_id, violation, "A CALL has 4 elements: [2, MessageId, Action, Payload]")
        _, _, action, payload = frame
        if not isinstance(action, str) or not action:
            raise FrameError(message_id, violation, "Action must be a non-empty string")
        if not isinstance(payload, dict):
            raise FrameError(message_id, violation, "Payload must be a JSON object")
        return Call(message_id, action, payload)
    if type_id == MessageType.CallResult:
        if len(frame) != 3 or not isinstance(frame[2], dict):
            raise FrameError(message_id, violation, "A CALLRESULT is [3, MessageId, Payload] with an object payload")
        return CallResult(message_id, frame[2])
    if len(frame) != 5 or not isinstance(frame[2], str) or not isinstance(frame[3], str):
        raise FrameError(message_id, violation, "A CALLERROR is [4, MessageId, ErrorCode, ErrorDescription, ErrorDetails]")
    return CallError(message_id, frame[2], frame[3], frame[4])

