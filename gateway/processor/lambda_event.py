"""The event an AWS IoT rule hands the processor's Lambda function, read without I/O (pure).

The rule on ``+/in`` (:data:`RULE_SQL`)::

    SELECT topic(1) AS chargePointId, encode(*, 'base64') AS frame FROM '+/in'

gives the function a JSON object: the charge point's id (the topic's first
level) and the exact bytes the CP sent, base64-encoded.  The frame travels
encoded because a Lambda action accepts only JSON input: ``encode(*,
'base64')`` carries any payload, a CP's malformed or non-JSON frame too,
byte for byte, so that the processor answers it as the MQTT processor does
(a CALLERROR where OCPP asks for one) and recognises a redelivered CALL by
its bytes.

:func:`parse_event` turns the event into a :class:`RuleEvent` or raises
:class:`BadEvent` saying what is wrong: an event that is not the rule's
output (a misconfigured rule, a test invocation) has no charge point to
answer, so it is logged and dropped, never answered.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final

from ..errors import InvalidIdentity
from ..identity import ChargePointIdentity, validate_identity

# The rule whose output the Lambda function expects (AWS IoT SQL 2016-03-23; fakeiot runs it too).
RULE_SQL: Final = "SELECT topic(1) AS chargePointId, encode(*, 'base64') AS frame FROM '+/in'"
CP_ID_FIELD: Final = "chargePointId"
FRAME_FIELD: Final = "frame"
# AWS IoT's largest message is 128 KiB: its base64 text is at most 4/3 of that (rounded up to 4).
MAX_FRAME_TEXT: Final = 4 * ((128 * 1024 + 2) // 3)


class BadEvent(ValueError):
    """The event is not what the rule gives (:data:`RULE_SQL`); the message says what is wrong."""


@dataclass(frozen=True)
class RuleEvent:
    """One message a charge point sent, as the rule hands it over."""

    identity: ChargePointIdentity
    frame: bytes  # the MQTT payload, byte for byte


def parse_event(event: Any) -> RuleEvent:
    """The charge point and frame in a rule's event; raises :class:`BadEvent`."""
    if not isinstance(event, dict):
        raise BadEvent(f"the event is a {type(event).__name__}, not a JSON object ({RULE_SQL})")
    cp_id = event.get(CP_ID_FIELD)
    if not isinstance(cp_id, str):
        raise BadEvent(f"the event has no string {CP_ID_FIELD!r} ({_fields(event)}; {RULE_SQL})")
    try:
        identity = validate_identity(cp_id)
    except InvalidIdentity as exc:
        raise BadEvent(f"{CP_ID_FIELD} {cp_id[:64]!r}: {exc.reason}") from None
    text = event.get(FRAME_FIELD)
    if not isinstance(text, str):
        raise BadEvent(
            f"{identity.cp_id}: the event has no base64 string {FRAME_FIELD!r} "
            f"({_fields(event)}; {RULE_SQL})"
        )
    if len(text) > MAX_FRAME_TEXT:
        raise BadEvent(f"{identity.cp_id}: {FRAME_FIELD} is longer than AWS IoT's 128 KiB message")
    try:
        frame = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadEvent(f"{identity.cp_id}: {FRAME_FIELD} is not base64 ({RULE_SQL})") from None
    return RuleEvent(identity, frame)


def _fields(event: dict[Any, Any]) -> str:
    names = sorted(str(k)[:32] for k in event)[:8]
    return "fields: " + (", ".join(names) if names else "none")
