"""OCPP 1.6: the commands the simulator answers and the messages it sends, without I/O.

``handle`` turns a CALL from the central system into an :class:`~.station.Answer`; the
``start``/``update``/``finish`` steps of a transaction take a :data:`~.messages.CallFn`
to send with, so the runner owns the connection.
"""

from __future__ import annotations

from typing import Any

from ocpp.exceptions import NotImplementedError as OcppNotImplemented

from .messages import ENERGY, CallFn, Identity, Message, timestamp
from .station import (
    SETTINGS,
    SETTINGS_BY_V16_KEY,
    Answer,
    Effect,
    Reboot,
    RunTransaction,
    Station,
    Transaction,
    Trigger,
)

TRIGGERABLE = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification")


class V16:
    version = "1.6"
    subprotocol = "ocpp1.6"
    place = "connector"

    def handle(self, station: Station, action: str, payload: dict[str, Any], now: float) -> Answer:
        handler = getattr(self, f"_on_{action}", None)
        if handler is None:
            raise OcppNotImplemented(description=f"{action} is not implemented by this simulator")
        answer: Answer = handler(station, payload, now)
        return answer

    # --- commands ---

    def _on_RemoteStartTransaction(
        self, station: Station, payload: dict[str, Any], now: float
    ) -> Answer:
        requested = payload.get("connectorId")
        connector = station.choose_connector(requested)
        if connector is None:
            where = f"connector {requested}" if requested is not None else "any connector"
            return Answer(
                {"status": "Rejected"},
                note=f"RemoteStartTransaction rejected: {where} unavailable or busy",
            )
        station.begin(
            connector,
            id_token=payload["idTag"],
            token_type="Central",
            remote_start_id=None,
            transaction_id=None,
            now=now,
        )
        return Answer(
            {"status": "Accepted"},
            (RunTransaction(connector.id),),
            note=f"RemoteStartTransaction accepted: idTag {payload['idTag']} on connector {connector.id}",
        )

    def _on_RemoteStopTransaction(
        self, station: Station, payload: dict[str, Any], now: float
    ) -> Answer:
        transaction = station.find(str(payload["transactionId"]))
        if transaction is None or transaction.stop_reason is not None:
            return Answer(
                {"status": "Rejected"},
                note=f"RemoteStopTransaction rejected: no transaction {payload['transactionId']} running",
            )
        return Answer(
            {"status": "Accepted"},
            station.request_stop(transaction, "Remote"),
            note=f"RemoteStopTransaction accepted: transaction {transaction.transaction_id}",
        )

    def _on_Reset(self, station: Station, payload: dict[str, Any], now: float) -> Answer:
        kind = payload["type"]
        return Answer(
            {"status": "Accepted"},
            (Reboot(f"{kind}Reset"),),
            note=f"Reset ({kind}) accepted: rebooting",
        )

    def _on_GetConfiguration(self, station: Station, payload: dict[str, Any], now: float) -> Answer:
        keys = payload.get("key")
        known = [s for s in SETTINGS if s.v16_key] if keys is None else []
        unknown: list[str] = []
        for key in keys or ():
            setting = SETTINGS_BY_V16_KEY.get(key)
            if setting is None:
                unknown.append(key)
            else:
                known.append(setting)
        result: dict[str, Any] = {
            "configurationKey": [
                {"key": s.v16_key, "readonly": s.readonly, "value": station.settings.text(s)}
                for s in known
            ]
        }
        if unknown:
            result["unknownKey"] = unknown
        return Answer(result)

    def _on_ChangeConfiguration(
        self, station: Station, payload: dict[str, Any], now: float
    ) -> Answer:
        key, value = payload["key"], payload["value"]
        setting = SETTINGS_BY_V16_KEY.get(key)
        if setting is None:
            status = "NotSupported"
        else:
            status = "Accepted" if station.settings.change(setting, value) else "Rejected"
        return Answer({"status": status}, note=f"ChangeConfiguration {key}={value}: {status}")

    def _on_ChangeAvailability(
        self, station: Station, payload: dict[str, Any], now: float
    ) -> Answer:
        answer = station.change_availability(payload["connectorId"], payload["type"] == "Operative")
        status = answer.payload["status"]
        note = (
            f"ChangeAvailability {payload['type']} on connector {payload['connectorId']}: {status}"
        )
        return Answer(answer.payload, answer.effects, note=note)

    def _on_TriggerMessage(self, station: Station, payload: dict[str, Any], now: float) -> Answer:
        message, connector = payload["requestedMessage"], payload.get("connectorId")
        if message not in TRIGGERABLE:
            return Answer(
                {"status": "NotImplemented"}, note=f"TriggerMessage {message}: NotImplemented"
            )
        if connector not in (None, 0) and connector not in station.connectors:
            return Answer(
                {"status": "Rejected"}, note=f"TriggerMessage {message}: no connector {connector}"
            )
        return Answer(
            {"status": "Accepted"},
            (Trigger(message, connector or None),),
            note=f"TriggerMessage {message} accepted",
        )

    def _on_UnlockConnector(self, station: Station, payload: dict[str, Any], now: float) -> Answer:
        connector = station.connectors.get(payload["connectorId"])
        if connector is None:
            return Answer(
                {"status": "NotSupported"},
                note=f"UnlockConnector: no connector {payload['connectorId']}",
            )
        effects: tuple[Effect, ...] = ()
        if connector.transaction is not None:
            effects = station.request_stop(connector.transaction, "UnlockCommand")
        return Answer(
            {"status": "Unlocked"},
            effects,
            note=f"UnlockConnector: connector {connector.id} unlocked",
        )

    # --- messages ---

    def boot(self, identity: Identity, reason: str) -> Message:
        return "BootNotification", {
            "chargePointVendor": identity.vendor,
            "chargePointModel": identity.model,
            "chargePointSerialNumber": identity.serial,
            "firmwareVersion": identity.firmware,
        }

    def status(self, station: Station, connector_id: int) -> Message:
        return "StatusNotification", {
            "connectorId": connector_id,
            "errorCode": "NoError",
            "status": station.connectors[connector_id].status,
            "timestamp": timestamp(),
        }

    def meter_values(
        self, station: Station, connector_id: int, now: float, *, context: str = "Trigger"
    ) -> Message:
        payload: dict[str, Any] = {
            "connectorId": connector_id,
            "meterValue": [
                {
                    "timestamp": timestamp(),
                    "sampledValue": [
                        {
                            "value": f"{station.meter(connector_id, now):.1f}",
                            "context": context,
                            "measurand": ENERGY,
                            "unit": "Wh",
                        }
                    ],
                }
            ],
        }
        transaction = station.connectors[connector_id].transaction
        if transaction is not None and transaction.transaction_id is not None:
            payload["transactionId"] = int(transaction.transaction_id)
        return "MeterValues", payload

    # --- a transaction's steps ---

    async def start(
        self, call: CallFn, station: Station, tx: Transaction, now: float
    ) -> str | None:
        """Authorize (if AuthorizeRemoteTxRequests) and StartTransaction; why not, or None."""
        if station.settings["authorize_remote_start"]:
            authorized = await call("Authorize", {"idTag": tx.id_token})
            status = (authorized or {}).get("idTagInfo", {}).get("status", "no answer")
            if status != "Accepted":
                return f"idTag {tx.id_token} not authorized ({status})"
        started = await call(
            "StartTransaction",
            {
                "connectorId": tx.connector,
                "idTag": tx.id_token,
                "meterStart": round(tx.meter_start_wh),
                "timestamp": timestamp(),
            },
        )
        if started is None:
            return "StartTransaction not answered"
        tx.transaction_id = str(started["transactionId"])
        if started["idTagInfo"]["status"] != "Accepted":
            station.request_stop(tx, "DeAuthorized")
        return None

    async def update(self, call: CallFn, station: Station, tx: Transaction, now: float) -> None:
        await call(*self.meter_values(station, tx.connector, now, context="Sample.Periodic"))

    async def finish(self, call: CallFn, station: Station, tx: Transaction, now: float) -> None:
        await call(
            "StopTransaction",
            {
                "transactionId": int(tx.transaction_id or 0),
                "idTag": tx.id_token,
                "meterStop": round(station.meter(tx.connector, now)),
                "timestamp": timestamp(),
                "reason": tx.stop_reason or "Other",
            },
        )
