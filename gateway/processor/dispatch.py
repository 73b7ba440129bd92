"""One CALL in, its answer out: the right handler between the two schema checks.

:func:`dispatch` finds the handler of the CALL's (version, action), validates
the request against the action's request schema, awaits the handler and
validates what it returns against the response schema.  An action with no
handler is answered ``NotSupported`` when the ``ocpp`` package knows it (a
CSMS-to-CP action sent the wrong way, or one whose default a CPO removed) and
``NotImplemented`` when it does not exist.  A handler's ``OCPPError`` becomes
that CALLERROR.  Anything else a handler raises propagates, for the caller to
answer ``InternalError`` and log with the CP id.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp import messages
from ocpp.exceptions import OCPPError

from .. import ocppj
from .actions import known_actions
from .handlers import Call, Context
from .registry import HandlerRegistry

log = logging.getLogger(__name__)


class InvalidResponse(Exception):
    """A handler returned a payload that is not a valid response to its action."""


def _call_error(message_id: str, version: str, exc: OCPPError, fallback: str) -> str:
    details: dict[str, Any] = exc.details if isinstance(exc.details, dict) else {}
    cause = details.get("cause")
    return ocppj.call_error(
        message_id,
        ocppj.error_code_for(version, exc.code),
        exc.description or fallback,
        {"cause": str(cause)} if cause else details,
    )


async def dispatch(
    registry: HandlerRegistry, context: Context, cp_id: str, version: str, frame: messages.Call
) -> str:
    """The frame answering CALL ``frame`` from ``cp_id``; raises what a handler raised but OCPPError."""
    action = frame.action
    function = registry.get(version, action)
    if function is None:
        if action in known_actions(version):
            return ocppj.call_error(
                frame.unique_id,
                "NotSupported",
                f"{action} is not supported by this CSMS (not sent by a charge point)",
            )
        return ocppj.call_error(
            frame.unique_id, "NotImplemented", f"{action} is not a known OCPP {version} action"
        )
    try:
        await messages.validate_payload(frame, version)
    except OCPPError as exc:
        return _call_error(frame.unique_id, version, exc, f"Invalid {action} payload")
    call = Call(cp_id, version, action, frame.unique_id, frame.payload, context)
    try:
        result = await function(call)
    except OCPPError as exc:
        log.info(
            "%s: %s %s answered %s by its handler: %s",
            cp_id,
            action,
            frame.unique_id,
            exc.code,
            exc.description,
        )
        return _call_error(frame.unique_id, version, exc, f"{action} refused")
    if not isinstance(result, dict):
        raise InvalidResponse(
            f"the {action} handler returned {type(result).__name__}, not a payload dict"
        )
    try:
        await messages.validate_payload(
            messages.CallResult(frame.unique_id, result, action), version
        )
    except OCPPError as exc:
        cause = exc.details.get("cause") if isinstance(exc.details, dict) else None
        raise InvalidResponse(
            f"the {action} handler returned an invalid response: {exc.description}"
            + (f" ({cause})" if cause else "")
        ) from None
    return ocppj.call_result(frame.unique_id, result)
