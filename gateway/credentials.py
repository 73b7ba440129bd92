"""Charge point passwords for OCPP security profiles 1 and 2 (HTTP Basic auth), pure.

The stored hash format (``pbkdf2-sha256:...`` in the Thing attribute
``ocppPasswordHash``) and the OCPP password rules are shared with fakeiot's
CLI and live in :mod:`iotshared.passwords` and :mod:`iotshared.attributes`;
they are re-exported here.  What is the gateway's own: reading the
``Authorization: Basic`` header.
"""

from __future__ import annotations

import base64
import binascii

from iotshared.attributes import PASSWORD_HASH_ATTRIBUTE as PASSWORD_HASH_ATTRIBUTE
from iotshared.attributes import SECURITY_PROFILE_ATTRIBUTE as SECURITY_PROFILE_ATTRIBUTE
from iotshared.errors import PasswordRejected as PasswordRejected
from iotshared.passwords import DEFAULT_ITERATIONS as DEFAULT_ITERATIONS
from iotshared.passwords import MAX_PASSWORD as MAX_PASSWORD
from iotshared.passwords import MIN_PASSWORD as MIN_PASSWORD
from iotshared.passwords import check_password_rules as check_password_rules
from iotshared.passwords import generate_password as generate_password
from iotshared.passwords import hash_password as hash_password
from iotshared.passwords import verify_password as verify_password


def parse_basic_auth(headers: list[tuple[bytes, bytes]]) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` header, or None."""
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep else None
    return None


def basic_auth_header(user: str, password: str) -> tuple[bytes, bytes]:
    return b"Authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode())
