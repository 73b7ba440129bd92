"""Charge point passwords for OCPP security profiles 1 and 2 (HTTP Basic auth).

Pure functions.  Only a salted PBKDF2-HMAC-SHA256 hash is ever stored, as
the Thing attribute ``ocppPasswordHash`` in the form
``pbkdf2-sha256:<iterations>:<salt hex>:<hash hex>`` (characters AWS IoT
allows in attribute values).  Passwords follow the OCPP lengths: 2.0.1
allows 16-40 characters, 1.6's AuthorizationKey 16-20 bytes (or 40 hex
digits); 16-40 printable ASCII characters satisfies both.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string

PASSWORD_HASH_ATTRIBUTE = "ocppPasswordHash"
SECURITY_PROFILE_ATTRIBUTE = "ocppSecurityProfile"
DEFAULT_ITERATIONS = 100_000
MIN_PASSWORD, MAX_PASSWORD = 16, 40
_PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")


class PasswordRejected(ValueError):
    """A password that OCPP does not allow."""


def check_password_rules(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise PasswordRejected(
            f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters (OCPP), got {len(password)}"
        )
    if not set(password) <= _PRINTABLE:
        raise PasswordRejected("password must be printable ASCII")


def generate_password(length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    check_password_rules(password)
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2-sha256:{iterations}:{salt.hex()}:{digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against a stored hash; False for a malformed hash."""
    try:
        scheme, iterations, salt_hex, digest_hex = encoded.split(":")
        if scheme != "pbkdf2-sha256":
            return False
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
        rounds = int(iterations)
    except ValueError:
        return False
    if not 1 <= rounds <= 10_000_000:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return hmac.compare_digest(actual, expected)


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
