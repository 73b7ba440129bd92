"""fakeiot's IoT-policy-like access control: who may connect as which client id,
and publish, subscribe, receive what.

AWS IoT Core authenticates a *principal* (an X.509 certificate) at CONNECT
and lets the policies attached to it decide which client ids it may use
(``iot:Connect`` on ``client/<id>``) and which topics (the gateway's policy,
see ``scripts/provision.py``, confines each client to its own topics with
the ``${iot:ClientId}`` policy variable).  fakeiot enforces the same rules
without a policy language (pure functions, no I/O):

* :func:`admit` decides at CONNECT, *before* the connection can affect any
  other session: who the principal is, and whether it may use the client id
  (and the will topic) it asks for;
* principals: the *backend* role (user name :data:`BACKEND_USERNAME` and
  fakeiot's backend password: the message processor, operators' tools); the
  *gateway* (user name :data:`GATEWAY_USERNAME` and the gateway password, on
  the plain listener what the gateway's certificate is on AWS); a client
  certificate (mutual TLS listener); and, only where fakeiot runs with the
  development switch ``allow_anonymous_devices``, anonymous clients;
* every principal but the backend connects *devices*: its client id must be
  a charge point identity (:func:`iotshared.identity.validate_identity`), so ids
  such as ``cpo:processor`` (the processor's) or ``CP:2E1`` (a Thing name,
  not a CP id) belong to the backend role alone;
* a device client with client id ``C`` may publish to ``C/in`` and to its
  Thing's shadow topics ``$aws/things/T/shadow/...``, and subscribe to /
  receive ``C/out`` and those shadow topics, where ``T`` is the one Thing
  name the gateway derives from ``C`` (``CP.1`` -> ``CP:2E1``); its will
  message must be one it may publish;
* the backend role may use any client id and any topic.

What AWS does on a refusal, fakeiot does too: a refused CONNECT gets a
CONNACK refusal and changes nothing; a refused PUBLISH closes the client's
connection (presence ``disconnectReason`` ``FORBIDDEN_ACCESS``), a refused
SUBSCRIBE gets the SUBACK failure code 0x80, and messages a client may not
receive (retained ones included) are not delivered to it.  A shared
subscription ``$share/<group>/<filter>`` is allowed where ``<filter>`` is.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

from iotshared.errors import InvalidIdentity
from iotshared.identity import validate_identity

from .shared_subscriptions import underlying_filter

BACKEND_USERNAME = "fakeiot-backend"
GATEWAY_USERNAME = "fakeiot-gateway"
EVENTS_CLIENT_PREFIX = (
    "gateway:events:"  # the gateway's registry-event watcher (the gateway principal only)
)

# MQTT 3.1.1 CONNACK return codes
IDENTIFIER_REJECTED = 2
NOT_AUTHORIZED = 5


class Role(Enum):
    DEVICE = "device"
    BACKEND = "backend"


@dataclass(frozen=True)
class Principal:
    """Who authenticated: what presence events name, and whose a persistent session is."""

    role: Role
    name: str  # fakeiot-backend, fakeiot-gateway, a certificate id, or "anonymous"


@dataclass(frozen=True)
class Credentials:
    """What fakeiot accepts at CONNECT."""

    backend_password: str = field(repr=False)
    gateway_password: str = field(repr=False)
    allow_anonymous_devices: bool = False


class ConnectRefused(Exception):
    """A CONNECT that must be refused: ``code`` for the CONNACK, ``reason`` for the log."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _password_matches(given: str | None, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest((given or "").encode(), expected.encode())


def admit(
    client_id: str,
    *,
    username: str | None,
    password: str | None,
    certificate_id: str | None,
    certificate_status: str | None,
    will_topic: str | None,
    credentials: Credentials,
) -> Principal:
    """The principal of a CONNECT, or :class:`ConnectRefused`.

    ``certificate_id`` is that of the verified client certificate (TLS
    listener), ``certificate_status`` its registered status (``None``: not
    registered through the API, but signed by fakeiot's CA).
    """
    if certificate_id is not None and certificate_status not in (None, "ACTIVE"):
        raise ConnectRefused(
            NOT_AUTHORIZED, f"certificate {certificate_id[:12]} is {certificate_status}, not ACTIVE"
        )
    if username == BACKEND_USERNAME:
        if not _password_matches(password, credentials.backend_password):
            raise ConnectRefused(NOT_AUTHORIZED, "wrong backend password")
        return Principal(Role.BACKEND, BACKEND_USERNAME)
    if username == GATEWAY_USERNAME:
        if not _password_matches(password, credentials.gateway_password):
            raise ConnectRefused(NOT_AUTHORIZED, "wrong gateway password")
        principal = Principal(Role.DEVICE, GATEWAY_USERNAME)
    elif certificate_id is not None:
        principal = Principal(Role.DEVICE, certificate_id)  # AWS IoT's principal: the certificate
    elif username is not None:
        raise ConnectRefused(NOT_AUTHORIZED, f"unknown user name {username[:40]!r}")
    elif credentials.allow_anonymous_devices:
        principal = Principal(Role.DEVICE, "anonymous")
    else:
        raise ConnectRefused(
            NOT_AUTHORIZED,
            f"no credentials: device clients need the gateway's (user name {GATEWAY_USERNAME})",
        )
    if client_id.startswith(EVENTS_CLIENT_PREFIX) and principal.name == GATEWAY_USERNAME:
        # Only the gateway's own credential: registry events carry every Thing's attributes (password hashes).
        # The gateway's registry-event watcher (gateway/revocation.py); never a CP id (':' is not allowed in those).
        if will_topic is not None:
            raise ConnectRefused(
                NOT_AUTHORIZED, "the registry-event client may not set a will message"
            )
        return principal
    try:
        validate_identity(client_id)
    except InvalidIdentity as exc:
        raise ConnectRefused(
            IDENTIFIER_REJECTED,
            f"client id {client_id[:60]!r} is reserved for the backend role ({exc.reason})",
        ) from None
    if will_topic is not None and not may_publish(principal.role, client_id, will_topic):
        raise ConnectRefused(
            NOT_AUTHORIZED, f"will topic {will_topic[:80]!r} is not one this client may publish to"
        )
    return principal


@lru_cache(maxsize=65536)
def _thing(client_id: str) -> str | None:
    """The one Thing a device client id maps to (None: not a CP id, so no Thing)."""
    try:
        return validate_identity(client_id).thing_name
    except InvalidIdentity:
        return None


def _own(client_id: str, topic: str, suffix: str) -> bool:
    thing = _thing(client_id)
    if thing is None:
        return False
    if topic == f"{client_id}/{suffix}":
        return True
    levels = topic.split("/")
    return (
        len(levels) >= 4
        and levels[:2] == ["$aws", "things"]
        and levels[2] == thing
        and levels[3] == "shadow"
    )


def _registry_event(client_id: str, topic: str) -> bool:
    """The gateway's event watcher may read registry events (``$aws/events/thing/<name>/updated|deleted``)."""
    if not client_id.startswith(EVENTS_CLIENT_PREFIX):
        return False
    levels = topic.split("/")
    return (
        len(levels) == 5
        and levels[:3] == ["$aws", "events", "thing"]
        and levels[4] in ("updated", "deleted")
    )


def may_publish(role: Role, client_id: str, topic: str) -> bool:
    return role is Role.BACKEND or _own(client_id, topic, "in")


def may_receive(role: Role, client_id: str, topic: str) -> bool:
    return (
        role is Role.BACKEND or _own(client_id, topic, "out") or _registry_event(client_id, topic)
    )


def may_subscribe(role: Role, client_id: str, topic_filter: str) -> bool:
    """A device may only subscribe to filters that match nothing but its own topics
    (wildcards allowed only after ``$aws/things/<its Thing>/shadow``); the gateway's
    event watcher only to registry events.  A shared subscription
    (``$share/<group>/<filter>``) is judged by its ``<filter>``."""
    topic_filter = underlying_filter(topic_filter)
    return (
        role is Role.BACKEND
        or _own(client_id, topic_filter, "out")
        or _registry_event(client_id, topic_filter)
    )
