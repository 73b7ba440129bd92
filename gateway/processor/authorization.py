"""Who may charge: the processor's authorization decision for an id token.

An :class:`Authorizer` answers, for one id token (OCPP 1.6 ``idTag``, OCPP 2.0.1
``idToken``), an :class:`Authorization`: its status and, optionally, when it
expires and its group.  The handlers turn it into each version's shape with
:func:`id_tag_info` (1.6) and :func:`id_token_info` (2.0.1).

Built-ins: :class:`AcceptAll`, the development default (every token Accepted; the
processor says so at start-up), and :class:`~gateway.processor.idtokens.IdTokenList`,
the id tokens of a DynamoDB table (AWS, or fakeiot offline).  An authorizer that
cannot decide raises :class:`AuthorizationUnavailable`: the CALL is answered
CALLERROR InternalError, never a status the charge point would cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from ..errors import GatewayError

# The statuses both versions share; 1.6 also has ConcurrentTx, 2.0.1 a few more
# (NoCredit, NotAllowedTypeEVSE, NotAtThisLocation, NotAtThisTime, Unknown).
Status = Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx", "Unknown"]


class AuthorizationUnavailable(GatewayError):
    """The authorizer cannot decide now (its store is missing or unreachable); says why."""


@dataclass(frozen=True)
class Authorization:
    status: Status
    expiry: datetime | None = None  # timezone-aware
    group_id: str | None = None


class Authorizer(Protocol):
    async def authorize(self, cp_id: str, id_token: str, token_type: str | None) -> Authorization:
        """The decision for ``id_token`` presented at charge point ``cp_id``.

        ``token_type`` is OCPP 2.0.1's ``idToken.type`` (``ISO14443``, ``eMAID``...);
        None for OCPP 1.6.  May do I/O; an exception becomes CALLERROR InternalError.
        """
        ...


class AcceptAll:
    """Every token Accepted: for development only (the processor logs a WARNING at start)."""

    description = "accept-all (every id token Accepted: development only)"

    async def authorize(self, cp_id: str, id_token: str, token_type: str | None) -> Authorization:
        return Authorization("Accepted")


def _expiry(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def id_tag_info(auth: Authorization) -> dict[str, Any]:
    """OCPP 1.6 ``IdTagInfo``: ``status``, ``expiryDate``, ``parentIdTag``."""
    status = auth.status if auth.status != "Unknown" else "Invalid"  # 1.6 has no Unknown
    info: dict[str, Any] = {"status": status}
    if auth.expiry is not None:
        info["expiryDate"] = _expiry(auth.expiry)
    if auth.group_id is not None:
        info["parentIdTag"] = auth.group_id
    return info


def id_token_info(auth: Authorization) -> dict[str, Any]:
    """OCPP 2.0.1 ``IdTokenInfoType``: ``status``, ``cacheExpiryDateTime``, ``groupIdToken``."""
    info: dict[str, Any] = {"status": auth.status}
    if auth.expiry is not None:
        info["cacheExpiryDateTime"] = _expiry(auth.expiry)
    if auth.group_id is not None:
        info["groupIdToken"] = {"idToken": auth.group_id, "type": "Central"}
    return info
