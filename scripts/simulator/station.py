"""The simulated charge point's state, without I/O: connectors, availability, meters, settings.

Version-neutral: :mod:`.v16` and :mod:`.v201` read and change it when the central system
asks, and return :class:`Answer` objects whose ``effects`` the runner carries out *after*
the answer is on the wire (a transaction to run, a message to send, a reboot).  Times are
plain floats from the caller's clock (``trio.current_time()`` in the runner), so every
rule here is testable without a socket or a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# --- settings: one store, named per version (1.6 configuration keys, 2.0.1 variables) ---


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"not a boolean: {text!r}")
    return lowered == "true"


def _parse_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"not a number of seconds: {text!r}")
    return value


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Setting:
    """One configuration item: its names in 1.6 and 2.0.1, its parser, whether it is read-only."""

    name: str
    parse: Callable[[str], Any]
    readonly: bool = False
    v16_key: str | None = None
    v201_variable: tuple[str, str] | None = None  # (component, variable)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "heartbeat_interval",
        _parse_seconds,
        v16_key="HeartbeatInterval",
        v201_variable=("OCPPCommCtrlr", "HeartbeatInterval"),
    ),
    Setting(
        "meter_interval",
        _parse_seconds,
        v16_key="MeterValueSampleInterval",
        v201_variable=("SampledDataCtrlr", "TxUpdatedInterval"),
    ),
    Setting(
        "authorize_remote_start",
        _parse_bool,
        v16_key="AuthorizeRemoteTxRequests",
        v201_variable=("AuthCtrlr", "AuthorizeRemoteStart"),
    ),
    Setting(
        "connection_timeout",
        _parse_seconds,
        v16_key="ConnectionTimeOut",
        v201_variable=("TxCtrlr", "EVConnectionTimeOut"),
    ),
    Setting(
        "measurands",
        str,
        readonly=True,
        v16_key="MeterValuesSampledData",
        v201_variable=("SampledDataCtrlr", "TxUpdatedMeasurands"),
    ),
    Setting("number_of_connectors", int, readonly=True, v16_key="NumberOfConnectors"),
    Setting("feature_profiles", str, readonly=True, v16_key="SupportedFeatureProfiles"),
    Setting("identity", str, readonly=True, v201_variable=("SecurityCtrlr", "Identity")),
)
SETTINGS_BY_V16_KEY = {s.v16_key: s for s in SETTINGS if s.v16_key}
SETTINGS_BY_V201_VARIABLE = {s.v201_variable: s for s in SETTINGS if s.v201_variable}
V201_COMPONENTS = frozenset(component for component, _ in SETTINGS_BY_V201_VARIABLE)


class Settings:
    """Current values of :data:`SETTINGS`, kept across reboots like a real charge point's."""

    def __init__(self, values: dict[str, Any]) -> None:
        missing = {s.name for s in SETTINGS} - values.keys()
        if missing:
            raise ValueError(f"settings without a value: {sorted(missing)}")
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def text(self, setting: Setting) -> str:
        return format_value(self._values[setting.name])

    def change(self, setting: Setting, text: str) -> bool:
        """Set from the central system's text; False (nothing changed) if read-only or invalid."""
        if setting.readonly:
            return False
        try:
            self._values[setting.name] = setting.parse(text)
        except ValueError:
            return False
        return True

    def set(self, name: str, value: Any) -> None:
        self._values[name] = value


# --- effects: what the runner does once an answer is sent ---


@dataclass(frozen=True)
class RunTransaction:
    """Run the transaction just begun on ``connector`` (start message, meter values, end)."""

    connector: int


@dataclass(frozen=True)
class StopTransaction:
    """Wake the task running the transaction on ``connector``: it ends it with its stop reason."""

    connector: int


@dataclass(frozen=True)
class SendStatus:
    connector: int


@dataclass(frozen=True)
class Trigger:
    """Send ``message`` (BootNotification, Heartbeat, MeterValues, StatusNotification)."""

    message: str
    connector: int | None = None


@dataclass(frozen=True)
class Reboot:
    """End the transactions with ``stop_reason``, drop the connection, reconnect and boot again."""

    stop_reason: str


Effect = RunTransaction | StopTransaction | SendStatus | Trigger | Reboot


@dataclass(frozen=True)
class Answer:
    """The CALLRESULT payload, what to do once it is sent, and a line for the log."""

    payload: dict[str, Any]
    effects: tuple[Effect, ...] = ()
    note: str | None = None


# --- connectors and transactions ---


@dataclass
class Transaction:
    connector: int
    id_token: str
    token_type: str
    remote_start_id: int | None
    meter_start_wh: float
    transaction_id: str | None = None  # 2.0.1: ours from the start; 1.6: the CSMS's, once known
    seq_no: int = 0
    stop_reason: str | None = None  # set when something asked for the end


@dataclass
class Connector:
    id: int
    operative: bool = True
    scheduled_operative: bool | None = None  # availability change waiting for the transaction's end
    transaction: Transaction | None = None
    register_wh: float = 0.0
    read_at: float = 0.0

    @property
    def status(self) -> str:
        """The 1.6 status word; 2.0.1 maps it (Charging -> Occupied)."""
        if self.transaction is not None:
            return "Charging"
        return "Available" if self.operative else "Unavailable"


@dataclass
class Station:
    """A charge point with ``connectors`` connectors (2.0.1: one EVSE each, connector 1)."""

    connectors: dict[int, Connector]
    settings: Settings
    power_w: float
    reset_scheduled: bool = False
    reset_stop_reason: str = ""
    booted: bool = field(default=False)

    @classmethod
    def create(cls, *, connectors: int, power_w: float, settings: dict[str, Any]) -> Station:
        if connectors < 1:
            raise ValueError("a charge point needs at least one connector")
        values = {"number_of_connectors": connectors, **settings}
        return cls(
            connectors={n: Connector(n) for n in range(1, connectors + 1)},
            settings=Settings(values),
            power_w=power_w,
        )

    def transactions(self) -> Iterator[Transaction]:
        for connector in self.connectors.values():
            if connector.transaction is not None:
                yield connector.transaction

    def meter(self, connector_id: int, now: float) -> float:
        """The connector's energy register (Wh), advanced at ``power_w`` while it charges."""
        connector = self.connectors[connector_id]
        if connector.transaction is not None and now > connector.read_at:
            connector.register_wh += self.power_w * (now - connector.read_at) / 3600
        connector.read_at = now
        return connector.register_wh

    def choose_connector(self, requested: int | None) -> Connector | None:
        """The connector a remote start may use: the requested one, or the first free one."""
        if requested is not None:
            connector = self.connectors.get(requested)
            return connector if connector is not None and self._can_start(connector) else None
        return next((c for c in self.connectors.values() if self._can_start(c)), None)

    def _can_start(self, connector: Connector) -> bool:
        return connector.operative and connector.transaction is None and not self.reset_scheduled

    def begin(
        self,
        connector: Connector,
        *,
        id_token: str,
        token_type: str,
        remote_start_id: int | None,
        transaction_id: str | None,
        now: float,
    ) -> Transaction:
        self.meter(connector.id, now)
        connector.transaction = Transaction(
            connector=connector.id,
            id_token=id_token,
            token_type=token_type,
            remote_start_id=remote_start_id,
            meter_start_wh=connector.register_wh,
            transaction_id=transaction_id,
        )
        connector.read_at = now
        return connector.transaction

    def find(self, transaction_id: str) -> Transaction | None:
        return next((t for t in self.transactions() if t.transaction_id == transaction_id), None)

    def request_stop(self, transaction: Transaction, reason: str) -> tuple[Effect, ...]:
        """Ask for the end of ``transaction``; nothing if its end is already under way."""
        if transaction.stop_reason is not None:
            return ()
        transaction.stop_reason = reason
        return (StopTransaction(transaction.connector),)

    def end(self, connector_id: int, now: float) -> tuple[Effect, ...]:
        """The transaction on ``connector_id`` has ended: apply what waited for it."""
        self.meter(connector_id, now)
        connector = self.connectors[connector_id]
        connector.transaction = None
        if connector.scheduled_operative is not None:
            connector.operative = connector.scheduled_operative
            connector.scheduled_operative = None
        effects: list[Effect] = [SendStatus(connector_id)]
        if self.reset_scheduled and next(self.transactions(), None) is None:
            self.reset_scheduled = False
            effects.append(Reboot(self.reset_stop_reason))
        return tuple(effects)

    def change_availability(self, connector_id: int | None, operative: bool) -> Answer:
        """``connector_id`` None or 0: the whole charge point. Status: Accepted/Scheduled/Rejected."""
        if connector_id in (None, 0):
            targets = list(self.connectors.values())
        elif connector_id in self.connectors:
            targets = [self.connectors[connector_id]]
        else:
            return Answer({"status": "Rejected"})
        scheduled = False
        effects: list[Effect] = []
        for connector in targets:
            if connector.transaction is not None and not operative:
                connector.scheduled_operative = operative
                scheduled = True
            elif connector.operative != operative:
                connector.operative = operative
                connector.scheduled_operative = None
                effects.append(SendStatus(connector.id))
        return Answer({"status": "Scheduled" if scheduled else "Accepted"}, tuple(effects))

    def schedule_reset(self, stop_reason: str) -> None:
        self.reset_scheduled = True
        self.reset_stop_reason = stop_reason
