"""The charge points connected to this process: one :class:`ChargePointSession` each, by CP id.

A newer connection of a CP takes the id over: the older one is closed with
1000 first (:meth:`LocalSessions.claim`).  The registry of sessions is what
the drain, the registry watch (:mod:`.revocation`) and the call time-outs
(:mod:`.calls`) reach a live connection through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from .errors import CLOSE_NORMAL, clip_reason
from .identity import ChargePointIdentity
from .lifecycle import Lifecycle
from .mqtt_link import MqttLink

log = logging.getLogger(__name__)

REPLACED_REASON = "Replaced by a newer connection of this charge point"


@dataclass
class Ending:
    """How a bridged connection ends: the first cause recorded wins."""

    code: int | None = None
    reason: str = ""

    def set(self, code: int, reason: str) -> None:
        if self.code is None:
            self.code, self.reason = code, clip_reason(reason)


@dataclass(eq=False)
class ChargePointSession:
    """One admitted connection, shared by its handler task and whoever must end it."""

    identity: ChargePointIdentity
    subprotocol: str
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    link: MqttLink | None = None  # while bridged
    # What it was admitted with (see admission.credential_fingerprint).
    credentials: tuple[str, str] = ("", "")
    arrived: float = 0.0  # trio.current_time() when its upgrade request was read
    ending: Ending = field(default_factory=Ending)
    finished: trio.Event = field(default_factory=trio.Event)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)  # moved by its handler task only
    ws: Any = None  # its WebSocket while connected (the keepalive pings it)
    ping_due: float = 0.0  # when :mod:`.keepalive` pings it next

    def replace(self) -> None:
        self.end(CLOSE_NORMAL, REPLACED_REASON)

    def end(self, code: int, reason: str) -> None:
        self.ending.set(code, reason)
        self.cancel_scope.cancel()


class LocalSessions:
    """The charge points connected to this process, by CP id."""

    def __init__(self) -> None:
        self._by_id: dict[str, ChargePointSession] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, cp_id: str) -> bool:
        return cp_id in self._by_id

    async def claim(self, session: ChargePointSession, *, timeout: float = 5.0) -> bool:
        """Make ``session`` the CP's connection, closing an older one first.

        "Older" is by arrival: a connection whose checks took longer (a
        registry look-up, a password hash) must not replace one that arrived
        after it and is already bridged.  False: ``session`` lost that race.
        """
        old = self._by_id.get(session.identity.cp_id)
        if old is not None and old.arrived > session.arrived:
            return False
        self._by_id[session.identity.cp_id] = session
        if old is not None:
            log.info("%s: new connection replaces the existing one", session.identity.cp_id)
            old.replace()
            with trio.move_on_after(timeout):
                await old.finished.wait()
        return True

    def get(self, cp_id: str) -> ChargePointSession | None:
        return self._by_id.get(cp_id)

    def all(self) -> list[ChargePointSession]:
        return list(self._by_id.values())

    def release(self, session: ChargePointSession) -> None:
        if self._by_id.get(session.identity.cp_id) is session:
            del self._by_id[session.identity.cp_id]
