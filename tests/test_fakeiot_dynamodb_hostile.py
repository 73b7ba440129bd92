"""Hostile DynamoDB calls against fakeiot's HTTP API (boto3 and raw HTTP over real sockets): every
bad request gets DynamoDB's error shape, and what one caller can make fakeiot store or answer is
bounded as DynamoDB bounds it."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

import fakeiot.dynamodb
from fakeiot import FakeIot, FakeIotConfig
from gateway.processor.idtokens import make_dynamodb_client

TABLE = "hostile"


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
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
    )
    yield client
    client.close()


def _post(iot: FakeIot, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", iot.api_port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _error(caught: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = caught.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


@pytest.mark.parametrize("opener", [b"[", b'{"a":'], ids=["arrays", "objects"])
def test_deeply_nested_json_gets_an_answer_not_a_dropped_connection(
    iot: FakeIot, opener: bytes
) -> None:
    """json.loads raised RecursionError on deep nesting: the request thread died with a traceback
    and the client got no answer at all."""
    deep = opener * 100_000
    status, doc = _post(
        iot, "/", deep, {"X-Amz-Target": "DynamoDB_20120810.PutItem", "Content-Type": "x"}
    )
    assert status == 400 and doc["__type"].endswith("ValidationException"), doc
    assert "Nesting" in doc["message"]
    # The IoT API's JSON bodies (CreateThing, CreateTopicRule ...) likewise.
    status, doc = _post(iot, "/rules/r1", deep, {})
    assert (status, doc["message"]) == (400, "Request body nests deeper than 32 levels")
    status, doc = _post(iot, "/things/CP1", b'{"attributePayload": "\xff"}', {})
    assert (status, doc["message"]) == (400, "Request body is not valid JSON")


def test_nested_attributes_are_checked_and_bounded_at_32_levels(ddb: Any) -> None:
    def nest(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {"S": "leaf"}
        for _ in range(levels - 1):
            value = {"M": {"a": value}}
        return value

    ddb.put_item(TableName=TABLE, Item={"k": {"S": "ok"}, "v": nest(32)})
    with pytest.raises(ClientError) as caught:
        ddb.put_item(TableName=TABLE, Item={"k": {"S": "deep"}, "v": nest(33)})
    assert _error(caught)[0] == "ValidationException"


@pytest.mark.parametrize(
    "value",
    [
        {"M": {"a": "not an AttributeValue"}},
        {"L": [{"X": "1"}]},
        {"N": "twelve"},
        {"N": "NaN"},
        {"S": 5},
        {"B": "not base64!"},
        {"BOOL": "yes"},
        {"NULL": False},
        {"SS": []},
        {"SS": ["a", "a"]},
        {"NS": ["1", "x"]},
    ],
)
def test_malformed_attribute_values_are_refused(iot: FakeIot, ddb: Any, value: Any) -> None:
    # Raw, since boto3 validates some of these itself before sending.
    body = json.dumps({"TableName": TABLE, "Item": {"k": {"S": "x"}, "v": value}}).encode()
    status, doc = _post(
        iot, "/", body, {"X-Amz-Target": "DynamoDB_20120810.PutItem", "Content-Type": "x"}
    )
    assert status == 400 and doc["__type"].endswith("ValidationException"), doc
    assert "Item" not in ddb.get_item(TableName=TABLE, Key={"k": {"S": "x"}})


def test_items_over_400_kb_and_keys_over_2048_bytes_are_refused(ddb: Any) -> None:
    ddb.put_item(TableName=TABLE, Item={"k": {"S": "fits"}, "v": {"S": "x" * (399 * 1024)}})
    with pytest.raises(ClientError) as caught:
        ddb.put_item(TableName=TABLE, Item={"k": {"S": "big"}, "v": {"S": "x" * (401 * 1024)}})
    assert _error(caught) == (
        "ValidationException",
        "Item size has exceeded the maximum allowed size",
    )
    with pytest.raises(ClientError) as caught:
        ddb.put_item(
            TableName=TABLE,
            Item={"k": {"S": "k"}, "v": {"L": [{"S": "y" * 1024}] * 410}},  # nested, too
        )
    assert _error(caught)[0] == "ValidationException"
    with pytest.raises(ClientError) as caught:
        ddb.put_item(TableName=TABLE, Item={"k": {"S": "k" * 2049}})
    assert "2048" in _error(caught)[1]
    assert ddb.describe_table(TableName=TABLE)["Table"]["ItemCount"] == 1


def test_a_scan_page_stops_at_one_megabyte_whatever_the_limit(ddb: Any) -> None:
    """Limit capped items at 1000, not bytes: 1000 large items made one answer of hundreds of MB."""
    for i in range(8):
        ddb.put_item(TableName=TABLE, Item={"k": {"S": f"i{i}"}, "v": {"S": "x" * (300 * 1024)}})
    first = ddb.scan(TableName=TABLE, Limit=1000)
    assert first["Count"] == 4 and "LastEvaluatedKey" in first  # 4 x 300 KB reaches 1 MB
    pages = list(ddb.get_paginator("scan").paginate(TableName=TABLE))
    assert sum(page["Count"] for page in pages) == 8
    assert len({item["k"]["S"] for page in pages for item in page["Items"]}) == 8


def test_tables_are_bounded(ddb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fakeiot.dynamodb, "MAX_TABLES", 2)
    ddb.create_table(
        TableName="second",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
    )
    with pytest.raises(ClientError) as caught:
        ddb.create_table(
            TableName="third",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        )
    assert _error(caught)[0] == "LimitExceededException"
    assert sorted(ddb.list_tables()["TableNames"]) == ["hostile", "second"]


@pytest.mark.parametrize(
    "name",
    ["x'; DROP TABLE dynamodb_items; --", "a\x00b", "../../etc", "t" * 256, "ab"],
)
def test_table_names_and_keys_never_reach_sql_as_text(ddb: Any, name: str) -> None:
    with pytest.raises(ClientError) as caught:
        ddb.describe_table(TableName=name)
    assert _error(caught)[0] == "ValidationException"
    odd_key = "k'); DELETE FROM dynamodb_items; --"
    ddb.put_item(TableName=TABLE, Item={"k": {"S": odd_key}})
    ddb.put_item(TableName=TABLE, Item={"k": {"S": "other"}})
    assert ddb.get_item(TableName=TABLE, Key={"k": {"S": odd_key}})["Item"]["k"]["S"] == odd_key
    assert ddb.scan(TableName=TABLE)["Count"] == 2


def test_with_access_keys_dynamodb_and_publish_calls_must_be_signed(tmp_path: Path) -> None:
    import boto3

    key, secret = "AKIDFAKEIOTTEST", "fakeiot-test-secret-access-key"
    iot = FakeIot(
        FakeIotConfig(
            mqtt_port=0,
            api_port=0,
            data_dir=tmp_path / "fakeiot",
            api_access_key_id=key,
            api_secret_access_key=secret,
        )
    )
    iot.start()
    try:
        for path, headers in [
            ("/", {"X-Amz-Target": "DynamoDB_20120810.ListTables"}),
            ("/topics/CP1%2Fout?qos=1", {}),
        ]:
            status, _ = _post(iot, path, b"{}", headers)
            assert status == 403, path
        clients = [
            boto3.client(
                service,
                endpoint_url=iot.api_url,
                region_name="us-east-1",
                aws_access_key_id=key,
                aws_secret_access_key=secret,
            )
            for service in ("dynamodb", "iot-data")
        ]
        try:
            assert clients[0].list_tables()["TableNames"] == []
            clients[1].publish(topic="CP1/out", qos=1, payload=b"signed")
        finally:
            for client in clients:
                client.close()
    finally:
        iot.stop()
