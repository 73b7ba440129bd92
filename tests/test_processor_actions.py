"""Every CALL a charge point can send gets a schema-valid answer, end to end.

One CP per OCPP version walks every charge-point-initiated action in turn,
through the real gateway, MQTT broker and processor; each answer is
validated against the action's response schema with the ``ocpp`` package.
The payload table below must cover every CP-initiated action, and the
direction table (gateway/processor/actions.py) every action the ``ocpp``
package has a schema for: a new ``ocpp`` release with a new action fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
from ocpp.messages import CallResult, validate_payload

from gateway.app import RunningGateway
from gateway.chargepoint import CallErrorReceived, connect
from gateway.processor.actions import CP_INITIATED, known_actions

TS = "2024-01-01T00:00:00+00:00"
TOKEN_201 = {"idToken": "T1", "type": "ISO14443"}
SCHEDULE_201 = {
    "id": 1,
    "chargingRateUnit": "W",
    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}],
}

# A minimal valid request per CP-initiated action.
REQUESTS: dict[str, dict[str, dict[str, Any]]] = {
    "1.6": {
        "BootNotification": {"chargePointVendor": "V", "chargePointModel": "M"},
        "Heartbeat": {},
        "Authorize": {"idTag": "T1"},
        "StartTransaction": {"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": TS},
        "StopTransaction": {"transactionId": 1, "idTag": "T1", "meterStop": 10, "timestamp": TS},
        "StatusNotification": {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
        "MeterValues": {
            "connectorId": 1,
            "meterValue": [{"timestamp": TS, "sampledValue": [{"value": "1"}]}],
        },
        "DataTransfer": {"vendorId": "acme"},
        "DiagnosticsStatusNotification": {"status": "Idle"},
        "FirmwareStatusNotification": {"status": "Idle"},
        "LogStatusNotification": {"status": "Idle"},
        "SecurityEventNotification": {"type": "StartupOfTheDevice", "timestamp": TS},
        "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----"},
        "SignedFirmwareStatusNotification": {"status": "Idle"},
    },
    "2.0.1": {
        "BootNotification": {
            "reason": "PowerUp",
            "chargingStation": {"model": "M", "vendorName": "V"},
        },
        "Heartbeat": {},
        "Authorize": {"idToken": TOKEN_201},
        "TransactionEvent": {
            "eventType": "Started",
            "timestamp": TS,
            "triggerReason": "Authorized",
            "seqNo": 0,
            "transactionInfo": {"transactionId": "tx1"},
            "idToken": TOKEN_201,
        },
        "StatusNotification": {
            "timestamp": TS,
            "connectorStatus": "Available",
            "evseId": 1,
            "connectorId": 1,
        },
        "MeterValues": {
            "evseId": 1,
            "meterValue": [{"timestamp": TS, "sampledValue": [{"value": 1.0}]}],
        },
        "ClearedChargingLimit": {"chargingLimitSource": "EMS"},
        "DataTransfer": {"vendorId": "acme"},
        "FirmwareStatusNotification": {"status": "Idle"},
        "Get15118EVCertificate": {
            "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
            "action": "Install",
            "exiRequest": "AA==",
        },
        "GetCertificateStatus": {
            "ocspRequestData": {
                "hashAlgorithm": "SHA256",
                "issuerNameHash": "a",
                "issuerKeyHash": "b",
                "serialNumber": "c",
                "responderURL": "http://ocsp.example",
            }
        },
        "LogStatusNotification": {"status": "Idle"},
        "NotifyChargingLimit": {"chargingLimit": {"chargingLimitSource": "EMS"}},
        "NotifyCustomerInformation": {"data": "x", "seqNo": 0, "generatedAt": TS, "requestId": 1},
        "NotifyDisplayMessages": {"requestId": 1},
        "NotifyEVChargingNeeds": {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "DC"}},
        "NotifyEVChargingSchedule": {"timeBase": TS, "evseId": 1, "chargingSchedule": SCHEDULE_201},
        "NotifyEvent": {
            "generatedAt": TS,
            "seqNo": 0,
            "eventData": [
                {
                    "eventId": 1,
                    "timestamp": TS,
                    "trigger": "Alerting",
                    "actualValue": "1",
                    "eventNotificationType": "HardWiredNotification",
                    "component": {"name": "C"},
                    "variable": {"name": "V"},
                }
            ],
        },
        "NotifyMonitoringReport": {"requestId": 1, "seqNo": 0, "generatedAt": TS},
        "NotifyReport": {"requestId": 1, "generatedAt": TS, "seqNo": 0},
        "PublishFirmwareStatusNotification": {"status": "Idle"},
        "ReportChargingProfiles": {
            "requestId": 1,
            "chargingLimitSource": "CSO",
            "evseId": 1,
            "chargingProfile": [
                {
                    "id": 1,
                    "stackLevel": 0,
                    "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Absolute",
                    "chargingSchedule": [SCHEDULE_201],
                }
            ],
        },
        "ReservationStatusUpdate": {"reservationId": 1, "reservationUpdateStatus": "Expired"},
        "SecurityEventNotification": {"type": "StartupOfTheDevice", "timestamp": TS},
        "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----"},
    },
}

# What the defaults answer where the answer is a decision, not just an acknowledgement.
EXPECTED: dict[str, dict[str, Callable[[dict[str, Any]], bool]]] = {
    "1.6": {
        "Authorize": lambda r: r["idTagInfo"]["status"] == "Accepted",
        "StartTransaction": lambda r: isinstance(r["transactionId"], int),
        "DataTransfer": lambda r: r == {"status": "UnknownVendorId"},
        "SignCertificate": lambda r: r == {"status": "Rejected"},
        "StatusNotification": lambda r: r == {},
    },
    "2.0.1": {
        "TransactionEvent": lambda r: r["idTokenInfo"]["status"] == "Accepted",
        "DataTransfer": lambda r: r == {"status": "UnknownVendorId"},
        "SignCertificate": lambda r: r["status"] == "Rejected",
        "Get15118EVCertificate": lambda r: r["status"] == "Failed" and "statusInfo" in r,
        "GetCertificateStatus": lambda r: r["status"] == "Failed" and "statusInfo" in r,
        "NotifyEvent": lambda r: r == {},
    },
}

SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_the_tables_cover_every_action_of_the_ocpp_package(version: str) -> None:
    # Every CP-initiated action exists in the package, and has a request in the table.
    assert CP_INITIATED[version] <= known_actions(version)
    assert set(REQUESTS[version]) == set(CP_INITIATED[version])
    # The package's own list: a new action must be sorted into a direction before it is answered.
    assert len(known_actions(version)) == {"1.6": 39, "2.0.1": 64}[version], (
        "the ocpp package has a new action: add it to CP_INITIATED if a charge point sends it"
    )


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_every_cp_initiated_action_gets_a_schema_valid_answer(
    gateway: RunningGateway, register: Callable[..., None], version: str
) -> None:
    cp_id = f"CP-ALL-{version.replace('.', '')}"
    register(cp_id)
    answered: dict[str, dict[str, Any]] = {}
    async with connect(gateway.url, cp_id, subprotocols=[SUBPROTOCOL[version]]) as cp:
        assert cp.version == version
        with trio.fail_after(60):
            for action, request in REQUESTS[version].items():
                try:
                    answered[action] = await cp.call(action, request, timeout=10)
                except CallErrorReceived as exc:
                    pytest.fail(f"{version} {action} answered with a CALLERROR: {exc.args}")
    for action, response in answered.items():
        await validate_payload(CallResult("x", response, action), version)
        check = EXPECTED[version].get(action)
        assert check is None or check(response), (action, response)
    assert set(answered) == set(CP_INITIATED[version])


@pytest.mark.parametrize(
    ("version", "action", "code"),
    [
        ("1.6", "RemoteStartTransaction", "NotSupported"),
        ("2.0.1", "RequestStartTransaction", "NotSupported"),
        ("2.0.1", "MakeCoffee", "NotImplemented"),
    ],
)
async def test_other_direction_and_unknown_actions_end_to_end(
    gateway: RunningGateway, register: Callable[..., None], version: str, action: str, code: str
) -> None:
    cp_id = f"CP-DIR-{version.replace('.', '')}"
    register(cp_id)
    async with connect(gateway.url, cp_id, subprotocols=[SUBPROTOCOL[version]]) as cp:
        await cp.send_text(f'[2,"m1","{action}",{{}}]')
        with trio.fail_after(10):
            frame = await cp.receive_text()
    assert frame.startswith(f'[4,"m1","{code}"') or frame.startswith(f'[4, "m1", "{code}"'), frame
