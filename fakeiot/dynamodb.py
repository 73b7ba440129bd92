"""A DynamoDB subset on fakeiot's HTTP API: enough for the processor's id-token table.

DynamoDB's JSON protocol: ``POST /`` with ``X-Amz-Target:
DynamoDB_20120810.<Operation>`` and a JSON body, so ``boto3.client("dynamodb",
endpoint_url=<fakeiot API URL>)`` works unchanged.  Operations (shapes from
botocore's ``dynamodb`` service model): CreateTable (partition key only),
DescribeTable, ListTables, PutItem, GetItem, DeleteItem and Scan (``Limit`` /
``ExclusiveStartKey`` pagination).  Conditions, filters, projections, sort
keys and indexes are refused with a ValidationException naming them.

Tables and items live in fakeiot's SQLite store (:mod:`fakeiot.store`).  The
tables the rules engine's ``dynamoDBv2`` action fills (:mod:`fakeiot.rules`)
can be read with Scan too: their items are plain JSON, converted to
AttributeValues on the way out (strings ``S``, numbers ``N``, booleans
``BOOL``, null ``NULL``, lists ``L``, objects ``M``).

Errors come in DynamoDB's shape, ``{"__type":
"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", "message": ...}``
with status 400, so boto3 raises the ClientError it raises against AWS.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from iotshared.errors import JsonTooDeep
from iotshared.strict_json import strict_loads

from .store import Store

TARGET_PREFIX = "DynamoDB_20120810."
_DYNAMODB = "com.amazonaws.dynamodb.v20120810#"
_CORAL = "com.amazon.coral.validate#"
TABLE_NAME = re.compile(r"\A[a-zA-Z0-9_.-]{3,255}\Z")
_TYPES = ("S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS")
_KEY_TYPES = ("S", "N", "B")
MAX_SCAN_LIMIT = 1000  # items per Scan page when no (or a larger) Limit is given
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's item size limit (names and values, UTF-8)
MAX_PAGE_BYTES = 1024 * 1024  # DynamoDB stops a Scan page after 1 MB of items
MAX_KEY_BYTES = 2048  # DynamoDB's partition key value limit
MAX_TABLES = 2500  # DynamoDB's default quota of tables per account and region
MAX_NESTING = 32  # DynamoDB: nested attributes, at most 32 levels
# A request's JSON: the body, Item (or Key ...), then two JSON levels per nested attribute level.
_MAX_JSON_DEPTH = 2 * MAX_NESTING + 4
_SCAN_BATCH = 16  # rows read from the store at a time while a Scan page fills


class DynamoDbError(Exception):
    """A request DynamoDB would refuse: ``error_type`` is the ``__type`` it answers."""

    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type, self.message, self.status = error_type, message, status


def _not_found(table: str) -> DynamoDbError:
    return DynamoDbError(
        _DYNAMODB + "ResourceNotFoundException",
        f"Requested resource not found: Table: {table} not found",
    )


def _invalid(message: str) -> DynamoDbError:
    return DynamoDbError(_CORAL + "ValidationException", message)


@dataclass(frozen=True)
class Response:
    """What :class:`fakeiot.api.IotApi` answers for a DynamoDB call: status and JSON body."""

    status: int
    doc: dict[str, Any]


class DynamoDbApi:
    """The operations, each a method taking the request's JSON body (no I/O but the store)."""

    def __init__(self, store: Store, region: str, account_id: str) -> None:
        self.store = store
        self.region = region
        self.account_id = account_id
        self.operations: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "CreateTable": self.create_table,
            "DescribeTable": self.describe_table,
            "ListTables": self.list_tables,
            "PutItem": self.put_item,
            "GetItem": self.get_item,
            "DeleteItem": self.delete_item,
            "Scan": self.scan,
        }

    def handle(self, target: str | None, body: bytes) -> Response:
        """One ``POST /`` call: ``target`` is the ``X-Amz-Target`` header."""
        try:
            operation = self._operation(target)
            return Response(200, operation(_json(body)))
        except DynamoDbError as exc:
            return Response(exc.status, {"__type": exc.error_type, "message": exc.message})

    def _operation(self, target: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
        name = (target or "").removeprefix(TARGET_PREFIX)
        if not target or not target.startswith(TARGET_PREFIX) or name not in self.operations:
            raise DynamoDbError(
                "com.amazon.coral.service#UnknownOperationException",
                f"fakeiot does not support the DynamoDB operation {target!r} "
                f"(supported: {', '.join(self.operations)})",
            )
        return self.operations[name]

    # -- tables ---------------------------------------------------------------------

    def create_table(self, body: dict[str, Any]) -> dict[str, Any]:
        _refuse(body, "LocalSecondaryIndexes", "GlobalSecondaryIndexes", "StreamSpecification")
        name = _table_name(body)
        schema = body.get("KeySchema")
        if (
            not isinstance(schema, list)
            or len(schema) != 1
            or not isinstance(schema[0], dict)
            or schema[0].get("KeyType") != "HASH"
            or not isinstance(schema[0].get("AttributeName"), str)
        ):
            raise _invalid(
                "fakeiot supports tables with a partition key only: "
                'KeySchema=[{"AttributeName": NAME, "KeyType": "HASH"}]'
            )
        key_name = schema[0]["AttributeName"]
        definitions = body.get("AttributeDefinitions")
        key_type = None
        if isinstance(definitions, list):
            for definition in definitions:
                if isinstance(definition, dict) and definition.get("AttributeName") == key_name:
                    key_type = definition.get("AttributeType")
        if key_type not in _KEY_TYPES:
            raise _invalid(
                f"AttributeDefinitions must define the key attribute {key_name!r} "
                "with AttributeType S, N or B"
            )
        if len(self.store.dynamodb_table_names()) >= MAX_TABLES:
            raise DynamoDbError(
                _DYNAMODB + "LimitExceededException",
                f"fakeiot holds at most {MAX_TABLES} tables (DynamoDB's default quota)",
            )
        definition = {
            "TableName": name,
            "KeySchema": [{"AttributeName": key_name, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": key_name, "AttributeType": key_type}],
            "BillingMode": body.get("BillingMode") or "PROVISIONED",
            "CreationDateTime": datetime.datetime.now(datetime.UTC).timestamp(),
            "TableId": str(uuid.uuid4()),
        }
        if not self.store.create_dynamodb_table(name, definition):
            raise DynamoDbError(
                _DYNAMODB + "ResourceInUseException", f"Table already exists: {name}"
            )
        return {"TableDescription": self._description(definition, 0)}

    def describe_table(self, body: dict[str, Any]) -> dict[str, Any]:
        name = _table_name(body)
        found = self.store.dynamodb_table(name)
        if found is None:
            raise _not_found(name)
        return {"Table": self._description(*found)}

    def list_tables(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"TableNames": self.store.dynamodb_table_names()}

    def _description(self, definition: Mapping[str, Any], count: int) -> dict[str, Any]:
        name = definition["TableName"]
        return {
            "TableName": name,
            "TableStatus": "ACTIVE",
            "KeySchema": definition["KeySchema"],
            "AttributeDefinitions": definition["AttributeDefinitions"],
            "CreationDateTime": definition["CreationDateTime"],
            "ItemCount": count,
            "TableSizeBytes": 0,
            "TableId": definition["TableId"],
            "TableArn": f"arn:aws:dynamodb:{self.region}:{self.account_id}:table/{name}",
            "BillingModeSummary": {"BillingMode": definition["BillingMode"]},
        }

    def _key_schema(self, name: str) -> tuple[str, str]:
        """The table's (key attribute, its type); ResourceNotFoundException if there is no table."""
        found = self.store.dynamodb_table(name)
        if found is None:
            raise _not_found(name)
        attribute = found[0]["AttributeDefinitions"][0]
        return attribute["AttributeName"], attribute["AttributeType"]

    # -- items ----------------------------------------------------------------------

    def put_item(self, body: dict[str, Any]) -> dict[str, Any]:
        _refuse(body, "ConditionExpression", "Expected", "ExpressionAttributeValues")
        name = _table_name(body)
        key_name, key_type = self._key_schema(name)
        item = body.get("Item")
        if not isinstance(item, dict):
            raise _invalid("PutItem needs Item, a map of attribute names to AttributeValues")
        for attribute, value in item.items():
            _check_value(value, attribute)
        if item_size(item) > MAX_ITEM_BYTES:
            raise _invalid("Item size has exceeded the maximum allowed size")
        key = _item_key(item, key_name, key_type, "Item")
        want_old = _wants_old(body)
        old = self.store.put_dynamodb_item(name, key, item)
        return {"Attributes": old} if want_old and old is not None else {}

    def get_item(self, body: dict[str, Any]) -> dict[str, Any]:
        _refuse(body, "ProjectionExpression", "AttributesToGet")
        name = _table_name(body)
        key = self._request_key(name, body)
        item = self.store.get_dynamodb_item(name, key)
        return {"Item": item} if item is not None else {}

    def delete_item(self, body: dict[str, Any]) -> dict[str, Any]:
        _refuse(body, "ConditionExpression", "Expected", "ExpressionAttributeValues")
        name = _table_name(body)
        key = self._request_key(name, body)
        want_old = _wants_old(body)
        old = self.store.delete_dynamodb_item(name, key)
        return {"Attributes": old} if want_old and old is not None else {}

    def _request_key(self, name: str, body: dict[str, Any]) -> str:
        key_name, key_type = self._key_schema(name)
        key = body.get("Key")
        if not isinstance(key, dict) or set(key) != {key_name}:
            raise _invalid(
                f"The provided key element does not match the schema: Key must be {{{key_name!r}: ...}}"
            )
        return _item_key(key, key_name, key_type, "Key")

    def scan(self, body: dict[str, Any]) -> dict[str, Any]:
        _refuse(
            body, "FilterExpression", "ScanFilter", "ProjectionExpression", "IndexName", "Segment"
        )
        name = _table_name(body)
        limit = body.get("Limit", MAX_SCAN_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _invalid("Limit must be a positive integer")
        limit = min(limit, MAX_SCAN_LIMIT)
        if self.store.dynamodb_table(name) is None:
            return self._scan_rule_table(name, body)
        key_name, key_type = self._key_schema(name)
        start = body.get("ExclusiveStartKey")
        after = None
        if start is not None:
            if not isinstance(start, dict) or set(start) != {key_name}:
                raise _invalid(f"ExclusiveStartKey must be {{{key_name!r}: ...}}")
            after = _item_key(start, key_name, key_type, "ExclusiveStartKey")
        items, more = self._scan_page(name, after, limit)
        answer: dict[str, Any] = {"Items": items, "Count": len(items), "ScannedCount": len(items)}
        if more:
            answer["LastEvaluatedKey"] = {key_name: items[-1][key_name]}
        return answer

    def _scan_page(
        self, name: str, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` items after ``after``, stopping (as DynamoDB) once they hold 1 MB; read a
        few rows at a time, so a page never loads more than it answers.  Also: whether more follow."""
        items: list[dict[str, Any]] = []
        size = 0
        while True:
            rows = self.store.scan_dynamodb_items(name, after=after, limit=_SCAN_BATCH)
            for key, item in rows:
                if len(items) >= limit or size >= MAX_PAGE_BYTES:
                    return items, True
                items.append(item)
                size += item_size(item)
                after = key
            if len(rows) < _SCAN_BATCH:
                return items, False

    def _scan_rule_table(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A table only the rules engine wrote: its items, whole (no pagination)."""
        if body.get("ExclusiveStartKey") is not None:
            raise _invalid(f"{name} is a rules-engine table: it is scanned in one page")
        rows = self.store.scan_items(name)
        if not rows:
            raise _not_found(name)
        items = [{k: attribute_value(v) for k, v in row.items()} for row in rows]
        return {"Items": items, "Count": len(items), "ScannedCount": len(items)}


def attribute_value(value: Any) -> dict[str, Any]:
    """A plain JSON value as a DynamoDB AttributeValue."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, int | float):
        return {"N": json.dumps(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list):
        return {"L": [attribute_value(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {str(k): attribute_value(v) for k, v in value.items()}}
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = strict_loads((body or b"{}").decode("utf-8"), max_depth=_MAX_JSON_DEPTH)
    except JsonTooDeep:
        raise _invalid(
            f"Nesting Levels have exceeded supported limits: at most {MAX_NESTING} levels"
        ) from None
    except ValueError:  # JsonRejected, UnicodeDecodeError
        raise DynamoDbError(
            "com.amazon.coral.service#SerializationException", "Request body is not valid JSON"
        ) from None
    if not isinstance(doc, dict):
        raise DynamoDbError(
            "com.amazon.coral.service#SerializationException", "Request body must be a JSON object"
        )
    return doc


def _table_name(body: Mapping[str, Any]) -> str:
    name = body.get("TableName")
    if not isinstance(name, str) or not TABLE_NAME.match(name):
        raise _invalid(
            f"Invalid table name {name!r}: 3-255 characters of [a-zA-Z0-9_.-] (TableName is required)"
        )
    return name


def _refuse(body: Mapping[str, Any], *parameters: str) -> None:
    given = [p for p in parameters if body.get(p) is not None]
    if given:
        raise _invalid(f"fakeiot does not support {', '.join(given)} in this operation")


def _check_value(value: Any, where: str, depth: int = 1) -> None:
    """An AttributeValue as DynamoDB checks it: one type, a value of that type's shape, nested ones
    (``M``, ``L``) checked too, at most :data:`MAX_NESTING` levels."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _TYPES:
        raise _invalid(
            f"Invalid AttributeValue for {where[:80]!r}: one of {', '.join(_TYPES)} (e.g. {{'S': 'text'}})"
        )
    if depth > MAX_NESTING:
        raise _invalid(f"Nesting Levels have exceeded supported limits: at most {MAX_NESTING}")
    ((kind, raw),) = value.items()
    if kind == "M" and isinstance(raw, dict):
        for name, nested in raw.items():
            _check_value(nested, f"{where}.{name}", depth + 1)
    elif kind == "L" and isinstance(raw, list):
        for index, nested in enumerate(raw):
            _check_value(nested, f"{where}[{index}]", depth + 1)
    elif kind in ("S", "N", "B"):
        _check_scalar(kind, raw, where)
    elif kind in ("SS", "NS", "BS") and isinstance(raw, list) and raw:
        for element in raw:
            _check_scalar(kind[0], element, where)
        if len(set(map(str, raw))) != len(raw):
            raise _invalid(f"Input collection {where[:80]!r} contains duplicates")
    elif (kind == "BOOL" and isinstance(raw, bool)) or (kind == "NULL" and raw is True):
        pass
    else:
        raise _invalid(f"Invalid AttributeValue for {where[:80]!r}: a {kind} of the wrong shape")


def _check_scalar(kind: str, raw: Any, where: str) -> None:
    if not isinstance(raw, str):
        raise _invalid(f"Invalid AttributeValue for {where[:80]!r}: {kind} takes a string")
    if kind == "N":
        try:
            number = decimal.Decimal(raw)
        except decimal.InvalidOperation:
            number = None
        if number is None or not number.is_finite() or len(raw) > 100:
            raise _invalid(f"The parameter cannot be converted to a numeric value: {raw[:40]!r}")
    elif kind == "B":
        try:
            base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise _invalid(f"Invalid Base64 value for {where[:80]!r}") from None


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB counts it, near enough: attribute names and values in bytes."""
    return sum(_utf8_len(name) + _value_size(value) for name, value in item.items())


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _value_size(value: Any) -> int:
    if not isinstance(value, dict) or not value:
        return 1
    ((kind, raw),) = list(value.items())[:1]
    if kind == "M" and isinstance(raw, dict):
        return 3 + sum(1 + _utf8_len(k) + _value_size(v) for k, v in raw.items())
    if kind == "L" and isinstance(raw, list):
        return 3 + sum(1 + _value_size(v) for v in raw)
    if isinstance(raw, list):
        return sum(_utf8_len(str(v)) for v in raw)
    if isinstance(raw, str):
        return _utf8_len(raw) if kind != "B" else len(raw) * 3 // 4
    return 1


def _item_key(item: Mapping[str, Any], key_name: str, key_type: str, where: str) -> str:
    """The store's key for the item's key attribute (its typed JSON, so types never collide)."""
    value = item.get(key_name)
    if value is None:
        raise _invalid(
            f"One of the required keys was not given a value: {where} needs {key_name!r}"
        )
    _check_value(value, key_name)
    (kind, raw) = next(iter(value.items()))
    if kind != key_type:
        raise _invalid(
            f"The provided key element does not match the schema: {key_name!r} is of type {key_type}"
        )
    if not isinstance(raw, str) or raw == "":
        raise _invalid(
            f"One or more parameter values are not valid: the key attribute {key_name!r} "
            "cannot be empty"
        )
    if _utf8_len(raw) > MAX_KEY_BYTES:
        raise _invalid(
            "One or more parameter values were invalid: Size of hashkey has exceeded the maximum "
            f"size limit of {MAX_KEY_BYTES} bytes"
        )
    return json.dumps({kind: raw})


def _wants_old(body: Mapping[str, Any]) -> bool:
    """Whether ``ReturnValues`` asks for the replaced or deleted item (checked before writing)."""
    returns = body.get("ReturnValues") or "NONE"
    if returns not in ("NONE", "ALL_OLD"):
        raise _invalid(f"fakeiot supports ReturnValues NONE and ALL_OLD, not {returns!r}")
    return bool(returns == "ALL_OLD")
