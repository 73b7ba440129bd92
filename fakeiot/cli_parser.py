"""The command line of ``python -m fakeiot``: its parser (commands, server options, help).

Every option can also be set as ``FAKEIOT_<OPTION>`` (``FAKEIOT_MQTT_PORT``...);
``python -m fakeiot --help`` shows the server options with the commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from .config import FakeIotConfig
from .console_commands import check_command_api_url

DEFAULTS = FakeIotConfig()


def _command_api_url(text: str) -> str:
    try:
        return check_command_api_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    create.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="ARN",
        help="invoke this Lambda function with each result (fakeiot runs it as the callable its "
        "--lambda maps the ARN to)",
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
        "--lambda",
        dest="lambda_functions",
        action="append",
        default=[v for v in [_env(environ, "lambda", None)] if v],
        metavar="ARN=MODULE:FUNCTION",
        help="run the Lambda function ARN of rules' lambda actions as this Python callable "
        "(e.g. arn:aws:lambda:us-east-1:000000000000:function:ocpp-processor="
        "gateway.processor.lambda_handler:handler); repeatable, or comma-separated in "
        "FAKEIOT_LAMBDA",
    )
    p.add_argument(
        "--lambda-concurrency",
        type=int,
        default=_env(environ, "lambda-concurrency", DEFAULTS.lambda_concurrency),
        help="Lambda invocations running at once (worker threads, one container each)",
    )
    p.add_argument(
        "--lambda-queue",
        type=int,
        default=_env(environ, "lambda-queue", DEFAULTS.lambda_queue),
        help="Lambda invocations waiting for a worker; more are throttled (dropped, logged)",
    )
    p.add_argument(
        "--lambda-timeout",
        type=float,
        default=_env(environ, "lambda-timeout", DEFAULTS.lambda_timeout),
        help="seconds a Lambda invocation may take (its context's remaining time)",
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
        "--no-console",
        action="store_true",
        default=_flag(_env(environ, "no-console", None)),
        help="do not serve the web console (/console on the API port; see docs/fakeiot.md#console)",
    )
    p.add_argument(
        "--command-api-url",
        type=_command_api_url,
        default=_env(environ, "command-api-url", None),
        metavar="URL",
        help="the message processor's command API (e.g. http://127.0.0.1:8091): the console's "
        "Commands page sends through it (see docs/commands.md)",
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
