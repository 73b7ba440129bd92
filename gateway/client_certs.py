"""OCPP security profile 3: is this client certificate this charge point's? (pure)

The TLS layer has already checked that the certificate chains to the
configured CA (``--client-ca-file``).  What OCPP's security whitepaper adds
(A00.FR.404/405), and what this module checks on the DER certificate:

* the subject's O (organizationName) contains the CPO's name (``--cpo-name``);
* the subject's CN contains the charge point's serial number, as registered
  in the Thing attribute ``ocppSerialNumber``;
* the certificate is bound to the identity in the URL, so that a valid
  certificate of another charge point is refused: by default the CN or a
  DNS-name SAN equals the CP id (``--cert-binding cn-or-san``; ``cn`` or
  ``san`` to accept only one of them).

Every refusal names the rule that failed and never includes the whole
certificate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iotshared.attributes import SERIAL_NUMBER_ATTRIBUTE

from .errors import ClientCertificateRefused
from .identity import ChargePointIdentity

if TYPE_CHECKING:
    from cryptography import x509

BINDINGS = ("cn-or-san", "cn", "san")


def load_cryptography() -> None:
    """Import what the checks use: cryptography's x509, about 7 MiB resident, so only a gateway
    that checks client certificates holds it (app.py calls this at start-up when
    ``--client-ca-file`` is set, so that no connection waits for the import)."""
    import cryptography.x509.oid  # noqa: F401


def _names(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attr.value) for attr in cert.subject.get_attributes_for_oid(oid)]


def check_client_certificate(
    der: bytes | None,
    identity: ChargePointIdentity,
    attributes: dict[str, str],
    *,
    cpo_name: str,
    binding: str = "cn-or-san",
) -> None:
    """Raise :class:`ClientCertificateRefused` (1008) unless the certificate belongs to this CP."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cp_id = identity.cp_id
    if der is None:
        raise ClientCertificateRefused(
            f"Charge Point {cp_id} uses security profile 3: a TLS client certificate is required"
        )
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise ClientCertificateRefused(
            f"Charge Point {cp_id}: unreadable client certificate"
        ) from None
    organizations = _names(cert, NameOID.ORGANIZATION_NAME)
    if not any(cpo_name in o for o in organizations):
        raise ClientCertificateRefused(
            f"Charge Point {cp_id}: client certificate O does not contain the CPO name"
        )
    common_names = _names(cert, NameOID.COMMON_NAME)
    try:
        sans = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        sans = []
    by_cn = binding in ("cn-or-san", "cn") and cp_id in common_names
    by_san = binding in ("cn-or-san", "san") and cp_id in sans
    if not (by_cn or by_san):
        where = {"cn-or-san": "no CN or SAN", "cn": "no CN", "san": "no SAN"}[binding]
        raise ClientCertificateRefused(
            f"Charge Point {cp_id}: {where} of the client certificate equals the id"
        )
    serial = attributes.get(SERIAL_NUMBER_ATTRIBUTE)
    if not serial:
        raise ClientCertificateRefused(
            f"Charge Point {cp_id} uses security profile 3 but has no {SERIAL_NUMBER_ATTRIBUTE} registered"
        )
    if not any(serial in cn for cn in common_names):
        raise ClientCertificateRefused(
            f"Charge Point {cp_id}: client certificate CN does not contain its serial number"
        )
