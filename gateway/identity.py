"""Charge point identities in the gateway: the identity in a WebSocket request path.

The rules themselves (accepted characters, length, the identity <-> AWS IoT
Thing name mapping) are shared with fakeiot and live in
:mod:`iotshared.identity`; they are re-exported here, with
:func:`validate_identity` raising the gateway's
:class:`gateway.errors.InvalidIdentity` (a :class:`ConnectionRefused` with its
close code) instead of iotshared's.

An identity is the one path segment after the gateway's base path
(``/<cp-id>`` by default, ``--base-path``).
"""

from __future__ import annotations

from urllib.parse import unquote

from iotshared import errors as shared_errors
from iotshared import identity as shared
from iotshared.identity import MAX_IDENTITY_LENGTH as MAX_IDENTITY_LENGTH
from iotshared.identity import MAX_THING_NAME_LENGTH as MAX_THING_NAME_LENGTH
from iotshared.identity import ChargePointIdentity as ChargePointIdentity
from iotshared.identity import cp_id_for as cp_id_for
from iotshared.identity import thing_name_for as thing_name_for

from .errors import InvalidIdentity


def identity_from_path(path: str, base_path: str = "") -> ChargePointIdentity:
    """Validate the identity in a WebSocket request target: ``<base_path>/<cp-id>[?query]``.

    Nothing else is accepted: no other prefix, no further segments, no
    trailing ``/`` (``/a/b/CP1`` or ``/CP1/../CP2`` must never reach a CP).
    ``base_path`` is ``""`` (the default, ``/<cp-id>``) or a path such as
    ``/ocpp``.  The identity is percent-decoded.  Raises
    :class:`InvalidIdentity` with a reason fit for a close frame.
    """
    # A request target is a path with an optional query; urlsplit() would read "//x" as a host.
    raw_path = path.split("?", 1)[0].split("#", 1)[0]
    prefix = base_path.rstrip("/") + "/"
    if not raw_path.startswith(prefix) or "/" in raw_path[len(prefix) :]:
        raise InvalidIdentity(f"Invalid path: connect to ws(s)://host{prefix}<charge-point-id>")
    segment = raw_path[len(prefix) :]
    if "%2f" in segment.lower():
        raise InvalidIdentity(
            "Invalid charge point identity: '/' is not allowed (it separates MQTT topic levels)"
        )
    try:
        cp_id = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise InvalidIdentity(
            "Invalid charge point identity: not valid UTF-8 after percent-decoding"
        ) from None
    return validate_identity(cp_id)


def validate_identity(cp_id: str) -> ChargePointIdentity:
    """Check ``cp_id`` (:func:`iotshared.identity.validate_identity`); raises the gateway's
    :class:`InvalidIdentity` (a close code and a reason for the close frame)."""
    try:
        return shared.validate_identity(cp_id)
    except shared_errors.InvalidIdentity as exc:
        raise InvalidIdentity(exc.reason) from None
