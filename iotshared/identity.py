"""Charge point identities: validation and the mapping to AWS IoT Thing names (pure, no I/O).

An identity becomes, unchanged, the MQTT client id and the first level of the
CP's topics (``<cp-id>/in``, ``<cp-id>/out``), so it must never hold MQTT
wildcards or a ``/``.  It is the HTTP Basic-auth user name of OCPP security
profiles 1 and 2, so it must not hold ``:`` either.

Accepted characters are those of OCPP 2.0.1's identifierString without the
three above: ``A-Z a-z 0-9 * - _ = | @ .``, 1 to 48 characters.

AWS IoT Thing names allow only ``[a-zA-Z0-9:_-]``.  Since ``:`` can never be
part of an identity, it serves as an escape character: every character
outside ``[a-zA-Z0-9_-]`` becomes ``:`` plus its two hex digits (``CP.1`` ->
``CP:2E1``).  The mapping is one-to-one and reversible, and identities made
of letters, digits, ``_`` and ``-`` (nearly all real ones) are their own
Thing name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidIdentity

MAX_IDENTITY_LENGTH = 48
MAX_THING_NAME_LENGTH = 128

_IDENTITY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-_=|@.")
_THING_PLAIN = re.compile(r"[A-Za-z0-9_-]")
_THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")
WHY_NOT = {
    ":": "':' is not allowed (it separates user and password in HTTP Basic auth)",
    "/": "'/' is not allowed (it separates MQTT topic levels)",
    "+": "'+' is not allowed (it is an MQTT wildcard)",
    "#": "'#' is not allowed (it is an MQTT wildcard)",
}


@dataclass(frozen=True)
class ChargePointIdentity:
    """A validated charge point identity and its AWS IoT Thing name."""

    cp_id: str
    thing_name: str

    @property
    def in_topic(self) -> str:
        return f"{self.cp_id}/in"

    @property
    def out_topic(self) -> str:
        return f"{self.cp_id}/out"


def validate_identity(cp_id: str) -> ChargePointIdentity:
    """Check ``cp_id`` against the rules above and map it to its Thing name.

    Raises :class:`~iotshared.errors.InvalidIdentity` with a reason fit for a close frame.
    """
    if not cp_id:
        raise InvalidIdentity(
            "Missing charge point identity: connect to ws(s)://host/<charge-point-id>"
        )
    if len(cp_id) > MAX_IDENTITY_LENGTH:
        raise InvalidIdentity(
            f"Invalid charge point identity: {len(cp_id)} characters, at most {MAX_IDENTITY_LENGTH} are allowed"
        )
    for char in cp_id:
        if char not in _IDENTITY_CHARS:
            why = WHY_NOT.get(
                char, f"character {char!r} is not allowed (allowed: A-Z a-z 0-9 * - _ = | @ .)"
            )
            raise InvalidIdentity(f"Invalid charge point identity: {why}")
    thing_name = thing_name_for(cp_id)
    if len(thing_name) > MAX_THING_NAME_LENGTH:
        raise InvalidIdentity(
            "Invalid charge point identity: too many special characters to map to an AWS IoT Thing name"
        )
    return ChargePointIdentity(cp_id=cp_id, thing_name=thing_name)


def thing_name_for(cp_id: str) -> str:
    """Map an (already valid) identity to its Thing name."""
    return "".join(c if _THING_PLAIN.fullmatch(c) else f":{ord(c):02X}" for c in cp_id)


def cp_id_for(thing_name: str) -> str:
    """Invert :func:`thing_name_for`.  Raises ValueError on a malformed name."""
    if not _THING_NAME.fullmatch(thing_name):
        raise ValueError(f"not an AWS IoT Thing name: {thing_name!r}")
    return re.sub(r":([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), thing_name)
