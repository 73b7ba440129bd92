"""The processor's Lambda handler against moto's AWS: iot-data (shadows, Publish) and DynamoDB.

moto runs in this process (``ThreadedMotoServer``, a real HTTP server on a free port) rather
than as the ``moto_url`` subprocess: moto keeps what ``iot-data publish`` sent in its backend
(``published_payloads``) and has no API that returns it, so the test reads the backend itself.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from gateway.aws import AwsSettings, make_clients
from gateway.identity import thing_name_for
from gateway.processor import lambda_handler
from gateway.processor.idtokens import IdTokenRecord, IdTokenTable, make_dynamodb_client

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the test extras")
iotdata_models = pytest.importorskip("moto.iotdata.models")
moto_core = pytest.importorskip("moto.core")

REGION = "us-east-1"


@pytest.fixture
def moto() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    reset = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=10) as response:  # moto's state is per process
        response.read()
    try:
        yield url
    finally:
        server.stop()
        server._server.server_close()  # stop() shuts the server down but leaves its socket open


@pytest.fixture
def function_env(monkeypatch: pytest.MonkeyPatch, moto: str) -> Iterator[pytest.MonkeyPatch]:
    for name in ("PROCESSOR_IOT_DATA_URL", "PROCESSOR_HANDLERS", "PROCESSOR_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_REGION", REGION)  # as Lambda sets it; PROCESSOR_REGION defaults to it
    monkeypatch.setenv("PROCESSOR_IOT_API_URL", moto)
    monkeypatch.setenv("PROCESSOR_HEARTBEAT_INTERVAL", "77")
    monkeypatch.setenv("PROCESSOR_AUTHORIZATION", "id-token-table")
    monkeypatch.setenv("PROCESSOR_ID_TOKEN_TABLE", "lambdaIdTokens")
    level = logging.getLogger("gateway").level
    try:
        yield monkeypatch
    finally:
        lambda_handler.close_containers()
        logging.getLogger("gateway").setLevel(level)


def published() -> list[tuple[str, bytes]]:
    backend = iotdata_models.iotdata_backends[moto_core.DEFAULT_ACCOUNT_ID][REGION]
    return list(backend.published_payloads)


def event(cp_id: str, frame: list[Any]) -> dict[str, str]:
    return {"chargePointId": cp_id, "frame": base64.b64encode(json.dumps(frame).encode()).decode()}


async def test_handler_answers_through_moto_iot_data_and_dynamodb(
    moto: str, function_env: pytest.MonkeyPatch
) -> None:
    iot, iot_data = make_clients(AwsSettings(region=REGION, iot_endpoint_url=moto))
    dynamodb = make_dynamodb_client(REGION, moto)
    try:
        thing = thing_name_for("MOTO16")
        iot.create_thing(thingName=thing)
        # What the gateway records before it forwards anything: the CP speaks OCPP 1.6.
        document = {"state": {"reported": {"ocppProtocol": "ocpp1.6"}}}
        iot_data.update_thing_shadow(thingName=thing, payload=json.dumps(document).encode())
        table = IdTokenTable(dynamodb, "lambdaIdTokens")
        table.create()
        table.put(IdTokenRecord("GOOD", "Accepted"))
        table.put(IdTokenRecord("BAD", "Blocked"))

        boot = [
            2,
            "b1",
            "BootNotification",
            {"chargePointVendor": "ACME", "chargePointModel": "M1", "firmwareVersion": "1.2.3"},
        ]
        calls = [
            event("MOTO16", boot),
            event("MOTO16", [2, "a1", "Authorize", {"idTag": "GOOD"}]),
            event("MOTO16", [2, "a2", "Authorize", {"idTag": "BAD"}]),
            event("MOTO16", [2, "a3", "Authorize", {"idTag": "NOBODY"}]),
        ]
        outcomes = await trio.to_thread.run_sync(
            lambda: [lambda_handler.handler(e, None) for e in calls]
        )
        assert (
            outcomes
            == [{"result": "answered", "chargePointId": "MOTO16", "ocppVersion": "1.6"}] * 4
        )
        answers = {json.loads(p)[1]: json.loads(p) for t, p in published() if t == "MOTO16/out"}
        assert answers["b1"][2]["status"] == "Accepted" and answers["b1"][2]["interval"] == 77
        assert answers["a1"][2] == {"idTagInfo": {"status": "Accepted"}}
        assert answers["a2"][2] == {"idTagInfo": {"status": "Blocked"}}
        assert answers["a3"][2] == {"idTagInfo": {"status": "Invalid"}}
        shadow = json.loads(iot_data.get_thing_shadow(thingName=thing)["payload"].read())
        assert shadow["state"]["reported"]["chargingStation"] == {
            "vendorName": "ACME",
            "model": "M1",
            "firmwareVersion": "1.2.3",
        }
    finally:
        for client in (iot, iot_data, dynamodb):
            client.close()
