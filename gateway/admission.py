"""Who may connect, and how everyone else is answered: the admission decision (pure).

:func:`decide` is the whole decision table, in the style of h11: it takes
the facts known about a connection so far (:class:`AdmissionFacts`) and the
settings, and returns either a final verdict or the one fact it needs next:

* :class:`Refuse`: complete the handshake (with ``subprotocol``, which may be
  None, as OCPP-J asks when none matches) and close with ``close_code`` and
  ``reason``;
* :class:`Challenge`: answer the upgrade with HTTP 401 and ``WWW-Authenticate``;
* :class:`Accept`: bridge the charge point;
* :class:`LookUp`: ask the Thing registry, report the answer as ``registry``;
* :class:`CheckPassword`: check the HTTP Basic credentials, report ``password``;
* :class:`Handshake`: complete the handshake, then report the per-id
  reconnect throttle's answer as ``reconnect_allowed`` (AWS IoT counts an
  MQTT CONNECT at the same point).

The I/O layer (:mod:`.session`) calls :func:`decide` again with each fact
added, until the verdict is final.  The throttles and the password hashing
are stateful and stay there; only their answers come in here.  No clock, no
socket, no registry: every row of the README's "What a charge point sees"
about admission is a unit test of this function (``tests/test_admission.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .client_certs import check_client_certificate
from .credentials import PASSWORD_HASH_ATTRIBUTE, SECURITY_PROFILE_ATTRIBUTE
from .errors import (
    CLOSE_GOING_AWAY,
    CLOSE_TRY_AGAIN_LATER,
    ConnectionRefused,
    RegistryUnavailable,
    UnknownChargePoint,
)
from .identity import ChargePointIdentity, identity_from_path
from .subprotocol import choose_subprotocol, clean_offers

SHUTTING_DOWN_REASON = "Gateway shutting down"
LOOKUPS_EXHAUSTED_REASON = (
    "Too many look-ups of unregistered charge points from this address; try again later"
)
WWW_AUTHENTICATE = (b"WWW-Authenticate", b'Basic realm="OCPP", charset="UTF-8"')


@dataclass(frozen=True, kw_only=True)
class SessionSettings:
    """How the gateway admits and serves charge points (one per process, built by :mod:`.app`)."""

    subprotocols: tuple[str, ...]
    base_path: str  # "" (``/<cp-id>``) or a path such as ``/ocpp``
    ping_interval: float  # 0: no keepalive pings
    pong_timeout: float
    max_connections: int  # admitted charge points
    max_message_rate: float  # frames per second from one CP (0: unlimited)
    max_message_burst: int
    tls: bool  # the CP connects over TLS (terminated here or upstream)
    tls_direct: bool  # the gateway terminates TLS itself (it sees client certificates)
    min_security_profile: int
    cpo_name: str | None  # set: profile-3 client certificates are checked (needs a client CA)
    cert_binding: str
    drain_timeout: float  # on drain, how long a connection waits for the CP's close frame
    close_timeout: float  # otherwise (refusals, replaced, errors): then TCP is aborted
    call_timeout: float  # a CP's CALL unanswered this long gets a CALLERROR (0: never)
    reconnect_rate: float  # connections per second per CP id (AWS IoT: one CONNECT/s per client id)
    reconnect_burst: int
    # Not configurable (yet); declared here only.
    max_pending: int = 2_000  # connections between the upgrade request and admission (own bound)
    unknown_lookups_rate: float = 2.0  # look-ups finding no Thing, per second per source address
    unknown_lookups_burst: int = 20


# -- what the registry said -----------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    """The Thing exists; its attributes."""

    attributes: dict[str, str]


@dataclass(frozen=True)
class NotRegistered:
    """There is no such Thing."""


@dataclass(frozen=True)
class RegistryUnreachable:
    """The registry could not be asked (outage, or this process's look-up rate is spent)."""

    reason: str


@dataclass(frozen=True)
class LookupsExhausted:
    """Not asked: this source's budget of look-ups that find nothing is spent, and it is not cached."""


RegistryAnswer = Registered | NotRegistered | RegistryUnreachable | LookupsExhausted


class PasswordCheck(enum.Enum):
    """What the HTTP Basic check said (the I/O layer runs it: slow hashing, backoff)."""

    VERIFIED = "verified"
    FAILED = "failed"  # missing, malformed, another id's or a wrong password; or an unknown id
    BLOCKED = "blocked"  # not checked: too many failures or checks in flight from this source


@dataclass(frozen=True, kw_only=True)
class AdmissionFacts:
    """What is known about one connection; ``None``: not known yet (see :func:`decide`)."""

    path: str  # the request target of the upgrade request
    offered: tuple[str, ...] = ()  # Sec-WebSocket-Protocol items as sent
    draining: bool = False  # the gateway is shutting down
    connections: int = 0  # admitted charge points on this gateway
    pending: int = 1  # connections between upgrade request and admission, this one included
    peer_certificate: bytes | None = None  # DER, when this gateway terminated TLS and got one
    registry: RegistryAnswer | None = None
    password: PasswordCheck | None = None
    reconnect_allowed: bool | None = None  # None: the handshake is not complete yet


# -- verdicts and needs -------------------------------------------------------------------


@dataclass(frozen=True)
class Refuse:
    """Complete the handshake with ``subprotocol`` (may be None), then close with code and reason."""

    close_code: int
    reason: str
    subprotocol: str | None
    # A fixed word for the metrics (ConnectionRefused.cause); not part of what the CP sees.
    cause: str = field(default="policy", compare=False)


@dataclass(frozen=True)
class Challenge:
    """Answer the upgrade with HTTP 401 and ``WWW-Authenticate``: no WebSocket."""

    status: int = 401
    headers: tuple[tuple[bytes, bytes], ...] = (WWW_AUTHENTICATE,)


@dataclass(frozen=True)
class Accept:
    """Bridge the charge point (the handshake is complete)."""

    identity: ChargePointIdentity
    subprotocol: str
    attributes: dict[str, str] | None  # None only for an unknown id (whose password never verifies)


@dataclass(frozen=True)
class LookUp:
    """Ask the registry about ``identity`` and report a :data:`RegistryAnswer`."""

    identity: ChargePointIdentity


@dataclass(frozen=True)
class CheckPassword:
    """Check the HTTP Basic credentials; ``attributes`` None: unknown id (hash a dummy, fail)."""

    identity: ChargePointIdentity
    attributes: dict[str, str] | None


@dataclass(frozen=True)
class Handshake:
    """Complete the handshake with ``subprotocol``; then report ``reconnect_allowed``."""

    identity: ChargePointIdentity
    subprotocol: str


Verdict = Refuse | Challenge | Accept
Need = LookUp | CheckPassword | Handshake


def decide(facts: AdmissionFacts, settings: SessionSettings) -> Verdict | Need:
    """The admission decision table; see the module docstring."""
    offers = clean_offers(facts.offered)
    # A refusal completes the handshake with a subprotocol the CP offered, if there is one.
    fallback = next((p for p in offers if p in settings.subprotocols), None)
    try:
        return _decide(facts, settings, offers)
    except ConnectionRefused as exc:
        return Refuse(exc.close_code, exc.reason, fallback, exc.cause)


def _decide(facts: AdmissionFacts, settings: SessionSettings, offers: list[str]) -> Verdict | Need:
    if facts.draining:
        raise ConnectionRefused(SHUTTING_DOWN_REASON, close_code=CLOSE_GOING_AWAY, cause="draining")
    if facts.connections >= settings.max_connections or facts.pending > settings.max_pending:
        raise ConnectionRefused(
            f"Gateway at capacity ({settings.max_connections} connections); try again later",
            close_code=CLOSE_TRY_AGAIN_LATER,
            cause="capacity",
        )
    identity = identity_from_path(facts.path, settings.base_path)
    subprotocol = choose_subprotocol(offers, settings.subprotocols)
    answer = facts.registry
    if answer is None:
        return LookUp(identity)
    attributes: dict[str, str] | None
    if isinstance(answer, LookupsExhausted):
        raise ConnectionRefused(
            LOOKUPS_EXHAUSTED_REASON, close_code=CLOSE_TRY_AGAIN_LATER, cause="lookups_exhausted"
        )
    if isinstance(answer, RegistryUnreachable):
        raise RegistryUnavailable(answer.reason)
    if isinstance(answer, NotRegistered):
        if settings.min_security_profile < 1:
            raise UnknownChargePoint(identity.cp_id)
        # Every CP must authenticate: an unknown id is not told apart from a wrong password.
        attributes = None
    else:
        attributes = answer.attributes
        check_security_profile(identity, attributes, facts.peer_certificate, settings)
    if attributes is None or requires_password(attributes):
        if facts.password is None:
            return CheckPassword(identity, attributes)
        if facts.password is not PasswordCheck.VERIFIED:
            return Challenge()
    if facts.reconnect_allowed is None:
        return Handshake(identity, subprotocol)
    if not facts.reconnect_allowed:
        raise ConnectionRefused(
            f"Too many connections for {identity.cp_id}: at most {settings.reconnect_rate:g} "
            "per second; retry later",
            close_code=CLOSE_TRY_AGAIN_LATER,
            cause="reconnect_rate",
        )
    return Accept(identity, subprotocol, attributes)


def check_security_profile(
    identity: ChargePointIdentity,
    attributes: dict[str, str],
    peer_certificate: bytes | None,
    settings: SessionSettings,
) -> None:
    """Refuse (1008) a connection that does not meet the CP's registered security profile."""
    profile = security_profile(attributes)
    cp_id = identity.cp_id
    if profile < settings.min_security_profile:
        raise ConnectionRefused(
            f"Charge Point {cp_id}: security profile {profile} is below this gateway's "
            f"minimum {settings.min_security_profile}",
            cause="security_profile",
        )
    if profile >= 2 and not settings.tls:
        raise ConnectionRefused(
            f"Charge Point {cp_id} uses security profile {profile}: connect with wss:// (TLS)",
            cause="security_profile",
        )
    if profile >= 3:
        if not settings.tls_direct or settings.cpo_name is None:
            # Short enough for a close frame (123 bytes) with a 48-character id; the options it
            # needs (--certfile/--keyfile, --client-ca-file, --cpo-name) are in the docs.
            raise ConnectionRefused(
                f"Charge Point {cp_id} uses security profile 3, not served by this gateway",
                cause="security_profile",
            )
        check_client_certificate(
            peer_certificate,
            identity,
            attributes,
            cpo_name=settings.cpo_name,
            binding=settings.cert_binding,
        )


def security_profile(attributes: dict[str, str]) -> int:
    """The Thing's registered profile: ``ocppSecurityProfile``, else 1 with a password hash, else 0."""
    value = attributes.get(SECURITY_PROFILE_ATTRIBUTE)
    if value in ("0", "1", "2", "3"):
        return int(value)
    if value is not None:
        # A typo in the registry must not silently lower the bar.
        raise ConnectionRefused(
            f"Charge Point has an invalid {SECURITY_PROFILE_ATTRIBUTE} {value[:8]!r} in the registry",
            cause="security_profile",
        )
    return 1 if PASSWORD_HASH_ATTRIBUTE in attributes else 0


def requires_password(attributes: dict[str, str]) -> bool:
    """Security profile 1 or 2 (profile 3 authenticates with the client certificate)."""
    return security_profile(attributes) in (1, 2) or (
        PASSWORD_HASH_ATTRIBUTE in attributes and security_profile(attributes) != 3
    )


def credential_fingerprint(attributes: dict[str, str] | None) -> tuple[str, str]:
    """What about a Thing decides how its CP authenticates: a change closes the CP (:mod:`.revocation`)."""
    attributes = attributes or {}
    return attributes.get(SECURITY_PROFILE_ATTRIBUTE, ""), attributes.get(
        PASSWORD_HASH_ATTRIBUTE, ""
    )
