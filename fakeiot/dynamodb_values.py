"""DynamoDB's request values, checked as DynamoDB checks them (pure): the JSON body, the table
name, AttributeValues and keys, item sizes; and the errors, in DynamoDB's shape.

:mod:`fakeiot.dynamodb` runs the operations with these; :func:`attribute_value` converts the
rules engine's plain JSON items on the way out.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
import re
from collections.abc import Mapping
from typing import Any

from iotshared.errors import JsonTooDeep
from iotshared.strict_json import strict_loads

DYNAMODB_ERRORS = "com.amazonaws.dynamodb.v20120810#"
CORAL_ERRORS = "com.amazon.coral.validate#"
TABLE_NAME = re.compile(r"\A[a-zA-Z0-9_.-]{3,255}\Z")
_TYPES = ("S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS")
KEY_TYPES = ("S", "N", "B")
MAX_KEY_BYTES = 2048  # DynamoDB's partition key value limit
MAX_NESTING = 32  # DynamoDB: nested attributes, at most 32 levels
# A request's JSON: the body, Item (or Key ...), then two JSON levels per nested attribute level.
_MAX_JSON_DEPTH = 2 * MAX_NESTING + 4


class DynamoDbError(Exception):
    """A request DynamoDB would refuse: ``error_type`` is the ``__type`` it answers."""

    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type, self.message, self.status = error_type, message, status


def not_found(table: str) -> DynamoDbError:
    """ResourceNotFoundException: there is no table ``table``."""
    return DynamoDbError(
        DYNAMODB_ERRORS + "ResourceNotFoundException",
        f"Requested resource not found: Table: {table} not found",
    )


def invalid(message: str) -> DynamoDbError:
    """ValidationException: the request breaks DynamoDB's rules (or fakeiot's subset)."""
    return DynamoDbError(CORAL_ERRORS + "ValidationException", message)


def attribute_value(value: Any) -> dict[str, Any]:
    """A plain JSON value as a DynamoDB AttributeValue."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, int | float):
        return {"N": json.dumps(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list):
        return {"L": [attribute_value(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {str(k): attribute_value(v) for k, v in value.items()}}
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def request_json(body: bytes) -> dict[str, Any]:
    """The request body: a JSON object, depth-bounded before it is parsed."""
    try:
        doc = strict_loads((body or b"{}").decode("utf-8"), max_depth=_MAX_JSON_DEPTH)
    except JsonTooDeep:
        raise invalid(
            f"Nesting Levels have exceeded supported limits: at most {MAX_NESTING} levels"
        ) from None
    except ValueError:  # JsonRejected, UnicodeDecodeError
        raise DynamoDbError(
            "com.amazon.coral.service#SerializationException", "Request body is not valid JSON"
        ) from None
    if not isinstance(doc, dict):
        raise DynamoDbError(
            "com.amazon.coral.service#SerializationException", "Request body must be a JSON object"
        )
    return doc


def table_name(body: Mapping[str, Any]) -> str:
    """The request's ``TableName``, checked."""
    name = body.get("TableName")
    if not isinstance(name, str) or not TABLE_NAME.match(name):
        raise invalid(
            f"Invalid table name {name!r}: 3-255 characters of [a-zA-Z0-9_.-] (TableName is required)"
        )
    return name


def refuse(body: Mapping[str, Any], *parameters: str) -> None:
    """ValidationException naming those of ``parameters`` the request gives (fakeiot lacks them)."""
    given = [p for p in parameters if body.get(p) is not None]
    if given:
        raise invalid(f"fakeiot does not support {', '.join(given)} in this operation")


def check_value(value: Any, where: str, depth: int = 1) -> None:
    """An AttributeValue as DynamoDB checks it: one type, a value of that type's shape, nested ones
    (``M``, ``L``) checked too, at most :data:`MAX_NESTING` levels."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _TYPES:
        raise invalid(
            f"Invalid AttributeValue for {where[:80]!r}: one of {', '.join(_TYPES)} (e.g. {{'S': 'text'}})"
        )
    if depth > MAX_NESTING:
        raise invalid(f"Nesting Levels have exceeded supported limits: at most {MAX_NESTING}")
    ((kind, raw),) = value.items()
    if kind == "M" and isinstance(raw, dict):
        for name, nested in raw.items():
            check_value(nested, f"{where}.{name}", depth + 1)
    elif kind == "L" and isinstance(raw, list):
        for index, nested in enumerate(raw):
            check_value(nested, f"{where}[{index}]", depth + 1)
    elif kind in ("S", "N", "B"):
        _check_scalar(kind, raw, where)
    elif kind in ("SS", "NS", "BS") and isinstance(raw, list) and raw:
        for element in raw:
            _check_scalar(kind[0], element, where)
        if len(set(map(str, raw))) != len(raw):
            raise invalid(f"Input collection {where[:80]!r} contains duplicates")
    elif (kind == "BOOL" and isinstance(raw, bool)) or (kind == "NULL" and raw is True):
        pass
    else:
        raise invalid(f"Invalid AttributeValue for {where[:80]!r}: a {kind} of the wrong shape")


def _check_scalar(kind: str, raw: Any, where: str) -> None:
    if not isinstance(raw, str):
        raise invalid(f"Invalid AttributeValue for {where[:80]!r}: {kind} takes a string")
    if kind == "N":
        try:
            number = decimal.Decimal(raw)
        except decimal.InvalidOperation:
            number = None
        if number is None or not number.is_finite() or len(raw) > 100:
            raise invalid(f"The parameter cannot be converted to a numeric value: {raw[:40]!r}")
    elif kind == "B":
        try:
            base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise invalid(f"Invalid Base64 value for {where[:80]!r}") from None


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB counts it, near enough: attribute names and values in bytes."""
    return sum(_utf8_len(name) + _value_size(value) for name, value in item.items())


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _value_size(value: Any) -> int:
    if not isinstance(value, dict) or not value:
        return 1
    ((kind, raw),) = list(value.items())[:1]
    if kind == "M" and isinstance(raw, dict):
        return 3 + sum(1 + _utf8_len(k) + _value_size(v) for k, v in raw.items())
    if kind == "L" and isinstance(raw, list):
        return 3 + sum(1 + _value_size(v) for v in raw)
    if isinstance(raw, list):
        return sum(_utf8_len(str(v)) for v in raw)
    if isinstance(raw, str):
        return _utf8_len(raw) if kind != "B" else len(raw) * 3 // 4
    return 1


def item_key(item: Mapping[str, Any], key_name: str, key_type: str, where: str) -> str:
    """The store's key for the item's key attribute (its typed JSON, so types never collide)."""
    value = item.get(key_name)
    if value is None:
        raise invalid(f"One of the required keys was not given a value: {where} needs {key_name!r}")
    check_value(value, key_name)
    (kind, raw) = next(iter(value.items()))
    if kind != key_type:
        raise invalid(
            f"The provided key element does not match the schema: {key_name!r} is of type {key_type}"
        )
    if not isinstance(raw, str) or raw == "":
        raise invalid(
            f"One or more parameter values are not valid: the key attribute {key_name!r} "
            "cannot be empty"
        )
    if _utf8_len(raw) > MAX_KEY_BYTES:
        raise invalid(
            "One or more parameter values were invalid: Size of hashkey has exceeded the maximum "
            f"size limit of {MAX_KEY_BYTES} bytes"
        )
    return json.dumps({kind: raw})


def wants_old(body: Mapping[str, Any]) -> bool:
    """Whether ``ReturnValues`` asks for the replaced or deleted item (checked before writing)."""
    returns = body.get("ReturnValues") or "NONE"
    if returns not in ("NONE", "ALL_OLD"):
        raise invalid(f"fakeiot supports ReturnValues NONE and ALL_OLD, not {returns!r}")
    return bool(returns == "ALL_OLD")
