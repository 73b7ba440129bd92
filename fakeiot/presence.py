"""AWS IoT lifecycle (presence) events, published by fakeiot's broker.

``$aws/events/presence/connected/<clientId>`` and
``$aws/events/presence/disconnected/<clientId>`` with AWS's JSON:
``clientId``, ``timestamp`` (ms), ``eventType``, ``sessionIdentifier``,
``principalIdentifier``, ``versionNumber`` and, on connect, ``ipAddress``; on
disconnect ``clientInitiatedDisconnect`` and ``disconnectReason``
(``CLIENT_INITIATED_DISCONNECT``, ``DUPLICATE_CLIENTID``,
``CONNECTION_LOST``, ``FORBIDDEN_ACCESS``, ``SERVER_INITIATED_DISCONNECT``,
``CLIENT_ERROR``).

An amqtt plugin: amqtt calls ``on_broker_client_connected`` and
``on_broker_client_disconnected``; :class:`fakeiot.broker.FakeIotBroker`
records on the session why it ended before amqtt fires the event.
"""

from __future__ import annotations

import json
import time
import uuid
from itertools import count
from typing import Any

from amqtt.broker import BrokerContext
from amqtt.plugins.base import BasePlugin

CLIENT_INITIATED_DISCONNECT = "CLIENT_INITIATED_DISCONNECT"
DUPLICATE_CLIENTID = "DUPLICATE_CLIENTID"
CONNECTION_LOST = "CONNECTION_LOST"
FORBIDDEN_ACCESS = "FORBIDDEN_ACCESS"
SERVER_INITIATED_DISCONNECT = "SERVER_INITIATED_DISCONNECT"
# AWS IoT's reason for a client that broke the rules: a payload over the limit, a wildcard in a PUBLISH
CLIENT_ERROR = "CLIENT_ERROR"

REASON_ATTRIBUTE = "fakeiot_disconnect_reason"
PRINCIPAL_ATTRIBUTE = (
    "fakeiot_principal"  # a fakeiot.policy.Principal, set by the broker at CONNECT
)
_SESSION_ID_ATTRIBUTE = "fakeiot_session_identifier"


def connected_event(
    client_id: str, session_id: str, principal: str, ip: str | None, version: int, now_ms: int
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "clientId": client_id,
        "timestamp": now_ms,
        "eventType": "connected",
        "sessionIdentifier": session_id,
        "principalIdentifier": principal,
        "versionNumber": version,
    }
    if ip:
        event["ipAddress"] = ip
    return event


def disconnected_event(
    client_id: str, session_id: str, principal: str, reason: str, version: int, now_ms: int
) -> dict[str, Any]:
    return {
        "clientId": client_id,
        "timestamp": now_ms,
        "eventType": "disconnected",
        "sessionIdentifier": session_id,
        "principalIdentifier": principal,
        "clientInitiatedDisconnect": reason == CLIENT_INITIATED_DISCONNECT,
        "disconnectReason": reason,
        "versionNumber": version,
    }


class PresencePlugin(BasePlugin[BrokerContext]):  # type: ignore[misc]  # amqtt is untyped
    """Publishes presence events for every client that connects or disconnects."""

    def __init__(self, context: BrokerContext) -> None:
        super().__init__(context)
        self._versions = count(1)

    async def on_broker_client_connected(self, *, client_id: str, client_session: Any) -> None:
        session_id = str(uuid.uuid4())
        setattr(client_session, _SESSION_ID_ATTRIBUTE, session_id)
        setattr(client_session, REASON_ATTRIBUTE, None)  # a persistent session object is reused
        event = connected_event(
            client_id,
            session_id,
            _principal(client_session),
            getattr(client_session, "remote_address", None),
            next(self._versions),
            int(time.time() * 1000),
        )
        await self.context.broadcast_message(
            f"$aws/events/presence/connected/{client_id}", json.dumps(event).encode()
        )

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Any) -> None:
        reason = getattr(client_session, REASON_ATTRIBUTE, None) or CONNECTION_LOST
        session_id = getattr(client_session, _SESSION_ID_ATTRIBUTE, "")
        event = disconnected_event(
            client_id,
            session_id,
            _principal(client_session),
            reason,
            next(self._versions),
            int(time.time() * 1000),
        )
        await self.context.broadcast_message(
            f"$aws/events/presence/disconnected/{client_id}", json.dumps(event).encode()
        )


def _principal(session: Any) -> str:
    # AWS IoT names the certificate (its id) for X.509 clients; fakeiot the user name of its roles.
    principal = getattr(session, PRINCIPAL_ATTRIBUTE, None)
    return str(getattr(principal, "name", None) or "anonymous")
