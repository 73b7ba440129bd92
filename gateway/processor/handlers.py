"""What the CPO's message processor answers to each OCPP CALL (pure).

Each handler takes the CALL's payload and a :class:`Context` and returns the
CALLRESULT payload.  BootNotification also yields the document that goes
into the charge point's device shadow as ``state.reported``; OCPP 1.6 boot
attributes are mapped to the 2.0.1 shape (``chargingStation.vendorName``...)
so that every shadow looks the same whatever the charge point speaks.

:class:`RecentAnswers` remembers the answers to the last CALLs, so that a
CALL delivered again (the processor takes each at least once) gets the
answer it got the first time instead of being handled twice.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]


def utc_now() -> str:
    """ISO 8601 with an explicit UTC offset, as OCPP requires for currentTime."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Context:
    heartbeat_interval: int  # the option's default lives in gateway/config.py
    now: Callable[[], str] = utc_now
    # Transaction ids: seeded from the clock so a restarted processor does not reuse recent ones.
    transaction_ids: itertools.count[int] = field(
        default_factory=lambda: itertools.count(int(time.time()) % 1_000_000_000)
    )


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


# A CALL seen again within this window (and among this many answers) gets the answer it got before.
# One minute: a redelivery is only useful within the gateway's --call-timeout (30 s), and a charger that
# restarts its message ids must not get a stale answer (a Heartbeat's currentTime) for long.
RECENT_ANSWERS = 10_000
RECENT_ANSWER_TTL = 60.0

CallKey = tuple[str, str, bytes]


def call_key(cp_id: str, message_id: str, frame: bytes) -> CallKey:
    """What makes a CALL the same CALL again: its CP, its message id and its exact bytes.

    A redelivery (and a CP's own retry) repeats the frame byte for byte;
    the bytes are in the key because some charge points restart counting
    message ids when they reconnect, and a new CALL with an old id must be
    handled, not answered from the cache.
    """
    return cp_id, message_id, hashlib.blake2b(frame, digest_size=16).digest()


@dataclass
class RecentAnswers:
    """The answers to the last ``capacity`` CALLs of the last ``ttl`` seconds (pure: the caller passes the clock).

    Entries expire in the order they were made (a hit does not extend one),
    so both bounds evict from the oldest end.  Memory: ``capacity``
    answers, each an OCPP-J frame the processor built (CALLERRORs are capped
    below 4 KB; CALLRESULTs are a few hundred bytes).
    """

    capacity: int = RECENT_ANSWERS
    ttl: float = RECENT_ANSWER_TTL
    _answers: OrderedDict[CallKey, tuple[float, str]] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: CallKey, now: float) -> str | None:
        """The answer given to this CALL, if it is recent enough."""
        entry = self._answers.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._answers[key]
            return None
        return entry[1]

    def put(self, key: CallKey, answer: str, now: float) -> None:
        self._answers.pop(key, None)
        self._answers[key] = (now + self.ttl, answer)
        while self._answers:
            oldest = next(iter(self._answers.values()))
            if len(self._answers) <= self.capacity and oldest[0] > now:
                break
            self._answers.popitem(last=False)
