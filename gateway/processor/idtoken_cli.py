"""``python -m gateway.processor idtoken ...``: manage the id-token table (AWS or fakeiot).

Commands::

    idtoken create-table
    idtoken put TOKEN --status Accepted|Blocked|Expired|Invalid [--expiry ISO8601] [--group G]
    idtoken get TOKEN
    idtoken delete TOKEN
    idtoken list

Where the table is: ``--iot-api-url`` (fakeiot's API URL; unset: AWS DynamoDB in
``--region``) and ``--id-token-table``, read like the processor's own options
(same flags, same ``PROCESSOR_...`` variables, same defaults).  AWS credentials
come from boto3's chain.  Exit status: 0 done, 1 the token or table is not there
or the store failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .. import options
from ..errors import ConfigError
from .authorization import AuthorizationUnavailable
from .config import PROCESSOR_PREFIX, ProcessorConfig
from .idtokens import (
    IdTokenInputError,
    IdTokenRecord,
    IdTokenTable,
    check_token,
    decide,
    make_dynamodb_client,
    parse_expiry,
    parse_status,
)

# The processor's options the table needs: declared once, in ProcessorConfig.
_SHARED = ("iot_api_url", "region", "id_token_table")


def _shared_specs() -> dict[str, options.Spec]:
    return {
        s.name: s for s in options.specs(ProcessorConfig, PROCESSOR_PREFIX) if s.name in _SHARED
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.processor idtoken",
        description=(
            "Manage the id-token table the processor's --authorization id-token-table reads "
            "(DynamoDB on AWS, or fakeiot with --iot-api-url)."
        ),
    )
    for spec in _shared_specs().values():
        shown = spec.shown_default()
        default = f"default: {shown}; " if shown is not None else ""
        parser.add_argument(
            spec.flag,
            dest=spec.name,
            default=None,
            help=f"{spec.option.help} ({default}env {spec.env})".replace("%", "%%"),
        )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("create-table", help="create the table (on-demand billing)")
    put = commands.add_parser("put", help="add or replace a token")
    put.add_argument("token")
    put.add_argument("--status", required=True, help="Accepted, Blocked, Expired or Invalid")
    put.add_argument("--expiry", help="ISO 8601 with a UTC offset, e.g. 2027-01-01T00:00:00Z")
    put.add_argument("--group", help="group id token (1.6 parentIdTag, 2.0.1 groupIdToken)")
    get = commands.add_parser("get", help="show a token and what the processor answers now")
    get.add_argument("token")
    delete = commands.add_parser("delete", help="remove a token")
    delete.add_argument("token")
    commands.add_parser("list", help="every token, one per line")
    return parser


def _setting(args: argparse.Namespace, name: str, environ: Mapping[str, str]) -> Any:
    """Flag, else ``PROCESSOR_<NAME>``, else the processor's default; ConfigError if invalid."""
    spec = _shared_specs()[name]
    value = getattr(args, name)
    where = spec.flag
    if value is None and environ.get(spec.env):
        value, where = environ[spec.env], spec.env
    if value is None:
        return spec.default
    value = spec.convert(value)
    why = spec.complaint(value)
    if why is not None:
        raise ConfigError(f"{where} {why}")
    return value


def _record_doc(record: IdTokenRecord, now: datetime) -> dict[str, Any]:
    doc: dict[str, Any] = {"idToken": record.id_token, "status": record.status}
    if record.expiry is not None:
        doc["expiryDate"] = record.expiry.isoformat()
    if record.group_id is not None:
        doc["groupIdToken"] = record.group_id
    doc["answer"] = decide(record, now).status  # what the processor answers (1.6: Unknown=Invalid)
    return doc


def run(args: argparse.Namespace, table: IdTokenTable) -> int:
    now = datetime.now(UTC)
    if args.command == "create-table":
        if table.create():
            print(f"table {table.name} created")
        else:
            print(f"table {table.name} already exists")
        return 0
    if args.command == "list":
        for entry in table.scan():
            if isinstance(entry, IdTokenInputError):
                print(f"warning: {entry}", file=sys.stderr)
            else:
                print(json.dumps(_record_doc(entry, now)))
        return 0
    token = check_token(args.token)
    if args.command == "put":
        record = IdTokenRecord(
            token,
            parse_status(args.status),
            parse_expiry(args.expiry) if args.expiry is not None else None,
            check_token(args.group) if args.group is not None else None,
        )
        table.put(record)
        print(json.dumps(_record_doc(record, now)))
        return 0
    if args.command == "get":
        found = table.get(token)
        if found is None:
            print(f"error: no id token {token!r} in table {table.name}", file=sys.stderr)
            return 1
        print(json.dumps(_record_doc(found, now)))
        return 0
    if not table.delete(token):  # delete
        print(f"error: no id token {token!r} in table {table.name}", file=sys.stderr)
        return 1
    print(f"deleted {token}")
    return 0


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(list(argv))
    try:
        name = _setting(args, "id_token_table", environ)
        client = make_dynamodb_client(
            _setting(args, "region", environ), _setting(args, "iot_api_url", environ)
        )
    except (ValueError, ConfigError) as exc:  # ValueError: botocore, an invalid endpoint URL
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return run(args, IdTokenTable(client, name))
    except IdTokenInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AuthorizationUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
