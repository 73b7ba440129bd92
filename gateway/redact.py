"""OCPP frames as they may appear in a log: with the secrets they carry replaced.

The gateway logs every frame at DEBUG, and the start of an undelivered one at WARNING.  Some
frames carry credentials: a CPO setting a charge point's password (1.6 ``ChangeConfiguration``
of ``AuthorizationKey``, 2.0.1 ``SetVariables`` of ``BasicAuthPassword``), a network profile's
APN or VPN password and key, a SIM PIN, a charge point reading them back.  :func:`redact_frame` is pure
(no I/O): the frame parsed, secrets replaced by ``"***"``, serialised again.  What is redacted:

* a member whose name says it is a secret (``password``, ``secret``, ``authorizationKey``,
  ``privateKey``..., any case), and a ``key`` member beside a password (a VPN's shared key);
* the value of a configuration key or variable whose name says so: ``{"key": "AuthorizationKey",
  "value": ...}`` (1.6), ``{"variable": {"name": "BasicAuthPassword"}, "attributeValue": ...}``
  (2.0.1) and each ``value`` of the ``variableAttribute`` list beside such a variable (2.0.1
  ``NotifyReport``).

What a log viewer or terminal could take for a line break or a control sequence (DEL, the C1
controls such as NEL and the 8-bit CSI, U+2028, U+2029) is shown as a JSON escape: one frame,
one log line; so is a lone surrogate (valid as a JSON escape, not encodable in a UTF-8 log).
:func:`loggable` does the same (newlines too) for other text a CP chose, such as a close reason.  A frame that is not JSON is not shown at all (its secrets could not be found), only its length.
"""

from __future__ import annotations

import json
import re
from typing import Any

SECRET_NAME = re.compile(r"pass(word|phrase)?$|secret|authori[sz]ationkey|privatekey|pin$", re.I)
HIDDEN = "***"
MAX_LOGGED = 2000  # characters of a frame a log line shows
# json.dumps(ensure_ascii=False) escapes only U+0000-U+001F; these too, so a frame keeps to its line
# (and lone surrogates, which JSON may carry as escapes but no UTF-8 log file can write)
_LINE_SAFE = {
    c: f"\\u{c:04x}" for c in [*range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000)]
}
_PEER_TEXT_SAFE = {**{c: f"\\u{c:04x}" for c in range(0x20)}, **_LINE_SAFE}


def redact_frame(text: str | bytes, limit: int = MAX_LOGGED) -> str:
    """``text`` (an OCPP-J frame) fit for a log line: secrets hidden, at most ``limit`` chars."""
    try:
        shown = json.dumps(
            _redact(json.loads(text)), separators=(",", ":"), ensure_ascii=False
        ).translate(_LINE_SAFE)
    except ValueError:
        return f"<{len(text)} characters, not JSON: not shown>"
    except RecursionError:
        return f"<{len(text)} characters, nested too deep: not shown>"
    return (
        shown if len(shown) <= limit else f"{shown[:limit]}... (a frame of {len(text)} characters)"
    )


def loggable(text: str, limit: int = 200) -> str:
    """Text a peer chose (a close reason, say) fit for a log line: at most ``limit`` characters,
    control characters (C0 too: a newline would forge a line) shown escaped."""
    return text[:limit].translate(_PEER_TEXT_SAFE)


def _redact(value: Any) -> Any:
    if isinstance(value, list):
        return [_redact(item) for item in value]
    if not isinstance(value, dict):
        return value
    secret_value = _names_a_secret(value.get("key")) or _names_a_secret(
        (value.get("variable") or {}).get("name")
        if isinstance(value.get("variable"), dict)
        else None
    )
    beside_password = any(isinstance(k, str) and SECRET_NAME.search(k) for k in value)
    redacted: dict[str, Any] = {}
    for key, item in value.items():
        if SECRET_NAME.search(key) or (key == "key" and beside_password):
            redacted[key] = HIDDEN
        elif secret_value and key in ("value", "attributeValue"):
            redacted[key] = HIDDEN
        elif secret_value and key == "variableAttribute" and isinstance(item, list):
            redacted[key] = [_hide_value(attribute) for attribute in item]
        else:
            redacted[key] = _redact(item)
    return redacted


def _hide_value(attribute: Any) -> Any:
    """A ``variableAttribute`` item of a secret variable: its ``value`` hidden."""
    if not isinstance(attribute, dict):
        return _redact(attribute)
    return {k: HIDDEN if k == "value" else _redact(v) for k, v in attribute.items()}


def _names_a_secret(name: Any) -> bool:
    return isinstance(name, str) and SECRET_NAME.search(name) is not None
