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

import datetime
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .dynamodb_values import (
    DYNAMODB_ERRORS,
    KEY_TYPES,
    DynamoDbError,
    attribute_value,
    check_value,
    invalid,
    item_key,
    item_size,
    not_found,
    refuse,
    request_json,
    table_name,
    wants_old,
)
from .store import Store

TARGET_PREFIX = "DynamoDB_20120810."
MAX_SCAN_LIMIT = 1000  # items per Scan page when no (or a larger) Limit is given
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's item size limit (names and values, UTF-8)
MAX_PAGE_BYTES = 1024 * 1024  # DynamoDB stops a Scan page after 1 MB of items
MAX_TABLES = 2500  # DynamoDB's default quota of tables per account and region
_SCAN_BATCH = 16  # rows read from the store at a time while a Scan page fills


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
            return Response(200, operation(request_json(body)))
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
        refuse(body, "LocalSecondaryIndexes", "GlobalSecondaryIndexes", "StreamSpecification")
        name = table_name(body)
        schema = body.get("KeySchema")
        if (
            not isinstance(schema, list)
            or len(schema) != 1
            or not isinstance(schema[0], dict)
            or schema[0].get("KeyType") != "HASH"
            or not isinstance(schema[0].get("AttributeName"), str)
        ):
            raise invalid(
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
        if key_type not in KEY_TYPES:
            raise invalid(
                f"AttributeDefinitions must define the key attribute {key_name!r} "
                "with AttributeType S, N or B"
            )
        if len(self.store.dynamodb_table_names()) >= MAX_TABLES:
            raise DynamoDbError(
                DYNAMODB_ERRORS + "LimitExceededException",
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
                DYNAMODB_ERRORS + "ResourceInUseException", f"Table already exists: {name}"
            )
        return {"TableDescription": self._description(definition, 0)}

    def describe_table(self, body: dict[str, Any]) -> dict[str, Any]:
        name = table_name(body)
        found = self.store.dynamodb_table(name)
        if found is None:
            raise not_found(name)
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
            raise not_found(name)
        attribute = found[0]["AttributeDefinitions"][0]
        return attribute["AttributeName"], attribute["AttributeType"]

    # -- items ----------------------------------------------------------------------

    def put_item(self, body: dict[str, Any]) -> dict[str, Any]:
        refuse(body, "ConditionExpression", "Expected", "ExpressionAttributeValues")
        name = table_name(body)
        key_name, key_type = self._key_schema(name)
        item = body.get("Item")
        if not isinstance(item, dict):
            raise invalid("PutItem needs Item, a map of attribute names to AttributeValues")
        for attribute, value in item.items():
            check_value(value, attribute)
        if item_size(item) > MAX_ITEM_BYTES:
            raise invalid("Item size has exceeded the maximum allowed size")
        key = item_key(item, key_name, key_type, "Item")
        want_old = wants_old(body)
        old = self.store.put_dynamodb_item(name, key, item)
        return {"Attributes": old} if want_old and old is not None else {}

    def get_item(self, body: dict[str, Any]) -> dict[str, Any]:
        refuse(body, "ProjectionExpression", "AttributesToGet")
        name = table_name(body)
        key = self._request_key(name, body)
        item = self.store.get_dynamodb_item(name, key)
        return {"Item": item} if item is not None else {}

    def delete_item(self, body: dict[str, Any]) -> dict[str, Any]:
        refuse(body, "ConditionExpression", "Expected", "ExpressionAttributeValues")
        name = table_name(body)
        key = self._request_key(name, body)
        want_old = wants_old(body)
        old = self.store.delete_dynamodb_item(name, key)
        return {"Attributes": old} if want_old and old is not None else {}

    def _request_key(self, name: str, body: dict[str, Any]) -> str:
        key_name, key_type = self._key_schema(name)
        key = body.get("Key")
        if not isinstance(key, dict) or set(key) != {key_name}:
            raise invalid(
                f"The provided key element does not match the schema: Key must be {{{key_name!r}: ...}}"
            )
        return item_key(key, key_name, key_type, "Key")

    def scan(self, body: dict[str, Any]) -> dict[str, Any]:
        refuse(
            body, "FilterExpression", "ScanFilter", "ProjectionExpression", "IndexName", "Segment"
        )
        name = table_name(body)
        limit = body.get("Limit", MAX_SCAN_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise invalid("Limit must be a positive integer")
        limit = min(limit, MAX_SCAN_LIMIT)
        if self.store.dynamodb_table(name) is None:
            return self._scan_rule_table(name, body)
        key_name, key_type = self._key_schema(name)
        start = body.get("ExclusiveStartKey")
        after = None
        if start is not None:
            if not isinstance(start, dict) or set(start) != {key_name}:
                raise invalid(f"ExclusiveStartKey must be {{{key_name!r}: ...}}")
            after = item_key(start, key_name, key_type, "ExclusiveStartKey")
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
            raise invalid(f"{name} is a rules-engine table: it is scanned in one page")
        rows = self.store.scan_items(name)
        if not rows:
            raise not_found(name)
        items = [{k: attribute_value(v) for k, v in row.items()} for row in rows]
        return {"Items": items, "Count": len(items), "ScannedCount": len(items)}
