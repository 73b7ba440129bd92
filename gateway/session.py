"""One charge point's connection: WebSocket in, its own MQTT connection out (the I/O).

What to decide lives in pure modules; this one does what they say:

* :func:`.admission.decide`: who is admitted, and how everyone else is
  answered (close code + reason, or HTTP 401).  It asks for the facts it
  needs one at a time (a registry look-up, a password check, the handshake
  and the reconnect throttle); this module fetches each and asks again.
* :mod:`.lifecycle`: the states a connection goes through (ADMITTING ->
  ACCEPTED -> BRIDGING -> CLOSING/DRAINING -> CLOSED, or REFUSING); every
  move below goes through its transition table.

Once accepted, an older connection of the same charge point on this
gateway is closed (1000) first (:mod:`.local_sessions`); then a paho client
with client id = CP id subscribes to ``<cp-id>/out``, the subprotocol is
recorded in the shadow, and two tasks copy frames verbatim (:mod:`.pumps`).
Whichever side ends first decides the close: the CP leaving disconnects
MQTT cleanly; MQTT ending (broker gone, or a newer connection of this CP
elsewhere took the client id over) closes the WebSocket with 1000 so the CP
reconnects; the gateway never reconnects MQTT by itself, so two connections
of one CP never fight over the client id.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from .admission import (
    SHUTTING_DOWN_REASON,
    Accept,
    AdmissionFacts,
    Challenge,
    CheckPassword,
    Handshake,
    LookUp,
    LookupsExhausted,
    NotRegistered,
    Refuse,
    Registered,
    RegistryAnswer,
    RegistryUnreachable,
    SessionSettings,
    credential_fingerprint,
    decide,
)
from .calls import CallTimeouts, timeout_call_error
from .errors import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    ConnectionRefused,
    MqttBacklogExceeded,
    MqttError,
    RegistryUnavailable,
    only_error,
)
from .identity import ChargePointIdentity
from .keepalive import Keepalive
from .lifecycle import Event, Lifecycle, State
from .local_sessions import REPLACED_REASON, ChargePointSession, LocalSessions
from .logformat import CURRENT_CP
from .mqtt_link import MqttDriver
from .password_check import PasswordChecker
from .pumps import BACKLOG_REASON, FROM_GATEWAY, MQTT_ENDED_REASON, Traffic, bridge
from .ratelimit import KeyThrottle
from .redact import loggable
from .registry import Registry
from .websocket import peer_certificate, peer_host

__all__ = [
    "BACKLOG_REASON",
    "FROM_GATEWAY",
    "MQTT_ENDED_REASON",
    "REPLACED_REASON",
    "Bridge",
    "ChargePointSession",
    "LocalSessions",
    "SessionSettings",
]

log = logging.getLogger(__name__)


@dataclass
class Bridge:
    """Everything a connection handler needs, shared by all connections."""

    driver: MqttDriver
    registry: Registry
    sessions: LocalSessions
    settings: SessionSettings
    draining: bool = False
    connections: int = 0
    refused: int = 0
    throttled: int = 0
    calls_timed_out: int = 0
    pending: int = 0  # connections between the upgrade request and admission
    # (close code, cause) -> connections refused so (:mod:`.metrics`); a few fixed keys only.
    refusals: dict[tuple[int, str], int] = field(default_factory=dict)
    traffic: Traffic = field(default_factory=Traffic)
    calls: CallTimeouts = field(init=False)
    keepalive: Keepalive = field(init=False)
    passwords: PasswordChecker = field(init=False)
    _throttle: KeyThrottle = field(init=False)
    _unknown_lookups: KeyThrottle = field(init=False)
    _throttle_logged: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        settings = self.settings
        self._throttle = KeyThrottle(settings.reconnect_rate, settings.reconnect_burst)
        self._unknown_lookups = KeyThrottle(
            settings.unknown_lookups_rate, settings.unknown_lookups_burst
        )
        self.passwords = PasswordChecker()
        self.calls = CallTimeouts(settings.call_timeout)
        self.keepalive = Keepalive(settings.ping_interval, settings.pong_timeout)

    @property
    def auth_failures(self) -> int:
        """Upgrade requests answered 401."""
        return self.passwords.failures

    @property
    def password_hashes(self) -> int:
        """Slow password checks run (a guess answered while blocked costs none)."""
        return self.passwords.hashes

    # Kept for :mod:`.revocation`: what a CP was admitted with.
    credential_fingerprint = staticmethod(credential_fingerprint)

    async def run_call_timeouts(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer, in the CSMS's place, every CP CALL left unanswered for ``call_timeout`` seconds.

        One task for the whole process (not one per CP): it wakes a few
        times per time-out and hands each CALLERROR to the CP's own
        MQTT -> CP pump, so it is sent in order and never blocks this task.
        """
        task_status.started()
        call_timeout = self.settings.call_timeout
        if call_timeout <= 0:
            return
        while True:
            await trio.sleep(min(1.0, call_timeout / 4))
            for session, message_id in self.calls.expired(trio.current_time()):
                assert isinstance(session, ChargePointSession)
                self.calls_timed_out += 1
                log.warning(
                    "%s: CALL %s not answered by the CSMS within %g s; answered with a CALLERROR",
                    session.identity.cp_id,
                    message_id,
                    call_timeout,
                    extra={"cp_id": session.identity.cp_id},  # this task is the process's
                )
                if session.link is not None:
                    session.link.deliver_local(
                        FROM_GATEWAY, timeout_call_error(message_id, call_timeout).encode()
                    )

    async def handle(self, request: WebSocketRequest, stream: trio.abc.Stream) -> None:
        """The server's handler (:mod:`.websocket`): runs for the whole life of one connection.

        Connections that are not admitted yet (registry look-up, password
        check) have a bound of their own, ``max_pending``, apart from
        ``max_connections``, which counts admitted charge points only: a
        flood of unknown or unauthenticated clients can delay new CPs but never
        takes the place of a connected one.
        """
        lifecycle = Lifecycle()
        path = request.path[:80]
        try:
            admitted = await self._admit(request, stream, lifecycle)
            # What admission looked at (the request and its headers, the facts) is not kept for the
            # connection's whole life: only what _serve needs.
            del request
            if admitted is not None:
                await self._serve(*admitted, lifecycle)
        except ConnectionClosed:
            # The CP went away during the handshake or the refusal.
            if not lifecycle.closed:
                lifecycle.advance(Event.LOST)
        except Exception:
            # Contained here as well as in the server: log it with what we know of the request.
            log.exception("unexpected error handling %s", path)

    async def _admit(
        self, request: WebSocketRequest, stream: trio.abc.Stream, lifecycle: Lifecycle
    ) -> tuple[WebSocketConnection, Accept, float] | None:
        """Admission: the accepted WebSocket, its verdict and arrival time; None once refused."""
        source = peer_host(stream)
        arrived = trio.current_time()
        self.pending += 1
        try:
            facts = AdmissionFacts(
                path=request.path,
                offered=tuple(request.proposed_subprotocols),
                draining=self.draining,
                connections=len(self.sessions),
                pending=self.pending,
                peer_certificate=peer_certificate(stream),
            )
            step = decide(facts, self.settings)
            if isinstance(step, LookUp | CheckPassword | Handshake):
                # The id is valid: this task (the connection's) and its children log it as the
                # cp_id field (--log-format json, gateway/logformat.py).
                CURRENT_CP.set(step.identity.cp_id)
            while isinstance(step, LookUp | CheckPassword):
                if isinstance(step, LookUp):
                    facts = replace(facts, registry=await self._look_up(step.identity, source))
                else:
                    check = await self.passwords.check(
                        request.headers, step.identity, step.attributes, source
                    )
                    facts = replace(facts, password=check)
                step = decide(facts, self.settings)
            if isinstance(step, Refuse):
                await self._refuse(request, lifecycle, step)
                return None
            if isinstance(step, Challenge):  # HTTP 401: no WebSocket at all
                lifecycle.advance(Event.CHALLENGED)
                await request.reject(step.status, extra_headers=list(step.headers))
                return None
        finally:
            self.pending -= 1
        assert isinstance(step, Handshake), step  # decide() accepts only once the handshake is done
        ws = await request.accept(subprotocol=step.subprotocol)
        lifecycle.advance(Event.HANDSHAKE_DONE)
        # Counted once the handshake is complete (where AWS IoT counts an MQTT CONNECT), and
        # before the new connection replaces an existing one.
        facts = replace(facts, reconnect_allowed=self._reconnect_allowed(step.identity))
        verdict = decide(facts, self.settings)
        if isinstance(verdict, Refuse):
            await self._refuse(request, lifecycle, verdict, ws)
            return None
        assert isinstance(verdict, Accept), verdict
        return ws, verdict, arrived

    async def _serve(
        self, ws: WebSocketConnection, accepted: Accept, arrived: float, lifecycle: Lifecycle
    ) -> None:
        """Claim the CP id, bridge, and close with the first ending recorded (bounded)."""
        settings = self.settings
        identity = accepted.identity
        session = ChargePointSession(
            identity,
            accepted.subprotocol,
            credentials=credential_fingerprint(accepted.attributes),
            arrived=arrived,
            lifecycle=lifecycle,
        )
        if not await self.sessions.claim(session, timeout=settings.close_timeout):
            log.info(
                "%s: a newer connection of this charge point is already bridged; closing this one",
                identity.cp_id,
            )
            lifecycle.advance(Event.ENDED)
            with trio.move_on_after(settings.close_timeout):
                await ws.aclose(CLOSE_NORMAL, REPLACED_REASON)
            lifecycle.advance(Event.CLOSED)
            return
        self.connections += 1
        log.info("%s: connected from %s (%s)", identity.cp_id, _peer(ws), accepted.subprotocol)
        session.ws = ws
        self.keepalive.add(session)
        try:
            with session.cancel_scope:
                try:
                    await bridge(ws, session, self.driver, self.settings, self.calls, self.traffic)
                except BaseExceptionGroup as group:  # one error from inside the MQTT link's nursery
                    raise only_error(group) from None
        except ConnectionRefused as exc:
            session.ending.set(exc.close_code, exc.reason)
        except MqttBacklogExceeded as exc:
            log.warning(
                "%s: closing, the CP does not read what is sent to it: %s", identity.cp_id, exc
            )
            session.ending.set(CLOSE_POLICY_VIOLATION, BACKLOG_REASON)
        except MqttError as exc:
            log.warning("%s: MQTT failure: %s", identity.cp_id, exc)
            session.ending.set(CLOSE_NORMAL, MQTT_ENDED_REASON)
        except Exception:
            # A bug must cost this one connection, never the server and its other CPs.
            log.exception("%s: unexpected error; closing this connection", identity.cp_id)
            session.ending.set(CLOSE_INTERNAL_ERROR, "Internal error in the gateway")
        finally:
            self.sessions.release(session)
            self.calls.forget(session)
            session.link = session.ws = None
            session.ending.set(CLOSE_GOING_AWAY, SHUTTING_DOWN_REASON)
            state = lifecycle.advance(Event.DRAINED if self.draining else Event.ENDED)
            # Bounded, also when the gateway itself is being cancelled: then the reader that would
            # see the CP's close reply is gone, so a short wait is all that makes sense.
            cancelled = trio.current_effective_deadline() == -math.inf
            draining = state is State.DRAINING and not cancelled
            with trio.CancelScope(shield=True):
                with trio.move_on_after(
                    settings.drain_timeout if draining else settings.close_timeout
                ):
                    # 1006 is never sent: a CP that dropped without a close frame gets 1000.
                    code = session.ending.code
                    await ws.aclose(
                        code if code not in (None, CLOSE_ABNORMAL) else CLOSE_NORMAL,
                        session.ending.reason,
                    )
            lifecycle.advance(Event.CLOSED)
            session.finished.set()
            closed = ws.closed
            log.info(
                "%s: disconnected (%s %s)",
                identity.cp_id,
                closed.code if closed else "?",
                loggable(closed.reason or "") if closed else "",  # the CP's text
            )

    async def drain(self) -> None:
        """Graceful stop: refuse new CPs, close every connected one with 1001 and wait for them
        (at most ``drain_timeout``) while their connections can still complete the close handshake."""
        self.draining = True
        sessions = self.sessions.all()
        log.info("draining: closing %d charge point connection(s) with 1001", len(sessions))
        for session in sessions:
            session.end(CLOSE_GOING_AWAY, SHUTTING_DOWN_REASON)
        with trio.move_on_after(self.settings.drain_timeout + 1):
            for session in sessions:
                await session.finished.wait()

    async def _refuse(
        self,
        request: WebSocketRequest,
        lifecycle: Lifecycle,
        refusal: Refuse,
        ws: WebSocketConnection | None = None,
    ) -> None:
        """Complete the handshake so that the refusal carries a close code and reason; bounded."""
        lifecycle.advance(Event.REFUSED)
        key = (refusal.close_code, refusal.cause)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        if ws is None:
            ws = await request.accept(subprotocol=refusal.subprotocol)
        self.refused += 1
        log.info(
            "refused %s from %s: %d %s",
            request.path[:80],
            _peer(ws),
            refusal.close_code,
            refusal.reason,
        )
        with trio.move_on_after(self.settings.close_timeout):
            await ws.aclose(refusal.close_code, refusal.reason)
        lifecycle.advance(Event.CLOSED)

    def _reconnect_allowed(self, identity: ChargePointIdentity) -> bool:
        """The per-id throttle's answer (``reconnect_rate``); a refusal is logged once a minute per id."""
        now = trio.current_time()
        if self._throttle.allow(identity.cp_id, now):
            return True
        self.throttled += 1
        last = self._throttle_logged.get(identity.cp_id)
        if last is None or now - last >= 60.0:
            if len(self._throttle_logged) >= 10_000:
                self._throttle_logged = {
                    k: t for k, t in self._throttle_logged.items() if now - t < 60.0
                }
            self._throttle_logged[identity.cp_id] = now
            log.warning(
                "%s: connecting more often than %g/s; refused with 1013 (a charger in a reconnect "
                "loop, or two chargers configured with the same id?)",
                identity.cp_id,
                self.settings.reconnect_rate,
            )
        return False

    async def _look_up(self, identity: ChargePointIdentity, source: str) -> RegistryAnswer:
        """Ask the registry about ``identity``, within the source's budget of look-ups finding nothing.

        Inventing ids costs the AWS account one DescribeThing each, so a
        source that keeps doing it (``unknown_lookups_rate``) is not looked
        up for any more until its budget refills (:class:`.admission.LookupsExhausted`).
        """
        cached = self.registry.is_cached(identity.thing_name)
        # Spent only when a look-up finds nothing: booking every uncached look-up up front would refuse
        # a storm of real CPs behind one address (a load balancer). The price: look-ups already in
        # flight when a source's budget runs out still run (bounded by max_pending and --registry-rate).
        if not cached and not self._unknown_lookups.would_allow(source, trio.current_time()):
            return LookupsExhausted()
        try:
            attributes = await self.registry.lookup(identity.thing_name)
        except RegistryUnavailable as exc:
            return RegistryUnreachable(exc.reason)
        if attributes is None:
            if not cached:
                self._unknown_lookups.allow(source, trio.current_time())
            return NotRegistered()
        return Registered(attributes)


def _peer(ws: WebSocketConnection) -> str:
    try:
        remote = ws.remote
    except OSError:  # the peer is already gone
        return "?"
    return f"{getattr(remote, 'address', '?')}:{getattr(remote, 'port', '?')}"
