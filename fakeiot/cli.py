"""``python -m fakeiot``: run the stand-in, or manage its Things and shadows.

    python -m fakeiot [serve] [--host H] [--mqtt-port P] [--api-port P] [--data-dir D]
    python -m fakeiot thing create|describe|delete CP1 [--api-url URL]
    python -m fakeiot thing list [--api-url URL]
    python -m fakeiot shadow get|delete CP1 [--api-url URL]
    python -m fakeiot rule create NAME --sql "SELECT ..." (--table T | --republish TOPIC) [--api-url URL]
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

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from iotshared.attributes import PASSWORD_HASH_ATTRIBUTE, SECURITY_PROFILE_ATTRIBUTE
from iotshared.errors import InvalidIdentity, PasswordRejected
from iotshared.identity import validate_identity
from iotshared.passwords import generate_password, hash_password

from .errors import FakeIotError
from .service import FakeIot, FakeIotConfig

DEFAULTS = FakeIotConfig()
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
    keys: dict[str, str] = {}
    if session.get_credentials() is None:
        keys = {"aws_access_key_id": "fakeiot", "aws_secret_access_key": "fakeiot"}
    iot = session.client("iot", endpoint_url=api_url, config=config, **keys)
    iot_data = session.client("iot-data", endpoint_url=api_url, config=config, **keys)
    return iot, iot_data


def _env(environ: Mapping[str, str], name: str, fallback: Any) -> Any:
    value = environ.get("FAKEIOT_" + name.upper().replace("-", "_"))
    return value if value else fallback


_SECRETS = ("backend_password", "gateway_password", "api_secret_access_key")


class _HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` where there is a default worth showing: not for secrets (a default may come
    from a FAKEIOT_... variable), nor for empty defaults, nor where the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.dest in _SECRETS
            or default in (None, False, [], argparse.SUPPRESS)
            or "default" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    api_url = _env(environ, "api-url", f"http://127.0.0.1:{DEFAULTS.api_port}")
    p = argparse.ArgumentParser(
        prog="python -m fakeiot",
        usage="%(prog)s [serve] [server options]\n"
        "       %(prog)s {thing,shadow,rule,table,certs} ... [--api-url URL]",
        description="Offline stand-in for AWS IoT Core: MQTT broker, Thing registry, device shadows. "
        "Without a command (or with `serve`) it runs the server; the other commands talk to a "
        "running one.  Every option can also be set as FAKEIOT_<OPTION> (FAKEIOT_MQTT_PORT...).",
        formatter_class=_HelpFormatter,
    )
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run fakeiot (the default command; its options are the server options below)",
        formatter_class=_HelpFormatter,
    )
    _serve_options(serve, environ)
    # Shown in the top-level help too: `python -m fakeiot --mqtt-port 0` runs `serve` (see main()).
    _serve_options(p.add_argument_group("server options (python -m fakeiot [serve] ...)"), environ)

    thing = sub.add_parser("thing", help="manage Things in the registry")
    thing_sub = thing.add_subparsers(dest="action", required=True)
    for action, text in (
        ("create", "register a charge point"),
        ("describe", "show a Thing"),
        ("delete", "remove a Thing"),
    ):
        cmd = thing_sub.add_parser(action, help=text)
        cmd.add_argument("cp_id", metavar="CP_ID", help="charge point identity")
        if action == "create":
            cmd.add_argument(
                "--attribute",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="Thing attribute (repeatable)",
            )
            secret = cmd.add_mutually_exclusive_group()
            secret.add_argument(
                "--password",
                help="require HTTP Basic auth with this password (OCPP security profile 1; "
                "16-40 characters); only its salted hash is stored",
            )
            secret.add_argument(
                "--generate-password",
                action="store_true",
                help="like --password with a random password, printed once",
            )
        cmd.add_argument("--api-url", default=api_url, help="fakeiot API (FAKEIOT_API_URL)")
    lister = thing_sub.add_parser("list", help="list Things")
    lister.add_argument("--api-url", default=api_url, help="fakeiot API (FAKEIOT_API_URL)")

    certs = sub.add_parser(
        "certs",
        help="write a throw-away development CA, server and client certificates",
        formatter_class=_HelpFormatter,
    )
    certs.add_argument("--out", required=True, help="directory for the PEM files")
    certs.add_argument(
        "--server-name",
        action="append",
        default=None,
        help="DNS name of the server certificate (repeatable)",
    )
    certs.add_argument(
        "--client",
        action="append",
        default=[],
        help="common name of a client certificate (repeatable)",
    )

    rule = sub.add_parser("rule", help="manage topic rules (AWS IoT SQL subset)")
    rule_sub = rule.add_subparsers(dest="action", required=True)
    create = rule_sub.add_parser("create", help="create a topic rule")
    create.add_argument("name", metavar="NAME", help="rule name ([a-zA-Z0-9_])")
    create.add_argument("--sql", required=True, help="SELECT ... FROM '<topic filter>' [WHERE ...]")
    create.add_argument(
        "--table",
        action="append",
        default=[],
        help="store each result in this table, keyed by its first column",
    )
    create.add_argument(
        "--republish",
        action="append",
        default=[],
        metavar="TOPIC",
        help="publish each result to TOPIC (${...} templates allowed)",
    )
    for action, text in (("get", "show a rule"), ("delete", "delete a rule")):
        rule_sub.add_parser(action, help=text).add_argument("name", metavar="NAME")
    rule_sub.add_parser("list", help="list rules")
    table = sub.add_parser("table", help="read what rules stored")
    table_sub = table.add_subparsers(dest="action", required=True)
    table_sub.add_parser("scan", help="print every item of a table as JSON lines").add_argument(
        "table", metavar="TABLE"
    )
    for parser in (create, table, rule, *rule_sub.choices.values(), *table_sub.choices.values()):
        if not any(a.dest == "api_url" for a in parser._actions):
            parser.add_argument("--api-url", default=api_url, help="fakeiot API (FAKEIOT_API_URL)")

    shadow = sub.add_parser("shadow", help="read or delete device shadows")
    shadow_sub = shadow.add_subparsers(dest="action", required=True)
    for action, text in (
        ("get", "print a charge point's shadow document"),
        ("delete", "delete a shadow"),
    ):
        cmd = shadow_sub.add_parser(action, help=text)
        cmd.add_argument("cp_id", metavar="CP_ID", help="charge point identity")
        cmd.add_argument("--api-url", default=api_url, help="fakeiot API (FAKEIOT_API_URL)")
    return p


def _serve_options(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, environ: Mapping[str, str]
) -> None:
    p.add_argument(
        "--host",
        default=_env(environ, "host", DEFAULTS.host),
        help="address to bind (MQTT and API)",
    )
    p.add_argument(
        "--mqtt-port",
        type=int,
        default=_env(environ, "mqtt-port", DEFAULTS.mqtt_port),
        help="MQTT port",
    )
    p.add_argument(
        "--api-port",
        type=int,
        default=_env(environ, "api-port", DEFAULTS.api_port),
        help="HTTP API port",
    )
    p.add_argument(
        "--data-dir",
        default=_env(environ, "data-dir", str(DEFAULTS.data_dir)),
        help="registry and shadows are kept here",
    )
    p.add_argument(
        "--tls-port",
        type=int,
        default=_env(environ, "tls-port", None),
        help="also serve MQTT over mutual TLS on this port (AWS IoT: 8883); the CA and server certificate "
        "are <data-dir>/certs/ca.pem and server.pem, made on first use",
    )
    p.add_argument(
        "--rules",
        default=_env(environ, "rules", None),
        help='JSON file {"rules": {"<name>": {"sql": ..., "actions": [...]}}} loaded (replacing same-named rules) at start',
    )
    p.add_argument(
        "--backend-password",
        default=_env(environ, "backend-password", None),
        help="password of the MQTT backend role (user fakeiot-backend); default: made once, kept in "
        "<data-dir>/backend-password.  Prefer FAKEIOT_BACKEND_PASSWORD to the flag",
    )
    p.add_argument(
        "--gateway-password",
        default=_env(environ, "gateway-password", None),
        help="password of the gateway's MQTT credential (user fakeiot-gateway), which device clients "
        "(one per charge point) need on the plain listener; default: made once, kept in "
        "<data-dir>/gateway-password.  Prefer FAKEIOT_GATEWAY_PASSWORD to the flag",
    )
    p.add_argument(
        "--allow-anonymous-devices",
        action="store_true",
        default=_flag(_env(environ, "allow-anonymous-devices", None)),
        help="development only: let MQTT clients without credentials connect as devices (any charge "
        "point id, so anyone who reaches the port can take a CP's connection); refused unless "
        "--host is a loopback address",
    )
    p.add_argument(
        "--max-inflight",
        type=int,
        default=_env(environ, "max-inflight", DEFAULTS.max_inflight),
        help="unacknowledged QoS 1 messages per client (AWS IoT: 100); more wait in the client's queue",
    )
    p.add_argument(
        "--max-queued-messages",
        type=int,
        default=_env(environ, "max-queued-messages", DEFAULTS.max_queued_messages),
        help="messages waiting for a client beyond its in-flight window (or while a persistent session "
        "is offline); more are dropped, with a log line",
    )
    p.add_argument(
        "--max-queued-bytes",
        type=int,
        default=_env(environ, "max-queued-bytes", DEFAULTS.max_queued_bytes),
        help="bytes (payloads and topics) those waiting messages may hold",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=_env(environ, "log-level", "INFO"),
        help="DEBUG adds a line per API request",
    )
    p.add_argument(
        "--api-access-key-id",
        default=_env(environ, "api-access-key-id", None),
        help="the HTTP API accepts only requests signed (AWS SigV4, as boto3 signs) with this access "
        "key and --api-secret-access-key; required when --host is not a loopback address",
    )
    p.add_argument(
        "--api-secret-access-key",
        default=_env(environ, "api-secret-access-key", None),
        help="secret of --api-access-key-id.  Prefer FAKEIOT_API_SECRET_ACCESS_KEY to the flag",
    )


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
        if not actions:
            print(
                "error: give --table and/or --republish (what the rule does with each result)",
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
        max_inflight=int(args.max_inflight),
        max_queued_messages=int(args.max_queued_messages),
        max_queued_bytes=int(args.max_queued_bytes),
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
