"""Checking AWS Signature Version 4 on fakeiot's HTTP API, with botocore's own signer.

boto3 signs every request it sends (``Authorization: AWS4-HMAC-SHA256
Credential=<key id>/<date>/<region>/<service>/aws4_request,
SignedHeaders=..., Signature=...``).  When fakeiot is given access keys, its
API recomputes that signature over what it received, with the secret of the
named key, and refuses the request unless they match: so the gateway, the
processor, ``python -m fakeiot thing ...`` and ``scripts/provision.py`` work
unchanged once boto3's credential chain holds the same keys
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), as against AWS.

The signature is recomputed by botocore's :class:`~botocore.auth.SigV4Auth`
(canonical request, string to sign, signing key), not reimplemented here.
What AWS also checks is checked: the request time (``X-Amz-Date``) must be
within 15 minutes of now, the credential scope's date must be its date, and
``host`` and ``x-amz-date`` must be signed.  Pure: the caller passes the
clock.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Mapping

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MAX_SKEW = datetime.timedelta(minutes=15)  # AWS's window for a signed request

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<day>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;._-]+),\s*Signature=(?P<signature>[0-9a-f]{64})",
    re.ASCII,
)


class SignatureRejected(Exception):
    """The request is not signed, or not by a key fakeiot knows: answer 403 with AWS's error type."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def verify(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    keys: Mapping[str, str],
    now: datetime.datetime,
) -> str:
    """Check the request's SigV4 signature; returns the access key id that signed it.

    ``target`` is the request target as received (path and query, still
    percent-encoded), ``headers`` maps lower-case names to values, ``now``
    is an aware UTC time.  Raises :class:`SignatureRejected`.
    """
    authorization = headers.get("authorization")
    if not authorization:
        raise SignatureRejected(
            "MissingAuthenticationTokenException", "Missing Authentication Token"
        )
    match = _AUTHORIZATION.fullmatch(authorization.strip())
    if match is None:
        raise SignatureRejected(
            "IncompleteSignatureException",
            "Authorization header is not an AWS4-HMAC-SHA256 signature",
        )
    secret = keys.get(match["key"])
    if secret is None:
        raise SignatureRejected(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    signed = match["signed"].split(";")
    if (
        "host" not in signed
        or "x-amz-date" not in signed
        or any(name not in headers for name in signed)
    ):
        raise SignatureRejected(
            "IncompleteSignatureException",
            "host and x-amz-date must be signed, and every signed header sent",
        )
    amz_date = headers["x-amz-date"]
    try:
        when = datetime.datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise SignatureRejected(
            "IncompleteSignatureException", f"X-Amz-Date {amz_date[:20]!r} is not YYYYMMDDTHHMMSSZ"
        ) from None
    if abs(now - when) > MAX_SKEW:
        raise SignatureRejected(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is not within 15 minutes of {now.strftime(SIGV4_TIMESTAMP)}",
        )
    if match["day"] != amz_date[:8]:
        raise SignatureRejected(
            "InvalidSignatureException", "The credential scope's date is not the request's date"
        )
    declared = headers.get("x-amz-content-sha256")
    if declared is not None and declared != hashlib.sha256(body).hexdigest():
        raise SignatureRejected(
            "InvalidSignatureException", "X-Amz-Content-SHA256 does not match the request body"
        )
    request = AWSRequest(
        method=method,
        url=f"http://{headers['host']}{target}",
        data=body,
        headers={name: headers[name] for name in signed},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(match["key"], secret), match["service"], match["region"])
    try:
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
    except ValueError:  # a Host or target urlsplit() cannot read
        raise SignatureRejected(
            "IncompleteSignatureException", "The request cannot be canonicalised for SigV4"
        ) from None
    if not hmac.compare_digest(expected, match["signature"]):
        raise SignatureRejected(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )
    return match["key"]
