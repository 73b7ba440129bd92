"""The values, operators and functions of fakeiot's AWS IoT SQL (pure): what a rule sees of a
message, *undefined*, arithmetic and comparison, and the functions a statement may call
(:data:`FUNCTIONS`).

``encode(value, 'base64')``: the base64 text of a string's UTF-8 bytes, or of
any other value's JSON; ``encode(*, 'base64')`` encodes the message's payload
byte for byte, whatever it holds (AWS's way to hand a non-JSON payload to a
Lambda function, whose input must be JSON).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class _Undefined:
    def __repr__(self) -> str:
        return "Undefined"


UNDEFINED: Any = _Undefined()


@dataclass(frozen=True)
class Message:
    """What a rule sees of one MQTT message."""

    topic: str
    payload: bytes
    client_id: str | None = None
    timestamp_ms: int = 0

    def document(self) -> Any:
        try:
            return json.loads(self.payload)
        except (ValueError, UnicodeDecodeError):
            return UNDEFINED


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- operators ------------------------------------------------------------------------


def arith(op: str) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        if not is_number(a) or not is_number(b):
            return UNDEFINED
        try:
            return (
                {"+": a + b, "-": a - b, "*": a * b}[op]
                if op in "+-*"
                else (a / b if op == "/" else a % b)
            )
        except ZeroDivisionError:
            return UNDEFINED

    return apply


def compare(op: str) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is UNDEFINED or b is UNDEFINED:
            return UNDEFINED
        if op in ("=", "<>", "!="):
            equal = a == b and (is_number(a) == is_number(b))
            return equal if op == "=" else not equal
        comparable = (is_number(a) and is_number(b)) or (isinstance(a, str) and isinstance(b, str))
        if not comparable:
            return UNDEFINED
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]

    return apply


# -- functions ------------------------------------------------------------------------


def _fn_topic(m: Message, args: list[Any]) -> Any:
    if not args:
        return m.topic
    n = args[0]
    levels = m.topic.split("/")
    if not is_number(n) or int(n) != n or not 1 <= int(n) <= len(levels):
        return UNDEFINED
    return levels[int(n) - 1]


def fn_get(_m: Message, args: list[Any]) -> Any:
    container, key = args
    if (
        isinstance(container, list)
        and is_number(key)
        and int(key) == key
        and 0 <= int(key) < len(container)
    ):
        return container[int(key)]
    if isinstance(container, dict) and isinstance(key, str):
        return container.get(key, UNDEFINED)
    return UNDEFINED


def _fn_case(convert: Callable[[str], str]) -> Callable[[Message, list[Any]], Any]:
    return lambda _m, args: convert(args[0]) if isinstance(args[0], str) else UNDEFINED


def _fn_concat(_m: Message, args: list[Any]) -> Any:
    if any(a is UNDEFINED for a in args):
        return UNDEFINED
    return "".join(a if isinstance(a, str) else json.dumps(a) for a in args)


class _RawPayload:
    """``*`` as the first argument of ``encode()``: the payload's bytes, not its JSON."""


RAW_PAYLOAD: Any = _RawPayload()


def _fn_encode(m: Message, args: list[Any]) -> Any:
    value, scheme = args
    if scheme != "base64":
        return UNDEFINED
    if value is RAW_PAYLOAD:
        data = m.payload
    elif value is UNDEFINED:
        return UNDEFINED
    elif isinstance(value, str):
        data = value.encode("utf-8")
    else:
        data = json.dumps(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


# name -> (min args, max args, implementation)
FUNCTIONS: Mapping[str, tuple[int, int, Callable[[Message, list[Any]], Any]]] = {
    "topic": (0, 1, _fn_topic),
    "timestamp": (0, 0, lambda m, _a: m.timestamp_ms),
    "clientid": (0, 0, lambda m, _a: m.client_id if m.client_id is not None else UNDEFINED),
    "get": (2, 2, fn_get),
    "lower": (1, 1, _fn_case(str.lower)),
    "upper": (1, 1, _fn_case(str.upper)),
    "concat": (2, 16, _fn_concat),
    "encode": (2, 2, _fn_encode),
}
