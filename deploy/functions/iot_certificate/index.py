"""Custom resource ``Custom::IotCertificate``: the gateway's AWS IoT certificate, key in Secrets Manager.

Run by the CDK's custom-resource provider (``on_event``; it answers CloudFormation itself):

* Create: ``CreateKeysAndCertificate`` (ACTIVE), then the certificate and private key as JSON
  (``certificatePem``, ``privateKey``) into the secret ``SecretArn``; the physical id is the
  certificate id.  If writing the secret fails, the new certificate is deleted again.
* Update: nothing changes (a new secret gets the same certificate written into it).
* Delete: deactivate and delete the certificate (the stack detached its policy first); one
  that is already gone, or an id that is not a certificate's (a failed create), is skipped.

The answer's data holds the certificate's ARN and id only: CloudFormation shows a custom
resource's data to anyone who may describe the stack, so the key never goes there.
"""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

CERTIFICATE_ID = re.compile(r"[0-9a-f]{64}")
GONE = ("ResourceNotFoundException",)


def on_event(
    event: dict[str, Any], context: Any = None, *, iot: Any = None, secrets: Any = None
) -> dict[str, Any]:
    iot = iot or boto3.client("iot")
    secrets = secrets or boto3.client("secretsmanager")
    request = event["RequestType"]
    secret_arn = event["ResourceProperties"]["SecretArn"]
    if request == "Create":
        return _create(iot, secrets, secret_arn)
    certificate_id = event["PhysicalResourceId"]
    if request == "Update":
        description = iot.describe_certificate(certificateId=certificate_id)[
            "certificateDescription"
        ]
        if event.get("OldResourceProperties", {}).get("SecretArn") != secret_arn:
            raise ValueError(
                "the certificate's key is not kept anywhere but in its secret: a new secret needs a "
                "new certificate (replace the GatewayCertificate resource)"
            )
        return _answer(certificate_id, description["certificateArn"])
    if request == "Delete":
        _delete(iot, certificate_id)
        return {"PhysicalResourceId": certificate_id}
    raise ValueError(f"unknown RequestType {request!r}")


def _create(iot: Any, secrets: Any, secret_arn: str) -> dict[str, Any]:
    created = iot.create_keys_and_certificate(setAsActive=True)
    certificate_id = created["certificateId"]
    try:
        secrets.put_secret_value(
            SecretId=secret_arn,
            SecretString=json.dumps(
                {
                    "certificatePem": created["certificatePem"],
                    "privateKey": created["keyPair"]["PrivateKey"],
                }
            ),
        )
    except (BotoCoreError, ClientError):
        _delete(iot, certificate_id)  # a certificate whose key is lost is of no use to anyone
        raise
    print(f"certificate {certificate_id[:12]}...: created, key written to the secret")
    return _answer(certificate_id, created["certificateArn"])


def _delete(iot: Any, certificate_id: str) -> None:
    if not CERTIFICATE_ID.fullmatch(certificate_id):
        print(
            f"{certificate_id!r} is not a certificate id (a create that failed): nothing to delete"
        )
        return
    try:
        iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
        iot.delete_certificate(certificateId=certificate_id, forceDelete=False)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in GONE:
            raise
        print(f"certificate {certificate_id[:12]}...: already gone")
        return
    print(f"certificate {certificate_id[:12]}...: deactivated and deleted")


def _answer(certificate_id: str, certificate_arn: str) -> dict[str, Any]:
    return {
        "PhysicalResourceId": certificate_id,
        "Data": {"CertificateId": certificate_id, "CertificateArn": certificate_arn},
    }
