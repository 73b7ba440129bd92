"""AWS IoT's security API subset: policies, certificates, attachments, endpoint.

What ``scripts/provision.py`` needs, in botocore's ``iot`` shapes:
CreatePolicy/GetPolicy/DeletePolicy, CreateKeysAndCertificate (signed by
fakeiot's own CA, so the certificate works on fakeiot's mutual-TLS
listener), DescribeCertificate/UpdateCertificate/DeleteCertificate/
ListCertificates, AttachPolicy/DetachPolicy/ListTargetsForPolicy,
AttachThingPrincipal/DetachThingPrincipal/ListThingPrincipals and
DescribeEndpoint.  Policies are stored and returned, not evaluated: fakeiot
applies its fixed per-client-id rules (:mod:`fakeiot.policy`), which are
what the provisioned policy grants.  A certificate that is not ACTIVE cannot
connect.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .certs import CertificateAuthority
from .errors import ApiError, invalid, not_found
from .listeners import certificate_id
from .store import Store

POLICY_KIND = "policy"
CERTIFICATE_KIND = "certificate"
PRINCIPALS_KIND = "thing-principals"
CERT_STATUSES = ("ACTIVE", "INACTIVE", "REVOKED", "PENDING_TRANSFER", "PENDING_ACTIVATION")


@dataclass
class SecurityApi:
    store: Store
    ca: CertificateAuthority | None
    region: str
    account_id: str
    endpoint: str

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account_id}:{kind}/{name}"

    # -- policies ----------------------------------------------------------------

    def create_policy(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        document = body.get("policyDocument")
        try:
            parsed = json.loads(document) if isinstance(document, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or "Statement" not in parsed:
            raise ApiError(
                400,
                "MalformedPolicyException",
                "policyDocument must be a JSON policy with a Statement",
            )
        created: list[bool] = []

        def create(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is not None:
                return existing
            created.append(True)
            return {"document": document, "targets": [], "created": time.time()}

        self.store.update_resource(POLICY_KIND, name, create)
        if not created:
            raise ApiError(409, "ResourceAlreadyExistsException", f"Policy {name} already exists")
        return {
            "policyName": name,
            "policyArn": self._arn("policy", name),
            "policyDocument": document,
            "policyVersionId": "1",
        }

    def _policy(self, name: str) -> dict[str, Any]:
        doc = self.store.get_resource(POLICY_KIND, name)
        if doc is None:
            raise not_found(f"Policy {name}")
        return doc

    def get_policy(self, name: str) -> dict[str, Any]:
        doc = self._policy(name)
        return {
            "policyName": name,
            "policyArn": self._arn("policy", name),
            "policyDocument": doc["document"],
            "defaultVersionId": "1",
            "creationDate": doc["created"],
            "lastModifiedDate": doc["created"],
        }

    def delete_policy(self, name: str) -> dict[str, Any]:
        def delete(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None:
                raise not_found(f"Policy {name}")
            if existing["targets"]:
                raise ApiError(
                    409,
                    "DeleteConflictException",
                    f"Policy {name} is attached to {len(existing['targets'])} target(s)",
                )
            return None

        self.store.update_resource(POLICY_KIND, name, delete)
        return {}

    def attach_policy(self, name: str, body: dict[str, Any], attach: bool) -> dict[str, Any]:
        target = body.get("target")
        if not isinstance(target, str) or not target:
            raise invalid("target is required")

        def change(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None:
                raise not_found(f"Policy {name}")
            targets = [t for t in existing["targets"] if t != target]
            return {**existing, "targets": targets + [target] if attach else targets}

        self.store.update_resource(POLICY_KIND, name, change)
        return {}

    def list_targets(self, name: str) -> dict[str, Any]:
        return {"targets": list(self._policy(name)["targets"])}

    # -- certificates -----------------------------------------------------------------

    def create_keys_and_certificate(self, query: dict[str, str]) -> dict[str, Any]:
        if self.ca is None:
            raise ApiError(503, "ServiceUnavailableException", "fakeiot has no CA")
        cert_pem, key_pem, public_pem = self.ca.issue_pem("AWS IoT Certificate")
        der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
        cert_id = certificate_id(der)
        status = "ACTIVE" if query.get("setAsActive") == "true" else "INACTIVE"
        arn = self._arn("cert", cert_id)
        self.store.put_resource(
            CERTIFICATE_KIND,
            cert_id,
            {"status": status, "pem": cert_pem.decode(), "created": time.time()},
        )
        return {
            "certificateArn": arn,
            "certificateId": cert_id,
            "certificatePem": cert_pem.decode(),
            "keyPair": {"PublicKey": public_pem.decode(), "PrivateKey": key_pem.decode()},
        }

    def _certificate(self, cert_id: str) -> dict[str, Any]:
        doc = self.store.get_resource(CERTIFICATE_KIND, cert_id)
        if doc is None:
            raise not_found(f"Certificate {cert_id}")
        return doc

    def describe_certificate(self, cert_id: str) -> dict[str, Any]:
        doc = self._certificate(cert_id)
        return {
            "certificateDescription": {
                "certificateArn": self._arn("cert", cert_id),
                "certificateId": cert_id,
                "status": doc["status"],
                "certificatePem": doc["pem"],
                "creationDate": doc["created"],
                "lastModifiedDate": doc["created"],
            }
        }

    def list_certificates(self) -> dict[str, Any]:
        return {
            "certificates": [
                {
                    "certificateArn": self._arn("cert", cid),
                    "certificateId": cid,
                    "status": doc["status"],
                    "creationDate": doc["created"],
                }
                for cid, doc in self.store.list_resources(CERTIFICATE_KIND)
            ]
        }

    def update_certificate(self, cert_id: str, query: dict[str, str]) -> dict[str, Any]:
        status = query.get("newStatus")
        if status not in CERT_STATUSES:
            raise invalid(f"newStatus must be one of {', '.join(CERT_STATUSES)}")

        def change(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None:
                raise not_found(f"Certificate {cert_id}")
            return {**existing, "status": status}

        self.store.update_resource(CERTIFICATE_KIND, cert_id, change)
        return {}

    def delete_certificate(self, cert_id: str, query: dict[str, str]) -> dict[str, Any]:
        doc = self._certificate(cert_id)
        if doc["status"] == "ACTIVE":
            raise ApiError(
                409,
                "CertificateStateException",
                "Certificate must be deactivated (INACTIVE) before deletion",
            )
        arn = self._arn("cert", cert_id)
        things = [
            name for name, d in self.store.list_resources(PRINCIPALS_KIND) if arn in d["principals"]
        ]
        if things:
            raise ApiError(
                409,
                "DeleteConflictException",
                f"Certificate is attached to Thing(s) {', '.join(things)}",
            )
        policies = [
            name for name, d in self.store.list_resources(POLICY_KIND) if arn in d["targets"]
        ]
        if policies and query.get("forceDelete") != "true":
            raise ApiError(
                409,
                "DeleteConflictException",
                f"Certificate has policies attached: {', '.join(policies)}",
            )
        for name in policies:
            self.attach_policy(name, {"target": arn}, attach=False)
        self.store.delete_resource(CERTIFICATE_KIND, cert_id)
        return {}

    # -- thing principals -----------------------------------------------------------------

    def thing_principal(self, thing: str, principal: str | None, attach: bool) -> dict[str, Any]:
        if not principal:
            raise invalid("the x-amzn-principal header is required")
        if self.store.get_thing(thing) is None:
            raise not_found(f"Thing {thing}")

        def change(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            principals = [
                p for p in (existing or {"principals": []})["principals"] if p != principal
            ]
            if attach:
                principals.append(principal)
            return {"principals": principals} if principals else None

        self.store.update_resource(PRINCIPALS_KIND, thing, change)
        return {}

    def list_thing_principals(self, thing: str) -> dict[str, Any]:
        if self.store.get_thing(thing) is None:
            raise not_found(f"Thing {thing}")
        return {
            "principals": (self.store.get_resource(PRINCIPALS_KIND, thing) or {"principals": []})[
                "principals"
            ]
        }

    def describe_endpoint(self, query: dict[str, str]) -> dict[str, Any]:
        return {"endpointAddress": self.endpoint}
