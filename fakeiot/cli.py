"""``python -m fakeiot``: run the stand-in, or manage its Things and shadows.

    python -m fakeiot [serve] [--host H] [--mqtt-port P] [--api-port P] [--data-dir D]
    python -m fakeiot thing create|describe|delete CP1 [--api-url URL]
    python -m fakeiot thing list [--api-url URL]
    python -m fakeiot shadow get|delete CP1 [--api-url URL]
    python -m fakeiot rule create NAME --sql "SELECT ..." (--table T | --republish TOPIC | --function ARN) [--api-url URL]
    python -m fakeiot rule list|get|delete [NAME] [--api-url URL]
    python -m fakeiot table scan TABLE [--api-url URL]

Every option can be set with ``FAKEIOT_<OPTION>`` (``FAKEIOT_API_URL``...).
The ``thing`` and ``shadow`` commands talk to a running fakeiot (standalone
or embedded in ``python -m gateway``) through boto3, exactly as one would
talk to AWS IoT.  Names are charge point identities; those with characters
outside ``[A-Za-z0-9_-]`` are mapped to Thing names as the gateway does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from iotshared.attributes import PASSWORD_HASH_ATTRIBUTE, SECURITY_PROFILE_ATTRIBUTE
from iotshared.errors import InvalidIdentity, PasswordRejected
from iotshared.identity import validate_identity
from iotshared.passwords import generate_password, hash_password

from .cli_parser import build_parser
from .config import FakeIotConfig
from .errors import FakeIotError
from .rules.lambdas import LambdaError, parse_function_map
from .service import FakeIot

REGION = "us-east-1"  # fakeiot answers in any region; boto3 needs one


def make_clients(api_url: str) -> tuple[Any, Any]:
    """boto3 ``iot`` and ``iot-data`` clients for the fakeiot at ``api_url``.

    Credentials come from boto3's chain (a fakeiot started with access keys checks signatures); when
    it finds none, placeholder keys, which a fakeiot without access keys does not check.
    """
    session = boto3.session.Session(region_name=REGION)
    config = Config(
        retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=10
    )
    # fakeiot checks signatures only when started with --api-access-key-id; any key signs otherwise.
    key = secret = None
    if session.get_credentials() is None:
        key = secret = "fakeiot"
    iot = session.client(
        "iot",
        endpoint_url=api_url,
        config=config,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    iot_data = session.client(
        "iot-data",
        endpoint_url=api_url,
        config=config,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    return iot, iot_data


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["serve", *argv]
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "certs":
        from .certs import make_development_pki

        issued = make_development_pki(
            Path(args.out),
            server_names=tuple(args.server_name or ["localhost"]),
            clients=tuple(args.client),
        )
        for name, files in issued.items():
            print(f"{name}: {files.cert} {files.key}")
        print(
            "development use only: these keys are unprotected and the CA is not trusted anywhere else"
        )
        return 0
    try:
        thing_name = validate_identity(args.cp_id).thing_name if hasattr(args, "cp_id") else None
    except InvalidIdentity as exc:
        parser.error(exc.reason)
    if hasattr(args, "api_url") and urlsplit(args.api_url).scheme not in ("http", "https"):
        parser.error(f"--api-url must be a URL such as http://127.0.0.1:8090, not {args.api_url!r}")
    if args.command == "table":
        return _scan(args)
    iot, iot_data = make_clients(args.api_url)
    try:
        return _manage(args, thing_name, iot, iot_data)
    except EndpointConnectionError:
        print(
            f"error: cannot reach fakeiot at {args.api_url}: is `python -m gateway` or `python -m fakeiot` running? "
            "(set --api-url or FAKEIOT_API_URL)",
            file=sys.stderr,
        )
        return 1
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"error: {error.get('Code', 'Error')}: {error.get('Message', exc)}", file=sys.stderr)
        return 1
    except BotoCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        iot.close()
        iot_data.close()


def _rules(args: argparse.Namespace, iot: Any) -> int:
    if args.action == "create":
        actions: list[dict[str, Any]] = [
            {
                "dynamoDBv2": {
                    "roleArn": "arn:aws:iam::000000000000:role/fakeiot",
                    "putItem": {"tableName": t},
                }
            }
            for t in args.table
        ]
        actions += [
            {
                "republish": {
                    "roleArn": "arn:aws:iam::000000000000:role/fakeiot",
                    "topic": t,
                    "qos": 0,
                }
            }
            for t in args.republish
        ]
        actions += [{"lambda": {"functionArn": arn}} for arn in args.function]
        if not actions:
            print(
                "error: give --table, --republish and/or --function (what the rule does with each "
                "result)",
                file=sys.stderr,
            )
            return 2
        iot.create_topic_rule(
            ruleName=args.name, topicRulePayload={"sql": args.sql, "actions": actions}
        )
        print(f"created rule {args.name}")
    elif args.action == "list":
        for rule in iot.list_topic_rules()["rules"]:
            disabled = "\t(disabled)" if rule.get("ruleDisabled") else ""
            print(f"{rule['ruleName']}\t{rule['topicPattern']}{disabled}")
    elif args.action == "get":
        rule = iot.get_topic_rule(ruleName=args.name)["rule"]
        print(json.dumps(rule, indent=2, default=str))
    else:
        iot.delete_topic_rule(ruleName=args.name)
        print(f"deleted rule {args.name}")
    return 0


def _scan(args: argparse.Namespace) -> int:
    from urllib.error import HTTPError, URLError
    from urllib.parse import quote
    from urllib.request import Request, urlopen

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    url = f"{args.api_url}/fakeiot/tables/{quote(args.table, safe='')}"
    # Signed like boto3's calls (a fakeiot given access keys checks every request).
    signed = AWSRequest(method="GET", url=url)
    credentials = boto3.session.Session().get_credentials()
    if credentials is not None:
        SigV4Auth(credentials.get_frozen_credentials(), "iot", REGION).add_auth(signed)
    try:
        with urlopen(Request(url, headers=dict(signed.headers.items())), timeout=10) as response:
            items = json.loads(response.read())["items"]
    except HTTPError as exc:
        print(
            f"error: {exc.headers.get('x-amzn-ErrorType', exc.code)}: {exc.read().decode(errors='replace')[:200]}",
            file=sys.stderr,
        )
        return 1
    except URLError as exc:
        print(f"error: cannot reach fakeiot at {args.api_url}: {exc.reason}", file=sys.stderr)
        return 1
    for item in items:
        print(json.dumps(item, sort_keys=True))
    return 0


def _manage(args: argparse.Namespace, thing_name: str | None, iot: Any, iot_data: Any) -> int:
    if args.command == "rule":
        return _rules(args, iot)
    if args.command == "thing":
        if args.action == "list":
            for thing in iot.list_things()["things"]:
                print(thing["thingName"])
            return 0
        if args.action == "create":
            attributes = {}
            for item in args.attribute:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    print(f"error: --attribute wants KEY=VALUE, got {item!r}", file=sys.stderr)
                    return 2
                attributes[key] = value
            password = generate_password() if args.generate_password else args.password
            if password is not None:
                try:
                    attributes[PASSWORD_HASH_ATTRIBUTE] = hash_password(password)
                except PasswordRejected as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                attributes.setdefault(SECURITY_PROFILE_ATTRIBUTE, "1")
            result = iot.create_thing(
                thingName=thing_name, attributePayload={"attributes": attributes}
            )
            print(f"created Thing {result['thingName']} ({result['thingArn']})")
            if args.generate_password:
                print(f"password: {password}")
            return 0
        if args.action == "describe":
            doc = iot.describe_thing(thingName=thing_name)
            doc.pop("ResponseMetadata", None)
            print(json.dumps(doc, indent=2))
            return 0
        iot.describe_thing(
            thingName=thing_name
        )  # DeleteThing of a missing Thing succeeds (as on AWS): say so
        iot.delete_thing(thingName=thing_name)
        print(f"deleted Thing {thing_name}")
        return 0
    if args.action == "get":
        response = iot_data.get_thing_shadow(thingName=thing_name)
        print(json.dumps(json.loads(response["payload"].read()), indent=2))
        return 0
    iot_data.delete_thing_shadow(thingName=thing_name)
    print(f"deleted the shadow of {thing_name}")
    return 0


def serve(args: argparse.Namespace) -> int:
    try:
        functions = parse_function_map(args.lambda_functions)
    except LambdaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = FakeIotConfig(
        host=args.host,
        mqtt_port=int(args.mqtt_port),
        api_port=int(args.api_port),
        data_dir=Path(args.data_dir).expanduser(),
        tls_port=None if args.tls_port is None else int(args.tls_port),
        rules_file=Path(args.rules).expanduser() if args.rules else None,
        backend_password=args.backend_password,
        gateway_password=args.gateway_password,
        allow_anonymous_devices=bool(args.allow_anonymous_devices),
        api_access_key_id=args.api_access_key_id,
        api_secret_access_key=args.api_secret_access_key,
        console=not args.no_console,
        command_api_url=args.command_api_url,
        max_inflight=int(args.max_inflight),
        max_queued_messages=int(args.max_queued_messages),
        max_queued_bytes=int(args.max_queued_bytes),
        lambda_functions=tuple(functions.items()),
        lambda_concurrency=int(args.lambda_concurrency),
        lambda_queue=int(args.lambda_queue),
        lambda_timeout=float(args.lambda_timeout),
    )
    iot = FakeIot(config)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        iot.start()
    except FakeIotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tls = (
        f", mqtts://{config.host}:{iot.tls_port} (mutual TLS, CA {iot.ca_file})"
        if iot.tls_port
        else ""
    )
    print(
        f"fakeiot: MQTT mqtt://{config.host}:{iot.mqtt_port}{tls}, API {iot.api_url}, data in {config.data_dir}",
        flush=True,
    )
    print(
        f"fakeiot: backend role: MQTT user name fakeiot-backend, password in {config.backend_password_file}"
        if not config.backend_password
        else "fakeiot: backend role: MQTT user name fakeiot-backend (password given)",
        flush=True,
    )
    print(
        "fakeiot: device clients: MQTT user name fakeiot-gateway, password "
        + ("given" if config.gateway_password else f"in {config.gateway_password_file}")
        + (
            "; clients without credentials are accepted too (--allow-anonymous-devices)"
            if config.allow_anonymous_devices
            else ""
        ),
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        iot.stop()
    return 0
