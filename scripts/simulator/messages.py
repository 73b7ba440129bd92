"""What both versions' modules share: the boot identity, a message type, ISO timestamps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Message = tuple[str, dict[str, Any]]
"""An OCPP CALL to send: (action, payload)."""

CallFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Sends a CALL; the CALLRESULT payload, or None when the CSMS answered a CALLERROR or nothing."""

ENERGY = "Energy.Active.Import.Register"


@dataclass(frozen=True)
class Identity:
    """What BootNotification says about the charge point."""

    vendor: str
    model: str
    serial: str
    firmware: str


def timestamp() -> str:
    """Now, as OCPP writes it (UTC, milliseconds, Z)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def kwh(wh: float) -> str:
    return f"{wh / 1000:.2f} kWh"
