"""Bounded, strict JSON parsing of untrusted text (pure).

JSON that nests deeper than a limit is refused by a scan of the text
(:func:`json_depth`) before ``json.loads`` (or anything else that recurses)
sees it, and ``NaN``/``Infinity`` (not JSON) and numbers out of range are
refused by :func:`strict_loads`.  The gateway parses OCPP-J frames with it,
fakeiot device-shadow requests.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
from typing import Any

from .errors import JsonRejected, JsonTooDeep

# Nesting limit for every JSON text the gateway parses (frames, shadow documents), counting every
# array and object, the OCPP-J frame array included.  The deepest OCPP 2.0.1 CALL payloads
# (SetChargingProfile, NotifyEVChargingNeeds ...) nest about 8 levels below the frame, customData
# adds one per level a vendor uses: 32 leaves ample room.  It must stay far below CPython's recursion
# limit (1000, shared by json.loads, jsonschema and repr), which is what a deep document exhausts.
MAX_JSON_DEPTH = 32

_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_FOLD_BRACKETS = bytes.maketrans(b"{}", b"[]")
_BRACKET_RUNS = re.compile(rb"\[+|\]+")


def json_depth(text: str, *, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in the JSON ``text`` (pure, no parsing).

    Counts ``[``/``{`` against ``]``/``}`` outside strings (escapes honoured): exact for valid
    JSON; for invalid text an upper bound of the depth ``json.loads`` reaches before it fails
    (it stops at the first bracket that does not match, or at the end of the first value).
    Counting stops past ``limit``: anything deeper returns ``limit + 1``.  Every step runs in C
    (``str.replace``, ``bytes.translate``, ``re.findall``, ``itertools.accumulate``): whatever the
    shape of a 128 KB text, a fraction of what ``json.loads`` spends on it.
    """
    if "[" not in text and "{" not in text:
        return 0
    if "\\" in text:
        # Drop escaped backslashes, then escaped quotes: the quotes left delimit the strings.  (Outside
        # strings a backslash is invalid JSON: json.loads stops there, whatever follows.)
        text = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(
        text.split('"')[0::2]
    )  # even pieces lie outside strings (an unclosed one: inside)
    brackets = outside.encode("utf-8", "surrogatepass").translate(_FOLD_BRACKETS, _NOT_BRACKETS)
    # The depth is the highest running count of open brackets.  Summed over runs of "[" and "]",
    # not byte by byte; while innermost pairs ("[]") are so many that the runs would be too, each
    # pass removing them all takes one level off every nest, far more cheaply.
    depth = 0
    while brackets.count(b"[]") * 16 > len(brackets):
        brackets = brackets.replace(b"[]", b"")
        depth += 1
        if depth > limit:
            return limit + 1
    runs = _BRACKET_RUNS.findall(brackets)
    if runs:
        signs = itertools.cycle((1, -1) if runs[0][:1] == b"[" else (-1, 1))
        depth += max(0, max(itertools.accumulate(map(operator.mul, map(len, runs), signs))))
    return min(depth, limit + 1)


def _reject_constant(name: str) -> Any:
    raise JsonRejected(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonRejected("Number out of range")
    return value


def strict_loads(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for untrusted text: nesting bounded first, no NaN/Infinity, finite numbers.

    Raises :class:`JsonTooDeep`, or :class:`JsonRejected` (a ValueError) for anything else that is
    not acceptable JSON; never RecursionError.
    """
    if json_depth(text, limit=max_depth) > max_depth:
        raise JsonTooDeep(f"JSON nests deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except JsonRejected:
        raise
    except (ValueError, RecursionError):
        raise JsonRejected("Message is not valid JSON") from None
