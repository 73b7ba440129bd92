"""OCPP payloads against the ``ocpp`` package's JSON schemas, for commands to charge points (pure).

:func:`schema_error` finds the most relevant error of a CALL or CALLRESULT payload for an
action and OCPP version, :func:`field_of` names the field it is about, and
:func:`check_response` says why a CP's CALLRESULT payload is invalid.  jsonschema's
``multipleOf`` is made safe for numbers too large to divide; OCPP 1.6's decimal schemas
compare decimals as decimals (as ``ocpp.messages`` does).
"""

from __future__ import annotations

import decimal
import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

from jsonschema import Draft4Validator
from jsonschema import _keywords as keywords
from jsonschema.exceptions import (
    ValidationError,
    best_match,
)
from jsonschema.validators import extend
from ocpp.messages import MessageType, get_validator

from .. import ocppj

#: An OCPP action name: letters and digits only (it names a schema file).
ACTION = re.compile(r"\A[A-Z][A-Za-z0-9]{0,63}\Z")
# OCPP 1.6 schemas whose decimals must be parsed as Decimal (as ocpp.messages does).
_DECIMAL_16 = {
    (MessageType.Call, "SetChargingProfile"),
    (MessageType.Call, "RemoteStartTransaction"),
    (MessageType.CallResult, "GetCompositeSchedule"),
}


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Any:
    """jsonschema's ``multipleOf``, but a number too large to divide exactly is an error, not a crash.

    OCPP 1.6's ``multipleOf: 0.1`` on Decimals: ``Decimal(1e308) % Decimal("0.1")`` raises
    ``decimal.InvalidOperation`` (DivisionImpossible), which escaped the validation.
    """
    try:
        check: Any = keywords.multipleOf  # typeshed: returns None; it is a generator
        yield from cast(Iterator[ValidationError], check(validator, divisor, instance, schema))
    except ArithmeticError:  # decimal.InvalidOperation, OverflowError, ZeroDivisionError
        yield ValidationError(f"{instance!r} is out of range (multipleOf {divisor})")


_SafeValidator = extend(Draft4Validator, {"multipleOf": _multiple_of})  # type: ignore[no-untyped-call]


@functools.cache
def _validator(message_type: int, action: str, version: str, decimals: bool) -> Any:
    try:
        schema = get_validator(
            message_type, action, version, decimal.Decimal if decimals else float
        ).schema
    except (OSError, ValueError):
        raise LookupError(action) from None
    return _SafeValidator(schema)


def schema_error(message_type: int, action: str, version: str, payload: Any) -> Any:
    """The most relevant schema error of ``payload`` (None: valid); raises LookupError without a schema."""
    decimals = version == "1.6" and (message_type, action) in _DECIMAL_16
    if not ACTION.match(action):  # it names a schema file
        raise LookupError(action)
    validator = _validator(message_type, action, version, decimals)
    if decimals:  # as ocpp.messages does: compare decimals as decimals
        payload = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    return best_match(validator.iter_errors(payload))


def field_of(error: ValidationError) -> str:
    """The field a schema error is about, as a dotted path (``chargingProfile.id``, ``[0]``)."""
    path = [str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path]
    required = error.validator_value
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = (
            [n for n in required if n not in error.instance] if isinstance(required, list) else []
        )
        path.extend(missing[:1])
    elif (
        error.validator == "additionalProperties"
        and isinstance(error.instance, dict)
        and isinstance(error.schema, Mapping)
    ):
        allowed = set(error.schema.get("properties", {}))
        extra = [n for n in error.instance if n not in allowed]
        path.extend(extra[:1])
    return ".".join(path).replace(".[", "[") or "(payload)"


def check_response(action: str, version: str, payload: dict[str, Any]) -> str | None:
    """Why ``payload`` is not a valid response to ``action`` (None: it is)."""
    try:
        error = schema_error(MessageType.CallResult, action, version, payload)
    except LookupError:
        return f"OCPP {version} has no response schema for {action}"
    if error is None:
        return None
    return ocppj.clip_text(f"{field_of(error)}: {error.message}", 300)
