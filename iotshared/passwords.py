"""Charge point passwords (OCPP security profiles 1 and 2): the stored hash format (pure).

Only a salted PBKDF2-HMAC-SHA256 hash is ever stored, as the Thing attribute
:data:`~iotshared.attributes.PASSWORD_HASH_ATTRIBUTE`, in the form
``pbkdf2-sha256:<iterations>:<salt hex>:<hash hex>`` (characters AWS IoT
allows in attribute values): fakeiot's CLI and ``scripts/provision.py`` write
it with :func:`hash_password`, the gateway checks it with
:func:`verify_password`.  Passwords follow the OCPP lengths: 2.0.1 allows
16-40 characters, 1.6's AuthorizationKey 16-20 bytes (or 40 hex digits);
16-40 printable ASCII characters satisfies both.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from .errors import PasswordRejected

HASH_SCHEME = "pbkdf2-sha256"
DEFAULT_ITERATIONS = 100_000
MAX_ITERATIONS = 10_000_000  # a stored hash asking for more is refused, not computed
MIN_PASSWORD, MAX_PASSWORD = 16, 40
_PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")


def check_password_rules(password: str) -> None:
    """Raise :class:`~iotshared.errors.PasswordRejected` unless OCPP allows ``password``."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise PasswordRejected(
            f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters (OCPP), got {len(password)}"
        )
    if not set(password) <= _PRINTABLE:
        raise PasswordRejected("password must be printable ASCII")


def generate_password(length: int = 24) -> str:
    """A random password of letters and digits."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """The attribute value to store for ``password`` (checked against the OCPP rules first)."""
    check_password_rules(password)
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{HASH_SCHEME}:{iterations}:{salt.hex()}:{digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against a stored hash; False for a malformed hash."""
    try:
        scheme, iterations, salt_hex, digest_hex = encoded.split(":")
        if scheme != HASH_SCHEME:
            return False
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
        rounds = int(iterations)
    except ValueError:
        return False
    if not 1 <= rounds <= MAX_ITERATIONS:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return hmac.compare_digest(actual, expected)
