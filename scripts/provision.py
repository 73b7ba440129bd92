#!/usr/bin/env python3
"""Create (``up``) or remove (``down``) what the gateway needs in AWS IoT Core.

    python scripts/provision.py up   --out ./gateway-identity --cp CP1 --cp CP2 [--cp-file ids.txt]
    python scripts/provision.py down --out ./gateway-identity --cp CP1 --cp CP2 [--cp-file ids.txt]

``up`` creates, and skips what already exists (run it as often as you like):

* the IoT policy ``--policy-name`` (default ``ocpp-gateway``): connect with
  any client id; publish only to ``${iot:ClientId}/in`` and the Thing
  shadows' ``update`` topics; subscribe to and receive only
  ``${iot:ClientId}/out``.  A CP's MQTT connection can never reach another
  CP's topics.
* the gateway's X.509 certificate (CreateKeysAndCertificate, ACTIVE), written
  to ``OUT/certificate.pem``, ``OUT/private.key`` (mode 0600) and
  ``OUT/certificate-id``, with the policy attached;
* one Thing per charge point id (Thing names derived as the gateway does);
  with ``--passwords FILE``, each Thing this run creates gets a random
  password (OCPP security profile 1): its salted PBKDF2 hash goes into the
  Thing attributes ``ocppPasswordHash`` / ``ocppSecurityProfile``, the password
  itself only into FILE (``cp_id,password`` lines, mode 0600) for the CPs'
  configuration;
* with ``--heartbeat-rule TABLE --rule-role-arn ARN``: the sample's heartbeat
  rule, writing ``chargePointId`` and ``lastTimestamp`` to a DynamoDB table;
* ``OUT/gateway.env``: the ``GATEWAY_*`` variables that point the gateway at
  the account's data endpoint with that certificate.

``down`` removes all of it (the rule, the policy attachment, the certificate
after deactivating it, the policy, the Things) and the key files; what is
already gone is skipped.

Credentials and region come from boto3's standard chain (``AWS_PROFILE``,
``AWS_REGION``...); ``--endpoint-url`` points it at fakeiot or moto instead.
The script prints each step; it exits 1 with AWS's error code and message
when a call fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.credentials import (  # noqa: E402
    PASSWORD_HASH_ATTRIBUTE,
    SECURITY_PROFILE_ATTRIBUTE,
    generate_password,
    hash_password,
)
from gateway.errors import InvalidIdentity  # noqa: E402
from gateway.identity import validate_identity  # noqa: E402
from iotshared.iot_policy import HEARTBEAT_SQL, gateway_policy  # noqa: E402


def _ids(args: argparse.Namespace) -> list[tuple[str, str]]:
    ids = list(args.cp)
    if args.cp_file:
        ids += [
            line.strip()
            for line in Path(args.cp_file).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    pairs = []
    for cp_id in ids:
        try:
            pairs.append((cp_id, validate_identity(cp_id).thing_name))
        except InvalidIdentity as exc:
            raise SystemExit(f"error: charge point id {cp_id!r}: {exc.reason}") from None
    return list(dict.fromkeys(pairs))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def up(iot: Any, args: argparse.Namespace, things: list[tuple[str, str]]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        iot.create_policy(policyName=args.policy_name, policyDocument=json.dumps(gateway_policy()))
        print(f"policy {args.policy_name}: created")
    except ClientError as exc:
        if _code(exc) != "ResourceAlreadyExistsException":
            raise
        print(f"policy {args.policy_name}: exists")
    try:
        iot.update_event_configurations(eventConfigurations={"THING": {"Enabled": True}})
        print("registry events (THING): enabled")
    except ClientError as exc:  # fakeiot always publishes them; some mocks lack the call
        print(
            f"registry events (THING): not enabled here ({_code(exc) or exc}); revocation falls back to re-checks"
        )

    id_file, cert_file, key_file = (
        out / "certificate-id",
        out / "certificate.pem",
        out / "private.key",
    )
    cert_arn = None
    if id_file.is_file() and cert_file.is_file() and key_file.is_file():
        try:
            description = iot.describe_certificate(certificateId=id_file.read_text().strip())[
                "certificateDescription"
            ]
            cert_arn = description["certificateArn"]
            print(
                f"certificate {description['certificateId'][:12]}...: exists ({description['status']})"
            )
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
    if cert_arn is None:
        created = iot.create_keys_and_certificate(setAsActive=True)
        cert_arn = created["certificateArn"]
        cert_file.write_text(created["certificatePem"])
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(created["keyPair"]["PrivateKey"])
        id_file.write_text(created["certificateId"] + "\n")
        print(
            f"certificate {created['certificateId'][:12]}...: created, written to {cert_file} and {key_file}"
        )
    iot.attach_policy(policyName=args.policy_name, target=cert_arn)
    print(f"policy {args.policy_name}: attached to the certificate")

    passwords: list[str] = []
    for cp_id, name in things:
        try:
            iot.describe_thing(thingName=name)
            continue  # exists: leave it (and its password) alone
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
        attributes: dict[str, str] = {}
        if args.passwords:
            password = generate_password()
            attributes = {
                PASSWORD_HASH_ATTRIBUTE: hash_password(password),
                SECURITY_PROFILE_ATTRIBUTE: "1",
            }
            passwords.append(f"{cp_id},{password}")
        iot.create_thing(thingName=name, attributePayload={"attributes": attributes})
    print(f"things: {len(things)} registered")
    if passwords:
        path = Path(args.passwords)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write("\n".join(passwords) + "\n")
        print(
            f"passwords: {len(passwords)} new, appended to {path} (keep it secret; only hashes are in AWS)"
        )

    if args.heartbeat_rule:
        payload = {
            "sql": HEARTBEAT_SQL,
            "awsIotSqlVersion": "2016-03-23",
            "ruleDisabled": False,
            "actions": [
                {
                    "dynamoDBv2": {
                        "roleArn": args.rule_role_arn,
                        "putItem": {"tableName": args.heartbeat_rule},
                    }
                }
            ],
        }
        try:
            iot.create_topic_rule(ruleName=args.rule_name, topicRulePayload=payload)
            print(f"rule {args.rule_name}: created (into table {args.heartbeat_rule})")
        except ClientError as exc:
            if _code(exc) != "ResourceAlreadyExistsException":
                raise
            print(f"rule {args.rule_name}: exists")

    endpoint = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    env = [
        f"GATEWAY_IOT_ENDPOINT={endpoint}",
        f"GATEWAY_CERT_FILE={cert_file.resolve()}",
        f"GATEWAY_KEY_FILE={key_file.resolve()}",
        f"GATEWAY_REGION={iot.meta.region_name}",
        "# GATEWAY_CA_FILE=/path/to/AmazonRootCA1.pem   (https://www.amazontrust.com/repository/AmazonRootCA1.pem)",
    ]
    (out / "gateway.env").write_text("\n".join(env) + "\n")
    print(f"endpoint {endpoint}; settings in {out / 'gateway.env'}")


def down(iot: Any, args: argparse.Namespace, things: list[tuple[str, str]]) -> None:
    out = Path(args.out)
    if args.heartbeat_rule:
        try:
            iot.delete_topic_rule(ruleName=args.rule_name)
            print(f"rule {args.rule_name}: deleted")
        except ClientError as exc:
            if _code(exc) not in ("ResourceNotFoundException", "UnauthorizedException"):
                raise
    id_file = out / "certificate-id"
    if id_file.is_file():
        cert_id = id_file.read_text().strip()
        try:
            arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"][
                "certificateArn"
            ]
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            arn = None
        if arn is not None:
            try:
                iot.detach_policy(policyName=args.policy_name, target=arn)
            except ClientError as exc:
                if _code(exc) != "ResourceNotFoundException":
                    raise
            iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
            iot.delete_certificate(certificateId=cert_id)
            print(f"certificate {cert_id[:12]}...: deactivated and deleted")
        for name in ("certificate-id", "certificate.pem", "private.key", "gateway.env"):
            (out / name).unlink(missing_ok=True)
    try:
        iot.delete_policy(policyName=args.policy_name)
        print(f"policy {args.policy_name}: deleted")
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise
        print(f"policy {args.policy_name}: already gone")
    for _, name in things:
        try:
            iot.delete_thing(thingName=name)  # AWS succeeds for a missing Thing; moto does not
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
    print(f"things: {len(things)} deleted")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/provision.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("action", choices=["up", "down"])
    p.add_argument(
        "--out",
        default="gateway-identity",
        help="directory for the certificate, key and gateway.env",
    )
    p.add_argument(
        "--cp",
        action="append",
        default=[],
        metavar="CP_ID",
        help="charge point id to register (repeatable)",
    )
    p.add_argument("--cp-file", help="file with one charge point id per line")
    p.add_argument(
        "--passwords",
        metavar="FILE",
        help="give each new Thing a random password (security profile 1); "
        "append cp_id,password lines to FILE (mode 0600)",
    )
    p.add_argument("--policy-name", default="ocpp-gateway")
    p.add_argument(
        "--heartbeat-rule",
        metavar="TABLE",
        help="also create the heartbeat rule writing into this DynamoDB table",
    )
    p.add_argument("--rule-name", default="chargePointHeartbeat")
    p.add_argument(
        "--rule-role-arn", help="IAM role the rule uses to write the table (with --heartbeat-rule)"
    )
    p.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    p.add_argument(
        "--endpoint-url", help="IoT API endpoint (fakeiot: http://127.0.0.1:8090; moto); unset: AWS"
    )
    args = p.parse_args(argv)
    if args.heartbeat_rule and not args.rule_role_arn and args.action == "up":
        p.error(
            "--heartbeat-rule needs --rule-role-arn (the role AWS IoT assumes to write the table)"
        )
    things = _ids(args)
    session = boto3.session.Session(region_name=args.region)
    extra: dict[str, Any] = {}
    if args.endpoint_url and session.get_credentials() is None:
        extra = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    iot = session.client("iot", endpoint_url=args.endpoint_url, **extra)
    try:
        (up if args.action == "up" else down)(iot, args, things)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(
            f"error: {exc.operation_name}: {error.get('Code')}: {error.get('Message')}",
            file=sys.stderr,
        )
        return 1
    except BotoCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
