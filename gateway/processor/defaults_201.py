"""The default answers to every CALL an OCPP 2.0.1 charge point sends.

Notifications are acknowledged; id tokens are decided by the context's
authorizer; what needs a service this project does not have (a CA to sign
certificates, ISO 15118 certificate services, a vendor's DataTransfer) is
declined the way the specification allows.  A CPO replaces any of them with
``@handler("2.0.1", ...)`` in their own module (see docs/processor.md).
"""

from __future__ import annotations

from .authorization import Authorization, id_token_info
from .handlers import Call, Json, handler

# statusInfo.reasonCode is at most 20 characters.
_NO_CA = {"reasonCode": "NoCA", "additionalInfo": "No certificate authority is configured"}
_NO_PKI = {
    "reasonCode": "NotSupported",
    "additionalInfo": "This CSMS has no ISO 15118 certificate services",
}


async def _id_token_info(call: Call, id_token: Json) -> Json:
    if id_token["type"] == "NoAuthorization":
        # The station charges without identification (free vending): nothing to look up.
        return id_token_info(Authorization("Accepted"))
    decision = await call.context.authorizer.authorize(
        call.cp_id, id_token["idToken"], id_token["type"]
    )
    return id_token_info(decision)


@handler("2.0.1", "Heartbeat")
async def heartbeat(call: Call) -> Json:
    return {"currentTime": call.context.now()}


@handler("2.0.1", "Authorize")
async def authorize(call: Call) -> Json:
    return {"idTokenInfo": await _id_token_info(call, call.payload["idToken"])}


@handler("2.0.1", "TransactionEvent")
async def transaction_event(call: Call) -> Json:
    # idTokenInfo only when the CP sent an idToken (OCPP 2.0.1 E01-E04).
    id_token = call.payload.get("idToken")
    return {"idTokenInfo": await _id_token_info(call, id_token)} if id_token else {}


@handler("2.0.1", "DataTransfer")
async def data_transfer(call: Call) -> Json:
    return {"status": "UnknownVendorId"}


@handler("2.0.1", "SignCertificate")
async def sign_certificate(call: Call) -> Json:
    return {"status": "Rejected", "statusInfo": dict(_NO_CA)}


@handler("2.0.1", "Get15118EVCertificate")
async def get_15118_ev_certificate(call: Call) -> Json:
    return {"status": "Failed", "exiResponse": "", "statusInfo": dict(_NO_PKI)}


@handler("2.0.1", "GetCertificateStatus")
async def get_certificate_status(call: Call) -> Json:
    return {"status": "Failed", "statusInfo": dict(_NO_PKI)}


@handler("2.0.1", "NotifyEVChargingNeeds")
@handler("2.0.1", "NotifyEVChargingSchedule")
async def accept(call: Call) -> Json:
    return {"status": "Accepted"}


@handler("2.0.1", "StatusNotification")
@handler("2.0.1", "MeterValues")
@handler("2.0.1", "ClearedChargingLimit")
@handler("2.0.1", "FirmwareStatusNotification")
@handler("2.0.1", "LogStatusNotification")
@handler("2.0.1", "NotifyChargingLimit")
@handler("2.0.1", "NotifyCustomerInformation")
@handler("2.0.1", "NotifyDisplayMessages")
@handler("2.0.1", "NotifyEvent")
@handler("2.0.1", "NotifyMonitoringReport")
@handler("2.0.1", "NotifyReport")
@handler("2.0.1", "PublishFirmwareStatusNotification")
@handler("2.0.1", "ReportChargingProfiles")
@handler("2.0.1", "ReservationStatusUpdate")
@handler("2.0.1", "SecurityEventNotification")
async def acknowledge(call: Call) -> Json:
    """A notification: its response is empty."""
    return {}
