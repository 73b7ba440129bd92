"""The charge point's life: connect, boot, heartbeats, transactions, reboots.

The only module here with I/O besides :mod:`.link`.  Each connection is one nursery: the
link's reader, the transactions and the messages a command asked for all live in it, so a
reboot or the end of the run cancels them together.  Every wait is bounded: CALLs by the
link's timeout, a reboot's wait for the transactions to end by ``3 * call_timeout``.
"""

from __future__ import annotations

import logging
import math
import ssl
from dataclasses import dataclass

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from gateway.chargepoint import open_client_websocket
from gateway.credentials import basic_auth_header

from .link import Link
from .messages import Identity, kwh
from .station import (
    Answer,
    Effect,
    Reboot,
    RunTransaction,
    SendStatus,
    Station,
    StopTransaction,
    Trigger,
)
from .v16 import V16
from .v201 import V201

log = logging.getLogger("simulate")


@dataclass(frozen=True)
class SimulatorConfig:
    url: str
    cp_id: str
    version: str = "2.0.1"
    identity: Identity = Identity("ACME", "CHARGE-MODEL-1", "SN-0001", "1.0.0")
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None
    heartbeats: int | None = None
    connectors: int = 1
    meter_interval: float = 10.0
    power_kw: float = 11.0
    call_timeout: float = 30.0
    status_at_boot: bool = False
    log_frames: bool = True


class Simulator:
    """One simulated charge point; ``await Simulator(config).run()`` returns an exit status."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.protocol: V16 | V201 = V16() if config.version == "1.6" else V201()
        self.station = Station.create(
            connectors=config.connectors,
            power_w=config.power_kw * 1000,
            settings={
                "heartbeat_interval": 60.0,
                "meter_interval": config.meter_interval,
                "authorize_remote_start": False,
                "connection_timeout": 60.0,
                "measurands": "Energy.Active.Import.Register",
                "feature_profiles": "Core,RemoteTrigger",
                "identity": config.cp_id,
            },
        )
        self._link: Link | None = None
        self._nursery: trio.Nursery | None = None
        self._stops: dict[int, trio.Event] = {}
        self._ended: dict[int, trio.Event] = {}
        self._rebooting = False

    def _say(self, text: str) -> None:
        log.info("%s: %s", self.config.cp_id, text)

    async def run(self) -> int:
        cp_id = self.config.cp_id
        reason = "PowerUp"
        try:
            while True:
                status = await self._connection(reason)
                if status is not None:
                    return status
                reason = "RemoteReset"
                self._say("rebooting: reconnecting")
        except ConnectionClosed as exc:
            code, why = (exc.reason.code, exc.reason.reason) if exc.reason else (None, None)
            log.error(
                "%s: connection closed by central system: code %s, reason %r", cp_id, code, why
            )
        except ConnectionRejected as exc:
            log.error("%s: connection rejected by central system: HTTP %s", cp_id, exc.status_code)
        except HandshakeError as exc:
            log.error("%s: WebSocket handshake failed: %s", cp_id, exc)
        except OSError as exc:
            log.error("%s: cannot connect to %s: %s", cp_id, self.config.url, exc)
        return 1

    async def _connection(self, reason: str) -> int | None:
        """One connection: an exit status, or None when a reboot asks for another."""
        config = self.config
        headers = (
            [basic_auth_header(config.cp_id, config.password)]
            if config.password is not None
            else None
        )
        async with open_client_websocket(
            f"{config.url.rstrip('/')}/{config.cp_id}",
            subprotocols=[self.protocol.subprotocol],
            extra_headers=headers,
            ssl_context=config.ssl_context,
            connect_timeout=config.call_timeout,
        ) as ws:
            self._link = Link(
                ws,
                cp_id=config.cp_id,
                version=self.protocol.version,
                call_timeout=config.call_timeout,
                frame_level=logging.INFO if config.log_frames else logging.DEBUG,
            )
            self._rebooting = False
            status: int | None = None
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._link.serve, self._handle, self._after)
                    status = await self._operate(reason)  # cancelled by a reboot
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # The reader and a sender both see the same closed connection: report it once.
                closed = group.subgroup(ConnectionClosed)
                if closed is None:
                    raise
                first: BaseException = closed
                while isinstance(first, BaseExceptionGroup):
                    first = first.exceptions[0]
                raise first from None
            finally:
                self._nursery = None
                self._stops.clear()
                self._ended.clear()
            return status

    async def _operate(self, reason: str) -> int:
        assert self._link is not None
        result = await self._link.call(*self.protocol.boot(self.config.identity, reason))
        if result is None:
            log.error("%s: BootNotification not answered", self.config.cp_id)
            return 1
        self._say("connected to central system")
        if result.get("status") != "Accepted":
            log.error("%s: BootNotification not accepted: %s", self.config.cp_id, result)
            return 1
        interval = int(result["interval"])
        self.station.settings.set("heartbeat_interval", float(interval))
        self._say(f"heartbeat interval set to {interval}")
        if self.config.status_at_boot:
            for connector in self.station.connectors:
                await self._link.call(*self.protocol.status(self.station, connector))
        sent = 0
        while self.config.heartbeats is None or sent < self.config.heartbeats:
            interval = self.station.settings["heartbeat_interval"]
            await trio.sleep(interval if interval > 0 else math.inf)
            await self._link.call("Heartbeat", {})
            sent += 1
        return 0

    # --- commands from the central system ---

    def _handle(self, action: str, payload: dict[str, object]) -> Answer:
        return self.protocol.handle(self.station, action, dict(payload), trio.current_time())

    def _after(self, answer: Answer) -> None:
        self._apply(answer.effects)

    def _apply(self, effects: tuple[Effect, ...]) -> None:
        nursery = self._nursery
        if nursery is None:
            return
        for effect in effects:
            if isinstance(effect, RunTransaction):
                self._stops[effect.connector] = trio.Event()
                self._ended[effect.connector] = trio.Event()
                nursery.start_soon(self._transaction, effect.connector)
            elif isinstance(effect, StopTransaction):
                if effect.connector in self._stops:
                    self._stops[effect.connector].set()
            elif isinstance(effect, SendStatus):
                nursery.start_soon(self._send_status, [effect.connector])
            elif isinstance(effect, Trigger):
                nursery.start_soon(self._trigger, effect)
            elif isinstance(effect, Reboot) and not self._rebooting:
                self._rebooting = True
                nursery.start_soon(self._reboot, effect.stop_reason)

    async def _send_status(self, connectors: list[int]) -> None:
        assert self._link is not None
        for connector in connectors:
            await self._link.call(*self.protocol.status(self.station, connector))

    async def _trigger(self, trigger: Trigger) -> None:
        assert self._link is not None
        connectors = [trigger.connector] if trigger.connector else list(self.station.connectors)
        if trigger.message == "BootNotification":
            result = await self._link.call(*self.protocol.boot(self.config.identity, "Triggered"))
            if result is not None and result.get("status") == "Accepted":
                self.station.settings.set("heartbeat_interval", float(result["interval"]))
        elif trigger.message == "Heartbeat":
            await self._link.call("Heartbeat", {})
        elif trigger.message == "StatusNotification":
            await self._send_status(connectors)
        elif trigger.message == "MeterValues":
            for connector in connectors:
                now = trio.current_time()
                await self._link.call(*self.protocol.meter_values(self.station, connector, now))

    async def _reboot(self, stop_reason: str) -> None:
        """End every transaction (bounded), then leave the connection for a new one."""
        for tx in list(self.station.transactions()):
            self._apply(self.station.request_stop(tx, stop_reason))
        with trio.move_on_after(3 * self.config.call_timeout):
            for ended in list(self._ended.values()):
                await ended.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # --- a transaction ---

    async def _transaction(self, connector: int) -> None:
        assert self._link is not None
        station, protocol, call = self.station, self.protocol, self._link.call
        tx = station.connectors[connector].transaction
        assert tx is not None
        stop, ended = self._stops[connector], self._ended[connector]
        place = f"{protocol.place} {connector}"
        try:
            problem = await protocol.start(call, station, tx, trio.current_time())
            if problem is not None:
                self._say(f"transaction not started on {place}: {problem}")
                self._apply(station.end(connector, trio.current_time()))
                return
            self._say(f"transaction {tx.transaction_id} started on {place}")
            await call(*protocol.status(station, connector))
            while tx.stop_reason is None:
                interval = station.settings["meter_interval"]
                with trio.move_on_after(interval if interval > 0 else math.inf):
                    await stop.wait()
                if tx.stop_reason is None:
                    await protocol.update(call, station, tx, trio.current_time())
                    energy = station.meter(connector, trio.current_time()) - tx.meter_start_wh
                    self._say(f"meter {kwh(energy)} (transaction {tx.transaction_id})")
            now = trio.current_time()
            await protocol.finish(call, station, tx, now)
            energy = station.meter(connector, now) - tx.meter_start_wh
            self._say(f"transaction {tx.transaction_id} ended ({tx.stop_reason}), {kwh(energy)}")
            self._apply(station.end(connector, trio.current_time()))
        finally:
            ended.set()
