"""BootNotification, both versions: accepted, and its attributes kept in the device shadow.

OCPP 1.6 boot attributes are mapped to the 2.0.1 shape
(``chargingStation.vendorName``...) so that every shadow looks the same
whatever the charge point speaks.
"""

from __future__ import annotations

from .handlers import Call, Json, handler


def boot_shadow_document(payload: Json, version: str) -> Json:
    """The ``state.reported`` document for a BootNotification payload (pure)."""
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


@handler("1.6", "BootNotification")
@handler("2.0.1", "BootNotification")
async def boot_notification(call: Call) -> Json:
    ctx = call.context
    await ctx.update_shadow(call.cp_id, boot_shadow_document(call.payload, call.version))
    return {"currentTime": ctx.now(), "interval": ctx.heartbeat_interval, "status": "Accepted"}
