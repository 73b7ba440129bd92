"""The default answers to every CALL an OCPP 1.6 charge point sends (core and security extension).

Notifications are acknowledged; id tags are decided by the context's
authorizer; what needs a service this project does not have (a CA to sign
certificates, a vendor's DataTransfer) is declined the way the specification
allows.  A CPO replaces any of them with ``@handler("1.6", ...)`` in their
own module (see docs/processor.md).
"""

from __future__ import annotations

from .authorization import id_tag_info
from .handlers import Call, Json, handler


@handler("1.6", "Heartbeat")
async def heartbeat(call: Call) -> Json:
    return {"currentTime": call.context.now()}


@handler("1.6", "Authorize")
async def authorize(call: Call) -> Json:
    decision = await call.context.authorizer.authorize(call.cp_id, call.payload["idTag"], None)
    return {"idTagInfo": id_tag_info(decision)}


@handler("1.6", "StartTransaction")
async def start_transaction(call: Call) -> Json:
    # A transaction id even when the tag is refused: the CP then stops it itself (OCPP 1.6 5.18).
    decision = await call.context.authorizer.authorize(call.cp_id, call.payload["idTag"], None)
    return {"transactionId": next(call.context.transaction_ids), "idTagInfo": id_tag_info(decision)}


@handler("1.6", "StopTransaction")
async def stop_transaction(call: Call) -> Json:
    id_tag = call.payload.get("idTag")
    if not id_tag:
        return {}
    decision = await call.context.authorizer.authorize(call.cp_id, id_tag, None)
    return {"idTagInfo": id_tag_info(decision)}


@handler("1.6", "DataTransfer")
async def data_transfer(call: Call) -> Json:
    return {"status": "UnknownVendorId"}


@handler("1.6", "SignCertificate")
async def sign_certificate(call: Call) -> Json:
    # No CA is configured: the processor says so once at start-up (see Processor).
    return {"status": "Rejected"}


@handler("1.6", "StatusNotification")
@handler("1.6", "MeterValues")
@handler("1.6", "DiagnosticsStatusNotification")
@handler("1.6", "FirmwareStatusNotification")
@handler("1.6", "LogStatusNotification")
@handler("1.6", "SecurityEventNotification")
@handler("1.6", "SignedFirmwareStatusNotification")
async def acknowledge(call: Call) -> Json:
    """A notification: its response is empty."""
    return {}
