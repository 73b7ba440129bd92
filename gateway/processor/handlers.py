"""What the CPO's message processor answers to each OCPP CALL (pure).

Each handler takes the CALL's payload and a :class:`Context` and returns the
CALLRESULT payload.  BootNotification also yields the document that goes
into the charge point's device shadow as ``state.reported``; OCPP 1.6 boot
attributes are mapped to the 2.0.1 shape (``chargingStation.vendorName``...)
so that every shadow looks the same whatever the charge point speaks.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

Json = dict[str, Any]


def utc_now() -> str:
    """ISO 8601 with an explicit UTC offset, as OCPP requires for currentTime."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Context:
    heartbeat_interval: int = 10
    now: Callable[[], str] = utc_now
    # Transaction ids: seeded from the clock so a restarted processor does not reuse recent ones.
    transaction_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(int(time.time()) % 1_000_000_000))


Handler = Callable[[Json, Context], Json]

_ACCEPTED = {"status": "Accepted"}


def boot_notification(payload: Json, ctx: Context) -> Json:
    return {"currentTime": ctx.now(), "interval": ctx.heartbeat_interval, "status": "Accepted"}


def heartbeat(payload: Json, ctx: Context) -> Json:
    return {"currentTime": ctx.now()}


def empty(payload: Json, ctx: Context) -> Json:
    return {}


def authorize_16(payload: Json, ctx: Context) -> Json:
    return {"idTagInfo": dict(_ACCEPTED)}


def start_transaction_16(payload: Json, ctx: Context) -> Json:
    return {"transactionId": next(ctx.transaction_ids), "idTagInfo": dict(_ACCEPTED)}


def stop_transaction_16(payload: Json, ctx: Context) -> Json:
    return {"idTagInfo": dict(_ACCEPTED)} if payload.get("idTag") else {}


def authorize_201(payload: Json, ctx: Context) -> Json:
    return {"idTokenInfo": dict(_ACCEPTED)}


def transaction_event_201(payload: Json, ctx: Context) -> Json:
    # idTokenInfo only when the CP sent an idToken (OCPP 2.0.1 E01-E04).
    return {"idTokenInfo": dict(_ACCEPTED)} if payload.get("idToken") else {}


HANDLERS: dict[str, dict[str, Handler]] = {
    "2.0.1": {
        "BootNotification": boot_notification,
        "Heartbeat": heartbeat,
        "StatusNotification": empty,
        "Authorize": authorize_201,
        "TransactionEvent": transaction_event_201,
        "MeterValues": empty,
    },
    "1.6": {
        "BootNotification": boot_notification,
        "Heartbeat": heartbeat,
        "StatusNotification": empty,
        "Authorize": authorize_16,
        "StartTransaction": start_transaction_16,
        "StopTransaction": stop_transaction_16,
        "MeterValues": empty,
    },
}


def boot_shadow_document(payload: Json, version: str) -> Json:
    """The ``state.reported`` document for a BootNotification payload."""
    if version != "1.6":
        return dict(payload)
    station: Json = {
        "vendorName": payload.get("chargePointVendor"),
        "model": payload.get("chargePointModel"),
        "serialNumber": payload.get("chargePointSerialNumber"),
        "firmwareVersion": payload.get("firmwareVersion"),
        "chargeBoxSerialNumber": payload.get("chargeBoxSerialNumber"),
        "meterType": payload.get("meterType"),
        "meterSerialNumber": payload.get("meterSerialNumber"),
    }
    modem = {k: payload[k] for k in ("iccid", "imsi") if k in payload}
    if modem:
        station["modem"] = modem
    return {"chargingStation": {k: v for k, v in station.items() if v is not None}}
