"""The admission decision (pure): the README's "What a charge point sees", row by row, without sockets.

Each row drives :func:`gateway.admission.decide` the way the I/O layer
(:mod:`gateway.session`) does: start with what the upgrade request says,
answer each fact it asks for from the row's answers, until it gives a final
verdict.  The end-to-end tests (test_gateway_loop.py, test_auth.py, ...)
check the same answers on real sockets, one per behaviour.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.admission import (
    Accept,
    AdmissionFacts,
    Challenge,
    CheckPassword,
    Handshake,
    LookUp,
    LookupsExhausted,
    NotRegistered,
    PasswordCheck,
    Refuse,
    Registered,
    RegistryAnswer,
    RegistryUnreachable,
    SessionSettings,
    Verdict,
    credential_fingerprint,
    decide,
    requires_password,
    security_profile,
)
from gateway.errors import ConnectionRefused
from gateway.identity import validate_identity
from gateway.subprotocol import DEFAULT_SUBPROTOCOLS

SETTINGS = SessionSettings(
    subprotocols=DEFAULT_SUBPROTOCOLS,
    base_path="",
    ping_interval=60.0,
    pong_timeout=30.0,
    max_connections=100,
    max_message_rate=20.0,
    max_message_burst=40,
    tls=False,
    tls_direct=False,
    min_security_profile=0,
    cpo_name=None,
    cert_binding="cn-or-san",
    drain_timeout=10.0,
    close_timeout=5.0,
    call_timeout=30.0,
    reconnect_rate=1.0,
    reconnect_burst=3,
)
PROFILE_3 = replace(SETTINGS, tls=True, tls_direct=True, cpo_name="ACME Charging")
HASH = {"ocppPasswordHash": "pbkdf2-sha256:1:00:00"}  # never verified here: the I/O layer does that
CP1 = validate_identity("CP1")
OFFER = ("ocpp2.0.1",)
SPEAKS = "this server speaks ocpp2.0.1, ocpp2.0, ocpp1.6"


@dataclass(frozen=True)
class Answers:
    """What the I/O layer would report when asked (the throttles', registry's and hash's answers)."""

    registry: RegistryAnswer = Registered({})
    password: PasswordCheck = PasswordCheck.VERIFIED
    reconnect_allowed: bool = True


def run(
    facts: AdmissionFacts, settings: SessionSettings = SETTINGS, answers: Answers = Answers()
) -> tuple[Verdict, list[str]]:
    """The final verdict, and which facts were asked for on the way (in order)."""
    asked: list[str] = []
    step = decide(facts, settings)
    while not isinstance(step, Refuse | Challenge | Accept):
        asked.append(type(step).__name__)
        assert len(asked) <= 3, asked  # each fact is asked for once
        if isinstance(step, LookUp):
            facts = replace(facts, registry=answers.registry)
        elif isinstance(step, CheckPassword):
            facts = replace(facts, password=answers.password)
        else:
            assert isinstance(step, Handshake)
            facts = replace(facts, reconnect_allowed=answers.reconnect_allowed)
        step = decide(facts, settings)
    return step, asked


def certificate(common_name: str, organization: str, dns_names: tuple[str, ...] = ()) -> bytes:
    """A self-signed client certificate (DER): the TLS layer has checked the chain before admission."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


CP3_ATTRIBUTES = {"ocppSecurityProfile": "3", "ocppSerialNumber": "SN-3"}

# (situation as in the README, facts, settings, answers, verdict, facts asked for)
ROWS: list[tuple[str, AdmissionFacts, SessionSettings, Answers, Verdict, list[str]]] = [
    (
        "no subprotocol offered",
        AdmissionFacts(path="/CP1", offered=()),
        SETTINGS,
        Answers(),
        Refuse(1002, f"No OCPP subprotocol offered in Sec-WebSocket-Protocol; {SPEAKS}", None),
        [],
    ),
    (
        "none supported",
        AdmissionFacts(path="/CP1", offered=("ocpp1.5", "mqtt")),
        SETTINGS,
        Answers(),
        Refuse(1002, f"None of the offered subprotocols is supported; {SPEAKS}", None),
        [],
    ),
    (
        "Sec-WebSocket-Protocol: , ocpp2.0.1 (leading comma)",
        AdmissionFacts(path="/CP1", offered=("", " ocpp2.0.1")),
        SETTINGS,
        Answers(),
        Accept(CP1, "ocpp2.0.1", {}),
        ["LookUp", "Handshake"],
    ),
    (
        "invalid identity",
        AdmissionFacts(path="/CP%231", offered=OFFER),
        SETTINGS,
        Answers(),
        Refuse(
            1008,
            "Invalid charge point identity: '#' is not allowed (it is an MQTT wildcard)",
            "ocpp2.0.1",
        ),
        [],  # validated before the registry is asked
    ),
    (
        "Thing has a password and the credentials are missing or wrong",
        AdmissionFacts(path="/CP1", offered=OFFER),
        SETTINGS,
        Answers(registry=Registered(HASH), password=PasswordCheck.FAILED),
        Challenge(),
        ["LookUp", "CheckPassword"],
    ),
    (
        "Thing has a password, too many failures from this source",
        AdmissionFacts(path="/CP1", offered=OFFER),
        SETTINGS,
        Answers(registry=Registered(HASH), password=PasswordCheck.BLOCKED),
        Challenge(),
        ["LookUp", "CheckPassword"],
    ),
    (
        "Thing has a password and the credentials are right",
        AdmissionFacts(path="/CP1", offered=OFFER),
        SETTINGS,
        Answers(registry=Registered(HASH)),
        Accept(CP1, "ocpp2.0.1", HASH),
        ["LookUp", "CheckPassword", "Handshake"],
    ),
    (
        "not registered",
        AdmissionFacts(path="/CP2", offered=OFFER),
        SETTINGS,
        Answers(registry=NotRegistered()),
        Refuse(1008, "Charge Point CP2 not registered as an IoT Thing", "ocpp2.0.1"),
        ["LookUp"],
    ),
    (
        "not registered, every CP must authenticate (told apart from a wrong password by nothing)",
        AdmissionFacts(path="/CP2", offered=OFFER),
        replace(SETTINGS, min_security_profile=1),
        Answers(registry=NotRegistered(), password=PasswordCheck.FAILED),
        Challenge(),
        ["LookUp", "CheckPassword"],
    ),
    (
        "registry unreachable",
        AdmissionFacts(path="/CP1", offered=OFFER),
        SETTINGS,
        Answers(registry=RegistryUnreachable("Thing registry unavailable, try again later")),
        Refuse(1013, "Thing registry unavailable, try again later", "ocpp2.0.1"),
        ["LookUp"],
    ),
    (
        "too many look-ups of unregistered ids from one address",
        AdmissionFacts(path="/CP1", offered=OFFER),
        SETTINGS,
        Answers(registry=LookupsExhausted()),
        Refuse(
            1013,
            "Too many look-ups of unregistered charge points from this address; try again later",
            "ocpp2.0.1",
        ),
        ["LookUp"],
    ),
    (
        "more than --max-connections",
        AdmissionFacts(path="/CP1", offered=OFFER, connections=100),
        SETTINGS,
        Answers(),
        Refuse(1013, "Gateway at capacity (100 connections); try again later", "ocpp2.0.1"),
        [],
    ),
    (
        "more pending admissions than max_pending",
        AdmissionFacts(path="/CP1", offered=OFFER, pending=2_001),
        SETTINGS,
        Answers(),
        Refuse(1013, "Gateway at capacity (100 connections); try again later", "ocpp2.0.1"),
        [],
    ),
    (
        "gateway shutting down",
        AdmissionFacts(path="/CP1", offered=OFFER, draining=True),
        SETTINGS,
        Answers(),
        Refuse(1001, "Gateway shutting down", "ocpp2.0.1"),
        [],
    ),
    (
        "one id connecting faster than --cp-reconnect-rate",
        AdmissionFacts(path="/CP1", offered=OFFER),
        SETTINGS,
        Answers(reconnect_allowed=False),
        Refuse(
            1013, "Too many connections for CP1: at most 1 per second; retry later", "ocpp2.0.1"
        ),
        ["LookUp", "Handshake"],
    ),
    (
        "registered for profile 3 and no client certificate",
        AdmissionFacts(path="/CP1", offered=OFFER),
        PROFILE_3,
        Answers(registry=Registered(CP3_ATTRIBUTES)),
        Refuse(
            1008,
            "Charge Point CP1 uses security profile 3: a TLS client certificate is required",
            "ocpp2.0.1",
        ),
        ["LookUp"],
    ),
    (
        "registered for profile 3 and another CP's client certificate",
        AdmissionFacts(
            path="/CP1", offered=OFFER, peer_certificate=certificate("CP4 SN-3", "ACME Charging")
        ),
        PROFILE_3,
        Answers(registry=Registered(CP3_ATTRIBUTES)),
        Refuse(
            1008,
            "Charge Point CP1: no CN or SAN of the client certificate equals the id",
            "ocpp2.0.1",
        ),
        ["LookUp"],
    ),
    (
        "registered for profile 3 and a certificate of another CPO",
        AdmissionFacts(path="/CP1", offered=OFFER, peer_certificate=certificate("CP1", "Other")),
        PROFILE_3,
        Answers(registry=Registered(CP3_ATTRIBUTES)),
        Refuse(
            1008,
            "Charge Point CP1: client certificate O does not contain the CPO name",
            "ocpp2.0.1",
        ),
        ["LookUp"],
    ),
    (
        "registered for profile 3 and its own client certificate (no password asked)",
        AdmissionFacts(
            path="/CP1",
            offered=OFFER,
            peer_certificate=certificate("SN-3", "ACME Charging", dns_names=("CP1",)),
        ),
        PROFILE_3,
        Answers(registry=Registered(CP3_ATTRIBUTES)),
        Accept(CP1, "ocpp2.0.1", CP3_ATTRIBUTES),
        ["LookUp", "Handshake"],
    ),
    (
        "registered for profile 3 on a gateway that does not serve it",
        AdmissionFacts(path="/CP1", offered=OFFER),
        replace(SETTINGS, tls=True),
        Answers(registry=Registered(CP3_ATTRIBUTES)),
        Refuse(
            1008,
            "Charge Point CP1 uses security profile 3, not served by this gateway",
            "ocpp2.0.1",
        ),
        ["LookUp"],
    ),
    (
        "registered below --min-security-profile",
        AdmissionFacts(path="/CP1", offered=OFFER),
        replace(SETTINGS, min_security_profile=2),
        Answers(registry=Registered(HASH)),
        Refuse(
            1008,
            "Charge Point CP1: security profile 1 is below this gateway's minimum 2",
            "ocpp2.0.1",
        ),
        ["LookUp"],
    ),
    (
        "registered for profile 2 on ws:// (no TLS)",
        AdmissionFacts(path="/CP1", offered=OFFER),
        SETTINGS,
        Answers(registry=Registered({**HASH, "ocppSecurityProfile": "2"})),
        Refuse(
            1008,
            "Charge Point CP1 uses security profile 2: connect with wss:// (TLS)",
            "ocpp2.0.1",
        ),
        ["LookUp"],
    ),
    (
        "registered for profile 2 behind a TLS-terminating balancer",
        AdmissionFacts(path="/CP1", offered=OFFER),
        replace(SETTINGS, tls=True),
        Answers(registry=Registered({**HASH, "ocppSecurityProfile": "2"})),
        Accept(CP1, "ocpp2.0.1", {**HASH, "ocppSecurityProfile": "2"}),
        ["LookUp", "CheckPassword", "Handshake"],
    ),
    (
        "a typo in the registered profile",
        AdmissionFacts(path="/CP1", offered=OFFER),
        SETTINGS,
        Answers(registry=Registered({"ocppSecurityProfile": "one"})),
        Refuse(
            1008,
            "Charge Point has an invalid ocppSecurityProfile 'one' in the registry",
            "ocpp2.0.1",
        ),
        ["LookUp"],
    ),
]


@pytest.mark.parametrize(
    ("facts", "settings", "answers", "verdict", "asked"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_what_a_charge_point_sees(
    facts: AdmissionFacts,
    settings: SessionSettings,
    answers: Answers,
    verdict: Verdict,
    asked: list[str],
) -> None:
    assert run(facts, settings, answers) == (verdict, asked)


def test_a_refusal_completes_the_handshake_with_an_offered_subprotocol_when_one_matches() -> None:
    verdict, _ = run(AdmissionFacts(path="/a/b", offered=("mqtt", "ocpp1.6", "ocpp2.0.1")))
    assert isinstance(verdict, Refuse)
    assert (verdict.close_code, verdict.subprotocol) == (1008, "ocpp1.6")
    assert verdict.reason == "Invalid path: connect to ws(s)://host/<charge-point-id>"


def test_base_path_is_part_of_the_identity_check() -> None:
    settings = replace(SETTINGS, base_path="/ocpp")
    verdict, _ = run(AdmissionFacts(path="/ocpp/CP1", offered=OFFER), settings)
    assert verdict == Accept(CP1, "ocpp2.0.1", {})
    verdict, asked = run(AdmissionFacts(path="/CP1", offered=OFFER), settings)
    assert verdict == Refuse(
        1008, "Invalid path: connect to ws(s)://host/ocpp/<charge-point-id>", "ocpp2.0.1"
    )
    assert asked == []


def test_a_long_registry_reason_is_clipped_to_fit_a_close_frame() -> None:
    verdict, _ = run(
        AdmissionFacts(path="/CP1", offered=OFFER),
        answers=Answers(registry=RegistryUnreachable("x" * 300)),
    )
    assert isinstance(verdict, Refuse) and len(verdict.reason.encode()) <= 123


def test_the_unknown_id_password_check_is_against_nothing() -> None:
    facts = AdmissionFacts(path="/CP2", offered=OFFER, registry=NotRegistered())
    step = decide(facts, replace(SETTINGS, min_security_profile=1))
    assert step == CheckPassword(validate_identity("CP2"), None)


def test_decide_is_a_function_of_its_facts() -> None:
    facts = AdmissionFacts(path="/CP1", offered=OFFER, registry=Registered(HASH))
    assert decide(facts, SETTINGS) == decide(facts, SETTINGS) == CheckPassword(CP1, HASH)


@pytest.mark.parametrize(
    ("attributes", "profile", "password"),
    [
        ({}, 0, False),
        (HASH, 1, True),
        ({"ocppSecurityProfile": "0"}, 0, False),
        ({"ocppSecurityProfile": "1", **HASH}, 1, True),
        ({"ocppSecurityProfile": "2", **HASH}, 2, True),
        ({"ocppSecurityProfile": "3"}, 3, False),
        ({"ocppSecurityProfile": "3", **HASH}, 3, False),
        ({"ocppSecurityProfile": "0", **HASH}, 0, True),  # a stored hash is never ignored
    ],
)
def test_security_profile_and_password(
    attributes: dict[str, str], profile: int, password: bool
) -> None:
    assert security_profile(attributes) == profile
    assert requires_password(attributes) is password


def test_invalid_profile_attribute_is_refused() -> None:
    with pytest.raises(ConnectionRefused, match="invalid ocppSecurityProfile '9'"):
        security_profile({"ocppSecurityProfile": "9"})


def test_credential_fingerprint_changes_with_profile_or_hash_only() -> None:
    base: dict[str, Any] = {"ocppSecurityProfile": "1", **HASH, "other": "x"}
    assert credential_fingerprint(base) == ("1", HASH["ocppPasswordHash"])
    assert credential_fingerprint({**base, "other": "y"}) == credential_fingerprint(base)
    assert credential_fingerprint({**base, "ocppSecurityProfile": "2"}) != credential_fingerprint(
        base
    )
    assert credential_fingerprint(None) == ("", "")


LONGEST_ID = "C" * 48  # iotshared.identity.MAX_IDENTITY_LENGTH


@pytest.mark.parametrize(
    ("facts", "settings", "answers"),
    [row[1:4] for row in ROWS if row[1].path in ("/CP1", "/CP2")],
    ids=[row[0] for row in ROWS if row[1].path in ("/CP1", "/CP2")],
)
def test_no_refusal_is_clipped_for_the_longest_identity(
    facts: AdmissionFacts, settings: SessionSettings, answers: Answers
) -> None:
    """Every reason the gateway writes fits a close frame whole, whatever the CP's id."""
    verdict, _ = run(replace(facts, path=f"/{LONGEST_ID}"), settings, answers)
    if isinstance(verdict, Refuse):
        assert len(verdict.reason.encode()) <= 123 and not verdict.reason.endswith("..."), verdict
