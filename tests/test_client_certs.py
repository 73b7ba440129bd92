"""Security profile 3: is this client certificate this charge point's?  (pure, on DER bytes)

Certificates are made here with ``cryptography``; the TLS layer's chain check is not
under test (see test_profile3.py for the end-to-end case), only the OCPP rules on the
certificate's subject and SANs and the ``--cert-binding`` choice.
"""

from __future__ import annotations

import datetime
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.client_certs import SERIAL_NUMBER_ATTRIBUTE, check_client_certificate
from gateway.errors import ConnectionRefused
from gateway.identity import validate_identity

CPO = "ACME Charging"
REGISTERED = {SERIAL_NUMBER_ATTRIBUTE: "SN-42"}


@cache
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(
    *, cns: tuple[str, ...] = ("CP1", "SN-42"), org: str | None = CPO, sans: tuple[str, ...] = ()
) -> bytes:
    """A self-signed certificate with these CNs (they may repeat), O and DNS SANs, in DER."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]
    if org is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    return builder.sign(_key(), hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def check(
    der: bytes | None,
    cp_id: str = "CP1",
    *,
    binding: str = "cn-or-san",
    attributes: dict[str, str] = REGISTERED,
) -> None:
    check_client_certificate(
        der, validate_identity(cp_id), attributes, cpo_name=CPO, binding=binding
    )


def refusal(
    der: bytes | None,
    cp_id: str = "CP1",
    *,
    binding: str = "cn-or-san",
    attributes: dict[str, str] = REGISTERED,
) -> str:
    """The reason ``der`` is refused for ``cp_id`` (the close code is always 1008)."""
    with pytest.raises(ConnectionRefused) as info:
        check(der, cp_id, binding=binding, attributes=attributes)
    assert info.value.close_code == 1008
    return info.value.reason


@pytest.mark.parametrize("binding", ["cn-or-san", "cn"])
def test_cn_equal_to_the_id_is_accepted(binding: str) -> None:
    check(make_cert(), binding=binding)


@pytest.mark.parametrize("binding", ["cn-or-san", "san"])
def test_a_dns_san_equal_to_the_id_is_accepted(binding: str) -> None:
    check(make_cert(cns=("SN-42",), sans=("other.example", "CP1")), binding=binding)


def test_cn_binding_ignores_sans() -> None:
    reason = refusal(make_cert(cns=("SN-42",), sans=("CP1",)), binding="cn")
    assert reason == "Charge Point CP1: no CN of the client certificate equals the id"


def test_san_binding_ignores_the_cn() -> None:
    reason = refusal(make_cert(), binding="san")
    assert reason == "Charge Point CP1: no SAN of the client certificate equals the id"


def test_another_charge_points_certificate_is_refused() -> None:
    reason = refusal(make_cert(), "CP2")
    assert reason == "Charge Point CP2: no CN or SAN of the client certificate equals the id"


def test_the_id_only_contained_in_the_cn_is_not_a_match() -> None:
    # "CP1 SN-42" contains CP1 but is not equal to it: binding asks for equality.
    assert "no CN or SAN of the client certificate equals the id" in refusal(
        make_cert(cns=("CP1 SN-42",))
    )


def test_no_certificate_is_refused() -> None:
    assert refusal(None) == (
        "Charge Point CP1 uses security profile 3: a TLS client certificate is required"
    )


def test_unreadable_der_is_refused() -> None:
    assert refusal(b"\x30\x03not a certificate") == (
        "Charge Point CP1: unreadable client certificate"
    )


@pytest.mark.parametrize("org", [None, "Someone Else"])
def test_organization_must_contain_the_cpo_name(org: str | None) -> None:
    assert refusal(make_cert(org=org, sans=("CP1",))) == (
        "Charge Point CP1: client certificate O does not contain the CPO name"
    )


def test_serial_number_must_be_registered() -> None:
    reason = refusal(make_cert(), attributes={})
    assert reason == (
        f"Charge Point CP1 uses security profile 3 but has no {SERIAL_NUMBER_ATTRIBUTE} registered"
    )


def test_cn_must_contain_the_registered_serial_number() -> None:
    reason = refusal(make_cert(), attributes={SERIAL_NUMBER_ATTRIBUTE: "SN-99"})
    assert reason == "Charge Point CP1: client certificate CN does not contain its serial number"


def test_refusals_do_not_quote_the_certificate() -> None:
    der = make_cert(cns=("SN-42 secret-subject-text",), sans=("CP9",))
    assert "secret-subject-text" not in refusal(der)
