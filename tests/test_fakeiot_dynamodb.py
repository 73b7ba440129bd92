"""fakeiot's DynamoDB subset, through boto3's own dynamodb client over a real socket."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fakeiot import FakeIot, FakeIotConfig
from gateway.processor.idtokens import make_dynamodb_client

TABLE = "ocppIdTokens"


@pytest.fixture
def iot(tmp_path: Path) -> Iterator[FakeIot]:
    iot = FakeIot(FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path / "fakeiot"))
    iot.start()
    try:
        yield iot
    finally:
        iot.stop()


@pytest.fixture
def ddb(iot: FakeIot) -> Iterator[Any]:
    client = make_dynamodb_client("us-east-1", iot.api_url)
    yield client
    client.close()


def _create(ddb: Any, name: str = TABLE) -> dict[str, Any]:
    return dict(
        ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "idToken", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "idToken", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )["TableDescription"]
    )


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_table_lifecycle_and_items(ddb: Any) -> None:
    created = _create(ddb)
    assert created["TableStatus"] == "ACTIVE"
    assert created["KeySchema"] == [{"AttributeName": "idToken", "KeyType": "HASH"}]
    assert created["TableArn"].endswith(f":table/{TABLE}")
    ddb.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 1})
    assert ddb.list_tables()["TableNames"] == [TABLE]

    item = {
        "idToken": {"S": "TAG1"},
        "status": {"S": "Accepted"},
        "expiryDate": {"S": "2030-01-01T00:00:00+00:00"},
        "n": {"N": "42"},
        "flags": {"SS": ["a", "b"]},
        "nested": {"M": {"ok": {"BOOL": True}}},
    }
    assert "Attributes" not in ddb.put_item(TableName=TABLE, Item=item)
    got = ddb.get_item(TableName=TABLE, Key={"idToken": {"S": "TAG1"}})["Item"]
    assert got["status"] == {"S": "Accepted"} and got["n"] == {"N": "42"}
    assert got["flags"] == {"SS": ["a", "b"]} and got["nested"] == {"M": {"ok": {"BOOL": True}}}
    assert "Item" not in ddb.get_item(TableName=TABLE, Key={"idToken": {"S": "nope"}})

    replaced = ddb.put_item(
        TableName=TABLE,
        Item={"idToken": {"S": "TAG1"}, "status": {"S": "Blocked"}},
        ReturnValues="ALL_OLD",
    )
    assert replaced["Attributes"]["status"] == {"S": "Accepted"}
    assert ddb.describe_table(TableName=TABLE)["Table"]["ItemCount"] == 1

    deleted = ddb.delete_item(
        TableName=TABLE, Key={"idToken": {"S": "TAG1"}}, ReturnValues="ALL_OLD"
    )
    assert deleted["Attributes"] == {"idToken": {"S": "TAG1"}, "status": {"S": "Blocked"}}
    assert "Attributes" not in ddb.delete_item(
        TableName=TABLE, Key={"idToken": {"S": "TAG1"}}, ReturnValues="ALL_OLD"
    )
    assert "Item" not in ddb.get_item(TableName=TABLE, Key={"idToken": {"S": "TAG1"}})


def test_scan_pages(ddb: Any) -> None:
    _create(ddb)
    tokens = [f"T{i:02d}" for i in range(7)]
    for token in reversed(tokens):
        ddb.put_item(TableName=TABLE, Item={"idToken": {"S": token}, "status": {"S": "Accepted"}})
    whole = ddb.scan(TableName=TABLE)
    assert [i["idToken"]["S"] for i in whole["Items"]] == tokens
    assert whole["Count"] == 7 and "LastEvaluatedKey" not in whole

    seen: list[str] = []
    start: dict[str, Any] | None = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"TableName": TABLE, "Limit": 3}
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = ddb.scan(**kwargs)
        pages += 1
        seen += [i["idToken"]["S"] for i in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert seen == tokens and pages == 3
    # boto3's paginator speaks the same protocol
    paginated = ddb.get_paginator("scan").paginate(
        TableName=TABLE, PaginationConfig={"PageSize": 2}
    )
    assert [i["idToken"]["S"] for p in paginated for i in p["Items"]] == tokens


def test_errors_in_dynamodb_shape(ddb: Any) -> None:
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.get_item(TableName="missing", Key={"idToken": {"S": "x"}})
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.describe_table(TableName="missing")
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.put_item(TableName="missing", Item={"idToken": {"S": "x"}})
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.delete_item(TableName="missing", Key={"idToken": {"S": "x"}})
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.scan(TableName="missing")
    _create(ddb)
    with pytest.raises(ddb.exceptions.ResourceInUseException):
        _create(ddb)

    bad_calls: list[dict[str, Any]] = [
        {"Key": {"other": {"S": "x"}}},  # not the key attribute
        {"Key": {"idToken": {"N": "1"}}},  # wrong key type
        {"Key": {"idToken": {"S": ""}}},  # empty key
        {"Key": {"idToken": {"S": "x"}}, "ProjectionExpression": "status"},  # unsupported
    ]
    for call in bad_calls:
        with pytest.raises(ClientError) as error:
            ddb.get_item(TableName=TABLE, **call)
        assert _code(error) == "ValidationException", call
    with pytest.raises(ClientError) as error:
        ddb.put_item(TableName=TABLE, Item={"status": {"S": "Accepted"}})
    assert _code(error) == "ValidationException"
    assert "idToken" in error.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as error:
        ddb.put_item(TableName=TABLE, Item={"idToken": {"S": "x"}}, ReturnValues="ALL_NEW")
    assert _code(error) == "ValidationException"
    assert "Item" not in ddb.get_item(TableName=TABLE, Key={"idToken": {"S": "x"}})  # not written
    with pytest.raises(ClientError) as error:
        ddb.create_table(
            TableName="sorted",
            KeySchema=[
                {"AttributeName": "a", "KeyType": "HASH"},
                {"AttributeName": "b", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "a", "AttributeType": "S"},
                {"AttributeName": "b", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    assert _code(error) == "ValidationException"
    assert "partition key only" in error.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as error:
        ddb.scan(
            TableName=TABLE, FilterExpression="a = :a", ExpressionAttributeValues={":a": {"S": "1"}}
        )
    assert _code(error) == "ValidationException"
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.describe_table(TableName="sorted")  # refused, so not created


def _raw(iot: FakeIot, target: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/x-amz-json-1.0"}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = urllib.request.Request(iot.api_url + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_unknown_operation_and_bad_body(iot: FakeIot) -> None:
    status, doc = _raw(iot, "DynamoDB_20120810.BatchWriteItem", b"{}")
    assert status == 400 and doc["__type"].endswith("#UnknownOperationException")
    assert "BatchWriteItem" in doc["message"] and "GetItem" in doc["message"]
    status, doc = _raw(iot, None, b"{}")
    assert status == 400 and doc["__type"].endswith("#UnknownOperationException")
    status, doc = _raw(iot, "DynamoDB_20120810.GetItem", b"{not json")
    assert status == 400 and doc["__type"].endswith("#SerializationException")
    status, doc = _raw(iot, "DynamoDB_20120810.ListTables", b"{}")
    assert (status, doc) == (200, {"TableNames": []})


def test_rules_engine_tables_are_scannable(iot: FakeIot, ddb: Any) -> None:
    assert iot.store is not None
    # What the rules engine's dynamoDBv2 action writes (fakeiot/rules/engine.py: store_items).
    iot.store.put_item(
        "chargePointHeartbeat", "CP1", {"cpId": "CP1", "ts": 1700000000000, "ok": True}
    )
    page = ddb.scan(TableName="chargePointHeartbeat")
    assert page["Items"] == [
        {"cpId": {"S": "CP1"}, "ts": {"N": "1700000000000"}, "ok": {"BOOL": True}}
    ]
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.scan(TableName="noRuleWroteHere")


def test_signed_requests_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With access keys, DynamoDB calls need boto3's SigV4 signature like every other call."""
    iot = FakeIot(
        FakeIotConfig(
            mqtt_port=0,
            api_port=0,
            data_dir=tmp_path / "fakeiot",
            api_access_key_id="AKIDFAKEIOT0000001",
            api_secret_access_key="s3cret-for-tests",
        )
    )
    iot.start()
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKEIOT0000001")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        client = make_dynamodb_client("us-east-1", iot.api_url)
        try:
            with pytest.raises(ClientError) as error:
                client.list_tables()
            assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        finally:
            client.close()
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret-for-tests")
        client = make_dynamodb_client("us-east-1", iot.api_url)
        try:
            assert client.list_tables()["TableNames"] == []
        finally:
            client.close()
    finally:
        iot.stop()
