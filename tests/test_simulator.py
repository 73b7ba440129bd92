"""scripts/simulator against a central-system stand-in on a real WebSocket.

The stand-in validates every frame both ways with the ``ocpp`` package's JSON schemas
(CALLs from the simulator, its answers to our commands), answers the simulator's CALLs
with schema-valid payloads, and records the CP -> CSMS messages in order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import ocpp.messages
import pytest
import trio
from ocpp.messages import Call, CallError, CallResult, unpack, validate_payload
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from gateway.websocket import serve
from scripts.simulator import Simulator, SimulatorConfig
from scripts.simulator.station import Station

ocpp.messages.ASYNC_VALIDATION = False


class Csms:
    """One central system for one simulated charge point, version ``version``."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.ws: WebSocketConnection | None = None
        self.connections = 0
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.callerror_for: set[str] = set()
        self._arrived = trio.Condition()
        self._read = 0
        self._pending: dict[str, tuple[trio.Event, list[Any]]] = {}
        self._next_tx = 41

    def _answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat()
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": now, "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": now}
        if action == "StartTransaction":
            self._next_tx += 1
            return {"transactionId": self._next_tx, "idTagInfo": {"status": "Accepted"}}
        if action == "Authorize":
            key = "idTagInfo" if self.version == "1.6" else "idTokenInfo"
            return {key: {"status": "Accepted"}}
        return {}  # StatusNotification, MeterValues, StopTransaction, TransactionEvent

    async def handler(self, request: WebSocketRequest, stream: trio.abc.Stream) -> None:
        ws = await request.accept(subprotocol=f"ocpp{self.version}")
        self.ws = ws
        self.connections += 1
        while True:
            try:
                text = await ws.get_message()
            except ConnectionClosed:
                return
            frame = unpack(text)
            if isinstance(frame, Call):
                await validate_payload(frame, self.version)  # raises: the test fails
                if frame.action in self.callerror_for:
                    error = [4, frame.unique_id, "InternalError", "told to fail", {}]
                    await ws.send_message(json.dumps(error))
                else:
                    result = frame.create_call_result(self._answer(frame.action, frame.payload))
                    await validate_payload(result, self.version)
                    await ws.send_message(result.to_json())
                async with self._arrived:
                    self.messages.append((frame.action, frame.payload))
                    self._arrived.notify_all()
            elif frame.unique_id in self._pending:
                done, box = self._pending[frame.unique_id]
                box.append(frame)
                done.set()

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a command; its answer, validated against the schema."""
        assert self.ws is not None
        message = Call(str(uuid.uuid4()), action, payload)
        await validate_payload(message, self.version)
        done, box = trio.Event(), []
        self._pending[message.unique_id] = (done, box)
        await self.ws.send_message(message.to_json())
        with trio.fail_after(5):
            await done.wait()
        reply = box[0]
        if isinstance(reply, CallError):
            return {"CALLERROR": reply.error_code}
        assert isinstance(reply, CallResult)
        reply.action = action
        await validate_payload(reply, self.version)
        return reply.payload  # type: ignore[no-any-return]

    async def next(self, *, skip: tuple[str, ...] = ("Heartbeat",)) -> tuple[str, dict[str, Any]]:
        """The next CP -> CSMS message not in ``skip``."""
        with trio.fail_after(5):
            async with self._arrived:
                while True:
                    while self._read < len(self.messages):
                        action, payload = self.messages[self._read]
                        self._read += 1
                        if action not in skip:
                            return action, payload
                    await self._arrived.wait()

    async def expect(self, action: str, **skip: Any) -> dict[str, Any]:
        got, payload = await self.next(**skip)
        assert got == action, (got, payload)
        return payload


@asynccontextmanager
async def simulated(version: str, **options: Any) -> AsyncIterator[Csms]:
    csms = Csms(version)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve(
                    csms.handler,
                    "127.0.0.1",
                    0,
                    None,
                    max_message_size=65536,
                    connect_timeout=5,
                    disconnect_timeout=5,
                    task_status=task_status,
                )
            )
            config = SimulatorConfig(
                url=f"ws://127.0.0.1:{server.port}",
                cp_id="CP1",
                version=version,
                call_timeout=5,
                **options,
            )
            nursery.start_soon(Simulator(config).run)
            boot = await csms.expect("BootNotification")
            assert boot.get("reason", "PowerUp") == "PowerUp"
            yield csms
            nursery.cancel_scope.cancel()


def energy(payload: dict[str, Any]) -> float:
    return float(payload["meterValue"][0]["sampledValue"][0]["value"])


async def test_201_remote_start_meter_values_remote_stop() -> None:
    async with simulated("2.0.1", meter_interval=0.2) as csms:
        token = {"idToken": "TAG-1", "type": "Central"}
        answer = await csms.call(
            "RequestStartTransaction", {"idToken": token, "remoteStartId": 7, "evseId": 1}
        )
        assert answer == {"status": "Accepted"}
        started = await csms.expect("TransactionEvent")
        tx_id = started["transactionInfo"]["transactionId"]
        assert started["eventType"] == "Started" and started["triggerReason"] == "RemoteStart"
        assert started["transactionInfo"]["remoteStartId"] == 7 and started["idToken"] == token
        assert started["evse"] == {"id": 1, "connectorId": 1}
        status = await csms.expect("StatusNotification")
        assert status["connectorStatus"] == "Occupied" and status["evseId"] == 1
        busy = await csms.call(
            "RequestStartTransaction", {"idToken": token, "remoteStartId": 8, "evseId": 1}
        )
        assert busy == {"status": "Rejected"}
        updates = [await csms.expect("TransactionEvent") for _ in range(2)]
        assert [u["eventType"] for u in updates] == ["Updated", "Updated"]
        assert {u["transactionInfo"]["transactionId"] for u in updates} == {tx_id}
        assert energy(started) < energy(updates[0]) < energy(updates[1])
        unknown = await csms.call("RequestStopTransaction", {"transactionId": "nope"})
        assert unknown == {"status": "Rejected"}
        assert await csms.call("RequestStopTransaction", {"transactionId": tx_id}) == {
            "status": "Accepted"
        }
        while (ended := await csms.expect("TransactionEvent"))["eventType"] == "Updated":
            pass
        assert ended["eventType"] == "Ended" and ended["triggerReason"] == "RemoteStop"
        assert ended["transactionInfo"] == {"transactionId": tx_id, "stoppedReason": "Remote"}
        assert ended["seqNo"] > updates[1]["seqNo"] > updates[0]["seqNo"] > started["seqNo"]
        assert energy(ended) >= energy(updates[1])
        assert (await csms.expect("StatusNotification"))["connectorStatus"] == "Available"
        again = await csms.call("RequestStopTransaction", {"transactionId": tx_id})
        assert again == {"status": "Rejected"}


async def test_16_remote_start_meter_values_remote_stop() -> None:
    async with simulated("1.6", meter_interval=0.2) as csms:
        assert await csms.call("RemoteStartTransaction", {"idTag": "TAG-1"}) == {
            "status": "Accepted"
        }
        start = await csms.expect("StartTransaction")
        assert start["connectorId"] == 1 and start["idTag"] == "TAG-1"
        assert (await csms.expect("StatusNotification"))["status"] == "Charging"
        busy = await csms.call("RemoteStartTransaction", {"idTag": "TAG-2", "connectorId": 1})
        assert busy == {"status": "Rejected"}
        meters = [await csms.expect("MeterValues") for _ in range(2)]
        assert [m["transactionId"] for m in meters] == [42, 42]  # the id the CSMS gave
        assert start["meterStart"] <= energy(meters[0]) < energy(meters[1])
        assert await csms.call("RemoteStopTransaction", {"transactionId": 99}) == {
            "status": "Rejected"
        }
        assert await csms.call("RemoteStopTransaction", {"transactionId": 42}) == {
            "status": "Accepted"
        }
        while (action_payload := await csms.next())[0] == "MeterValues":
            pass
        action, stop = action_payload
        assert action == "StopTransaction"
        assert stop["transactionId"] == 42 and stop["reason"] == "Remote"
        assert stop["meterStop"] >= round(energy(meters[1]))
        assert (await csms.expect("StatusNotification"))["status"] == "Available"


async def test_16_authorizes_a_remote_start_when_configured() -> None:
    async with simulated("1.6") as csms:
        changed = await csms.call(
            "ChangeConfiguration", {"key": "AuthorizeRemoteTxRequests", "value": "true"}
        )
        assert changed == {"status": "Accepted"}
        await csms.call("RemoteStartTransaction", {"idTag": "TAG-9"})
        assert (await csms.expect("Authorize")) == {"idTag": "TAG-9"}
        await csms.expect("StartTransaction")


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_reset_reconnects_and_boots_again(version: str) -> None:
    async with simulated(version, meter_interval=30) as csms:
        if version == "2.0.1":
            token = {"idToken": "T", "type": "Central"}
            await csms.call("RequestStartTransaction", {"idToken": token, "remoteStartId": 1})
            await csms.expect("TransactionEvent")
            reset = await csms.call("Reset", {"type": "Immediate"})
        else:
            await csms.call("RemoteStartTransaction", {"idTag": "T"})
            await csms.expect("StartTransaction")
            reset = await csms.call("Reset", {"type": "Hard"})
        assert reset == {"status": "Accepted"}
        await csms.expect("StatusNotification")  # Charging / Occupied
        ended = await csms.next()
        if version == "2.0.1":
            assert ended[0] == "TransactionEvent"
            assert ended[1]["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        else:
            assert ended[0] == "StopTransaction" and ended[1]["reason"] == "HardReset"
        boot = await csms.expect("BootNotification", skip=("Heartbeat", "StatusNotification"))
        assert csms.connections == 2
        if version == "2.0.1":
            assert boot["reason"] == "RemoteReset"


async def test_201_onidle_reset_waits_for_the_transaction() -> None:
    async with simulated("2.0.1", meter_interval=30) as csms:
        token = {"idToken": "T", "type": "Central"}
        await csms.call("RequestStartTransaction", {"idToken": token, "remoteStartId": 1})
        tx_id = (await csms.expect("TransactionEvent"))["transactionInfo"]["transactionId"]
        assert await csms.call("Reset", {"type": "OnIdle"}) == {"status": "Scheduled"}
        assert csms.connections == 1
        await csms.call("RequestStopTransaction", {"transactionId": tx_id})
        boot = await csms.expect(
            "BootNotification", skip=("Heartbeat", "StatusNotification", "TransactionEvent")
        )
        assert boot["reason"] == "RemoteReset" and csms.connections == 2


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_trigger_message_sends_the_message(version: str) -> None:
    async with simulated(version) as csms:
        for message in ("Heartbeat", "StatusNotification", "MeterValues", "BootNotification"):
            assert await csms.call("TriggerMessage", {"requestedMessage": message}) == {
                "status": "Accepted"
            }
            assert (await csms.next(skip=()))[0] == message
        other = "DiagnosticsStatusNotification" if version == "1.6" else "LogStatusNotification"
        answer = await csms.call("TriggerMessage", {"requestedMessage": other})
        assert answer == {"status": "NotImplemented"}


async def test_201_get_and_set_variables() -> None:
    async with simulated("2.0.1") as csms:

        def item(component: str, variable: str, value: str | None = None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "component": {"name": component},
                "variable": {"name": variable},
            }
            if value is not None:
                data["attributeValue"] = value
            return data

        got = await csms.call(
            "GetVariables",
            {
                "getVariableData": [
                    item("OCPPCommCtrlr", "HeartbeatInterval"),
                    item("NoSuchCtrlr", "X"),
                    item("OCPPCommCtrlr", "NoSuchVariable"),
                ]
            },
        )
        results = got["getVariableResult"]
        assert [r["attributeStatus"] for r in results] == [
            "Accepted",
            "UnknownComponent",
            "UnknownVariable",
        ]
        assert results[0]["attributeValue"] == "300"  # the interval BootNotification gave
        setting = await csms.call(
            "SetVariables",
            {
                "setVariableData": [
                    item("SampledDataCtrlr", "TxUpdatedInterval", "5"),
                    item("SampledDataCtrlr", "TxUpdatedInterval", "soon"),
                    item("SecurityCtrlr", "Identity", "CP2"),
                    item("NoSuchCtrlr", "X", "1"),
                ]
            },
        )
        assert [r["attributeStatus"] for r in setting["setVariableResult"]] == [
            "Accepted",
            "Rejected",
            "Rejected",
            "UnknownComponent",
        ]
        got = await csms.call(
            "GetVariables",
            {
                "getVariableData": [
                    item("SampledDataCtrlr", "TxUpdatedInterval"),
                    item("SecurityCtrlr", "Identity"),
                ]
            },
        )
        assert [r["attributeValue"] for r in got["getVariableResult"]] == ["5", "CP1"]


async def test_16_get_and_change_configuration() -> None:
    async with simulated("1.6") as csms:
        everything = await csms.call("GetConfiguration", {})
        keys = {k["key"]: k for k in everything["configurationKey"]}
        assert keys["HeartbeatInterval"]["value"] == "300"
        assert keys["NumberOfConnectors"] == {
            "key": "NumberOfConnectors",
            "readonly": True,
            "value": "1",
        }
        changes = [
            ("MeterValueSampleInterval", "5", "Accepted"),
            ("MeterValueSampleInterval", "-1", "Rejected"),
            ("NumberOfConnectors", "4", "Rejected"),
            ("NoSuchKey", "1", "NotSupported"),
        ]
        for key, value, status in changes:
            answer = await csms.call("ChangeConfiguration", {"key": key, "value": value})
            assert answer == {"status": status}, key
        some = await csms.call("GetConfiguration", {"key": ["MeterValueSampleInterval", "Nope"]})
        assert some == {
            "configurationKey": [
                {"key": "MeterValueSampleInterval", "readonly": False, "value": "5"}
            ],
            "unknownKey": ["Nope"],
        }


async def test_availability_and_unlock() -> None:
    async with simulated("1.6", connectors=2, meter_interval=30) as csms:
        answer = await csms.call("ChangeAvailability", {"connectorId": 2, "type": "Inoperative"})
        assert answer == {"status": "Accepted"}
        status = await csms.expect("StatusNotification")
        assert (status["connectorId"], status["status"]) == (2, "Unavailable")
        refused = await csms.call("RemoteStartTransaction", {"idTag": "T", "connectorId": 2})
        assert refused == {"status": "Rejected"}
        assert await csms.call("ChangeAvailability", {"connectorId": 3, "type": "Operative"}) == {
            "status": "Rejected"
        }
        await csms.call("RemoteStartTransaction", {"idTag": "T", "connectorId": 1})
        await csms.expect("StartTransaction")
        await csms.expect("StatusNotification")
        answer = await csms.call("ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
        assert answer == {"status": "Scheduled"}
        assert await csms.call("UnlockConnector", {"connectorId": 9}) == {"status": "NotSupported"}
        assert await csms.call("UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}
        stop = await csms.expect("StopTransaction")
        assert stop["reason"] == "UnlockCommand"
        status = await csms.expect("StatusNotification")
        assert (status["connectorId"], status["status"]) == (
            1,
            "Unavailable",
        )  # the scheduled change


async def test_201_unlock_and_errors_are_not_fatal() -> None:
    async with simulated("2.0.1") as csms:
        unlock = await csms.call("UnlockConnector", {"evseId": 1, "connectorId": 1})
        assert unlock == {"status": "Unlocked"}
        unknown = await csms.call("UnlockConnector", {"evseId": 5, "connectorId": 1})
        assert unknown == {"status": "UnknownConnector"}
        assert await csms.call("ClearCache", {}) == {"CALLERROR": "NotImplemented"}
        csms.callerror_for.add("Heartbeat")
        await csms.call("TriggerMessage", {"requestedMessage": "Heartbeat"})
        assert (await csms.next(skip=()))[0] == "Heartbeat"
        # The CALLERROR was logged, not fatal: the simulator still answers.
        assert await csms.call("TriggerMessage", {"requestedMessage": "StatusNotification"}) == {
            "status": "Accepted"
        }
        assert (await csms.next(skip=()))[0] == "StatusNotification"


def test_station_meter_advances_only_while_charging() -> None:
    station = Station.create(connectors=1, power_w=3600, settings=SETTINGS_VALUES)
    connector = station.connectors[1]
    assert station.meter(1, 10.0) == 0
    station.begin(
        connector,
        id_token="T",
        token_type="Central",
        remote_start_id=None,
        transaction_id="x",
        now=10.0,
    )
    assert station.meter(1, 20.0) == pytest.approx(10.0)  # 3600 W for 10 s = 10 Wh
    station.end(1, 30.0)
    assert station.meter(1, 100.0) == pytest.approx(20.0)


SETTINGS_VALUES = {
    "heartbeat_interval": 60.0,
    "meter_interval": 10.0,
    "authorize_remote_start": False,
    "connection_timeout": 60.0,
    "measurands": "Energy.Active.Import.Register",
    "feature_profiles": "Core",
    "identity": "CP1",
}
