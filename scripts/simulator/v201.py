"""OCPP 2.0.1: the commands the simulator answers and the messages it sends, without I/O.

Each connector of the station is an EVSE with one connector (``connectorId`` 1).
"""

from __future__ import annotations

import uuid
from typing import Any

from ocpp.exceptions import NotImplementedError as OcppNotImplemented

from .messages import ENERGY, CallFn, Identity, Message, timestamp
from .station import (
    SETTINGS_BY_V201_VARIABLE,
    V201_COMPONENTS,
    Answer,
    Reboot,
    RunTransaction,
    Setting,
    Station,
    Transaction,
    Trigger,
)

TRIGGERABLE = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification")
END_TRIGGER = {
    "Remote": "RemoteStop",
    "ImmediateReset": "ResetCommand",
    "DeAuthorized": "Deauthorized",
}


class V201:
    version = "2.0.1"
    subprotocol = "ocpp2.0.1"
    place = "EVSE"

    def handle(self, station: Station, action: str, payload: dict[str, Any], now: float) -> Answer:
        handler = getattr(self, f"_on_{action}", None)
        if handler is None:
            raise OcppNotImplemented(description=f"{action} is not implemented by this simulator")
        answer: Answer = handler(station, payload, now)
        return answer

    # --- commands ---

    def _on_RequestStartTransaction(
        self, station: Station, payload: dict[str, Any], now: float
    ) -> Answer:
        requested = payload.get("evseId")
        connector = station.choose_connector(requested)
        if connector is None:
            where = f"EVSE {requested}" if requested is not None else "any EVSE"
            return Answer(
                {"status": "Rejected"},
                note=f"RequestStartTransaction rejected: {where} unavailable or busy",
            )
        token = payload["idToken"]
        tx = station.begin(
            connector,
            id_token=token["idToken"],
            token_type=token["type"],
            remote_start_id=payload["remoteStartId"],
            transaction_id=str(uuid.uuid4()),
            now=now,
        )
        return Answer(
            {"status": "Accepted"},
            (RunTransaction(connector.id),),
            note=f"RequestStartTransaction accepted: transaction {tx.transaction_id} on EVSE {connector.id}",
        )

    def _on_RequestStopTransaction(
        self, station: Station, payload: dict[str, Any], now: float
    ) -> Answer:
        transaction = station.find(payload["transactionId"])
        if transaction is None or transaction.stop_reason is not None:
            return Answer(
                {"status": "Rejected"},
                note=f"RequestStopTransaction rejected: no transaction {payload['transactionId']} running",
            )
        return Answer(
            {"status": "Accepted"},
            station.request_stop(transaction, "Remote"),
            note=f"RequestStopTransaction accepted: transaction {transaction.transaction_id}",
        )

    def _on_Reset(self, station: Station, payload: dict[str, Any], now: float) -> Answer:
        kind = payload["type"]
        if "evseId" in payload:
            return Answer(
                {"status": "Rejected"}, note="Reset of one EVSE: Rejected (not supported)"
            )
        if kind == "OnIdle" and next(station.transactions(), None) is not None:
            station.schedule_reset("ImmediateReset")
            return Answer(
                {"status": "Scheduled"}, note="Reset (OnIdle) scheduled: after the transactions"
            )
        return Answer(
            {"status": "Accepted"},
            (Reboot("ImmediateReset"),),
            note=f"Reset ({kind}) accepted: rebooting",
        )

    def _lookup(self, item: dict[str, Any]) -> tuple[Setting | None, str]:
        component, variable = item["component"], item["variable"]
        if (
            component["name"] not in V201_COMPONENTS
            or "evse" in component
            or "instance" in component
        ):
            return None, "UnknownComponent"
        setting = SETTINGS_BY_V201_VARIABLE.get((component["name"], variable["name"]))
        if setting is None or "instance" in variable:
            return None, "UnknownVariable"
        if item.get("attributeType", "Actual") != "Actual":
            return None, "NotSupportedAttributeType"
        return setting, "Accepted"

    def _on_GetVariables(self, station: Station, payload: dict[str, Any], now: float) -> Answer:
        results = []
        for item in payload["getVariableData"]:
            setting, status = self._lookup(item)
            result: dict[str, Any] = {
                "attributeStatus": status,
                "component": item["component"],
                "variable": item["variable"],
            }
            if "attributeType" in item:
                result["attributeType"] = item["attributeType"]
            if setting is not None:
                result["attributeValue"] = station.settings.text(setting)
            results.append(result)
        return Answer({"getVariableResult": results})

    def _on_SetVariables(self, station: Station, payload: dict[str, Any], now: float) -> Answer:
        results = []
        notes = []
        for item in payload["setVariableData"]:
            setting, status = self._lookup(item)
            if setting is not None and not station.settings.change(setting, item["attributeValue"]):
                status = "Rejected"
            result: dict[str, Any] = {
                "attributeStatus": status,
                "component": item["component"],
                "variable": item["variable"],
            }
            if "attributeType" in item:
                result["attributeType"] = item["attributeType"]
            results.append(result)
            notes.append(
                f"{item['component']['name']}.{item['variable']['name']}={item['attributeValue']}: {status}"
            )
        return Answer({"setVariableResult": results}, note="SetVariables " + ", ".join(notes))

    def _on_ChangeAvailability(
        self, station: Station, payload: dict[str, Any], now: float
    ) -> Answer:
        evse = payload.get("evse")
        operative = payload["operationalStatus"] == "Operative"
        if evse is not None and evse.get("connectorId", 1) != 1 and evse["id"] != 0:
            answer = Answer({"status": "Rejected"})
        else:
            answer = station.change_availability(None if evse is None else evse["id"], operative)
        where = "the station" if not evse or evse["id"] == 0 else f"EVSE {evse['id']}"
        status = answer.payload["status"]
        note = f"ChangeAvailability {payload['operationalStatus']} on {where}: {status}"
        return Answer(answer.payload, answer.effects, note=note)

    def _on_TriggerMessage(self, station: Station, payload: dict[str, Any], now: float) -> Answer:
        message, evse = payload["requestedMessage"], payload.get("evse")
        if message not in TRIGGERABLE:
            return Answer(
                {"status": "NotImplemented"}, note=f"TriggerMessage {message}: NotImplemented"
            )
        evse_id = None if evse is None else evse["id"]
        if evse_id not in (None, 0) and evse_id not in station.connectors:
            return Answer(
                {"status": "Rejected"}, note=f"TriggerMessage {message}: no EVSE {evse_id}"
            )
        return Answer(
            {"status": "Accepted"},
            (Trigger(message, evse_id or None),),
            note=f"TriggerMessage {message} accepted",
        )

    def _on_UnlockConnector(self, station: Station, payload: dict[str, Any], now: float) -> Answer:
        connector = station.connectors.get(payload["evseId"])
        if connector is None or payload["connectorId"] != 1:
            status = "UnknownConnector"
        elif connector.transaction is not None:
            status = "OngoingAuthorizedTransaction"
        else:
            status = "Unlocked"
        return Answer(
            {"status": status},
            note=f"UnlockConnector EVSE {payload['evseId']} connector {payload['connectorId']}: {status}",
        )

    # --- messages ---

    def boot(self, identity: Identity, reason: str) -> Message:
        return "BootNotification", {
            "chargingStation": {
                "vendorName": identity.vendor,
                "model": identity.model,
                "serialNumber": identity.serial,
                "firmwareVersion": identity.firmware,
            },
            "reason": reason,
        }

    def status(self, station: Station, connector_id: int) -> Message:
        status = station.connectors[connector_id].status
        return "StatusNotification", {
            "timestamp": timestamp(),
            "connectorStatus": "Occupied" if status == "Charging" else status,
            "evseId": connector_id,
            "connectorId": 1,
        }

    def _meter_value(
        self, station: Station, connector_id: int, now: float, context: str
    ) -> dict[str, Any]:
        return {
            "timestamp": timestamp(),
            "sampledValue": [
                {
                    "value": round(station.meter(connector_id, now), 1),
                    "context": context,
                    "measurand": ENERGY,
                    "unitOfMeasure": {"unit": "Wh"},
                }
            ],
        }

    def meter_values(self, station: Station, connector_id: int, now: float) -> Message:
        return "MeterValues", {
            "evseId": connector_id,
            "meterValue": [self._meter_value(station, connector_id, now, "Trigger")],
        }

    def _event(
        self, tx: Transaction, event: str, trigger: str, meter: dict[str, Any]
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "eventType": event,
            "timestamp": timestamp(),
            "triggerReason": trigger,
            "seqNo": tx.seq_no,
            "transactionInfo": {"transactionId": tx.transaction_id},
            "meterValue": [meter],
        }
        tx.seq_no += 1
        return payload

    # --- a transaction's steps ---

    async def start(
        self, call: CallFn, station: Station, tx: Transaction, now: float
    ) -> str | None:
        """Authorize (if AuthCtrlr.AuthorizeRemoteStart) and TransactionEvent Started."""
        token = {"idToken": tx.id_token, "type": tx.token_type}
        if station.settings["authorize_remote_start"]:
            authorized = await call("Authorize", {"idToken": token})
            status = (authorized or {}).get("idTokenInfo", {}).get("status", "no answer")
            if status != "Accepted":
                return f"idToken {tx.id_token} not authorized ({status})"
        payload = self._event(
            tx,
            "Started",
            "RemoteStart",
            self._meter_value(station, tx.connector, now, "Transaction.Begin"),
        )
        payload["transactionInfo"].update(
            chargingState="Charging", remoteStartId=tx.remote_start_id
        )
        payload["idToken"] = token
        payload["evse"] = {"id": tx.connector, "connectorId": 1}
        answer = await call("TransactionEvent", payload)
        info = (answer or {}).get("idTokenInfo")
        if info is not None and info["status"] != "Accepted":
            station.request_stop(tx, "DeAuthorized")
        return None

    async def update(self, call: CallFn, station: Station, tx: Transaction, now: float) -> None:
        meter = self._meter_value(station, tx.connector, now, "Sample.Periodic")
        await call("TransactionEvent", self._event(tx, "Updated", "MeterValuePeriodic", meter))

    async def finish(self, call: CallFn, station: Station, tx: Transaction, now: float) -> None:
        reason = tx.stop_reason or "Other"
        meter = self._meter_value(station, tx.connector, now, "Transaction.End")
        payload = self._event(tx, "Ended", END_TRIGGER.get(reason, "AbnormalCondition"), meter)
        payload["transactionInfo"]["stoppedReason"] = reason
        await call("TransactionEvent", payload)
