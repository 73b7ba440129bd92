"""Which OCPP actions exist, and which of them a charge point sends (pure).

Every action with a request schema in the ``ocpp`` package exists
(:func:`known_actions`); the package does not say who sends it, so the
charge-point-initiated ones are listed here from the specifications (OCPP 1.6
edition 2 with its security whitepaper, OCPP 2.0.1 part 2).  DataTransfer goes
both ways.  A CALL of any other known action travels the wrong way: it is
answered ``NotSupported``; an action that does not exist ``NotImplemented``.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

CP_INITIATED: Final[dict[str, frozenset[str]]] = {
    "1.6": frozenset(
        {
            "Authorize",
            "BootNotification",
            "DataTransfer",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "Heartbeat",
            "MeterValues",
            "StartTransaction",
            "StatusNotification",
            "StopTransaction",
            # The security extension (OCPP 1.6 security whitepaper).
            "LogStatusNotification",
            "SecurityEventNotification",
            "SignCertificate",
            "SignedFirmwareStatusNotification",
        }
    ),
    "2.0.1": frozenset(
        {
            "Authorize",
            "BootNotification",
            "ClearedChargingLimit",
            "DataTransfer",
            "FirmwareStatusNotification",
            "Get15118EVCertificate",
            "GetCertificateStatus",
            "Heartbeat",
            "LogStatusNotification",
            "MeterValues",
            "NotifyChargingLimit",
            "NotifyCustomerInformation",
            "NotifyDisplayMessages",
            "NotifyEVChargingNeeds",
            "NotifyEVChargingSchedule",
            "NotifyEvent",
            "NotifyMonitoringReport",
            "NotifyReport",
            "PublishFirmwareStatusNotification",
            "ReportChargingProfiles",
            "ReservationStatusUpdate",
            "SecurityEventNotification",
            "SignCertificate",
            "StatusNotification",
            "TransactionEvent",
        }
    ),
}

_SCHEMA_DIRS: Final = {"1.6": "v16", "2.0.1": "v201"}


@functools.cache
def known_actions(version: str) -> frozenset[str]:
    """Every action of ``version`` that has a request schema in the ``ocpp`` package."""
    folder = resources.files("ocpp").joinpath(_SCHEMA_DIRS[version], "schemas")
    names = {entry.name.removesuffix(".json") for entry in folder.iterdir()}
    if version == "1.6":  # 1.6: Action.json and ActionResponse.json
        return frozenset(n for n in names if not n.endswith("Response"))
    return frozenset(n.removesuffix("Request") for n in names if n.endswith("Request"))


def cp_initiated(version: str) -> frozenset[str]:
    """The actions a charge point of ``version`` sends to the CSMS."""
    return CP_INITIATED[version]
