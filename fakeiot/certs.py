"""Throw-away X.509 material for development and tests (``python -m fakeiot certs``).

A CA, a server certificate (for the gateway's ``wss://`` and fakeiot's TLS
listeners) and client certificates, made with the ``cryptography``
package.  EC P-256 keys, valid for one year.  Never use these in production.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(common_name: str, organization: str | None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Issued(cert_path, key_path)


class CertificateAuthority:
    def __init__(
        self,
        common_name: str = "fakeiot development CA",
        organization: str | None = "fakeiot",
        *,
        existing: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ) -> None:
        if existing is not None:
            self.cert, self.key = existing
            return
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = _name(common_name, organization)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: expected an EC private key")
        return cls(existing=(cert, key))

    def save(self, directory: Path, stem: str = "ca") -> Issued:
        return _write(directory, stem, self.cert, self.key)

    def issue_pem(self, common_name: str) -> tuple[bytes, bytes, bytes]:
        """A new client key and certificate, in memory: (certificate PEM, private key PEM, public key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._build(common_name, None, key, (), (), server=False)
        return (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        organization: str | None = None,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        server: bool = False,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._build(common_name, organization, key, dns_names, ip_addresses, server=server)
        return _write(directory, stem, cert, key)

    def _build(
        self,
        common_name: str,
        organization: str | None,
        key: ec.EllipticCurvePrivateKey,
        dns_names: tuple[str, ...],
        ip_addresses: tuple[str, ...],
        *,
        server: bool,
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())


def make_development_pki(
    directory: Path,
    *,
    server_names: tuple[str, ...] = ("localhost",),
    clients: tuple[str, ...] = (),
) -> dict[str, Issued]:
    """CA + server certificate (for ``server_names`` and 127.0.0.1) + one client certificate per name."""
    ca = CertificateAuthority()
    issued = {"ca": ca.save(directory)}
    issued["server"] = ca.issue(
        directory,
        "server",
        server_names[0],
        dns_names=server_names,
        ip_addresses=("127.0.0.1",),
        server=True,
    )
    for client in clients:
        issued[client] = ca.issue(directory, f"client-{client}", client)
    return issued


def ensure_pki(directory: Path) -> tuple[CertificateAuthority, dict[str, Issued]]:
    """fakeiot's own CA and server certificate in ``directory``: loaded, or made on first use."""
    ca_files = Issued(directory / "ca.pem", directory / "ca.key")
    server_files = Issued(directory / "server.pem", directory / "server.key")
    if all(p.is_file() for p in (ca_files.cert, ca_files.key, server_files.cert, server_files.key)):
        return CertificateAuthority.load(ca_files.cert, ca_files.key), {
            "ca": ca_files,
            "server": server_files,
        }
    issued = make_development_pki(directory)
    return CertificateAuthority.load(issued["ca"].cert, issued["ca"].key), issued
