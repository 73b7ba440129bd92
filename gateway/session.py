"""One charge point's connection: WebSocket in, its own MQTT connection out.

Lifecycle (one nursery per connection)::

    handshake -> validated -> registered -> bridged -> closing
       |             |            |            |
       +-- refused (close code + reason) ------+-- closed (code + reason)

* *handshake*: the identity and subprotocol are checked before anything
  else (:mod:`.identity`, :mod:`.subprotocol`); the handshake is completed
  (without a subprotocol when none matches, as OCPP-J asks) so that the
  refusal can carry a close code and reason.
* *registered*: the Thing must exist (:mod:`.registry`); an older connection
  of the same charge point on this gateway is closed (1000) first.
* *bridged*: a paho client with client id = CP id, subscribed to
  ``<cp-id>/out``; the subprotocol is recorded in the shadow; then two tasks
  copy frames verbatim: WebSocket -> ``<cp-id>/in``, ``<cp-id>/out`` ->
  WebSocket.
* *closing*: whichever side ends first decides the close: the CP leaving
  disconnects MQTT cleanly; MQTT ending (broker gone, or a newer connection
  of this CP elsewhere took the client id over) closes the WebSocket with
  1000 so the CP reconnects; the gateway never reconnects MQTT by itself, so
  two connections of one CP never fight over the client id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
from dataclasses import dataclass, field

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from .calls import CallTimeouts, timeout_call_error
from .client_certs import check_client_certificate
from .credentials import (
    PASSWORD_HASH_ATTRIBUTE,
    SECURITY_PROFILE_ATTRIBUTE,
    hash_password,
    parse_basic_auth,
    verify_password,
)
from .errors import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED_DATA,
    ConnectionRefused,
    MqttBacklogExceeded,
    MqttConnectError,
    MqttConnectionLost,
    MqttError,
    UnknownChargePoint,
    clip_reason,
    only_error,
)
from .identity import ChargePointIdentity, identity_from_path
from .mqtt_link import MqttDriver, MqttLink
from .ratelimit import FailureBackoff, KeyThrottle, TokenBucket
from .registry import Registry
from .subprotocol import choose_subprotocol, clean_offers
from .websocket import peer_certificate, peer_host

log = logging.getLogger(__name__)

REPLACED_REASON = "Replaced by a newer connection of this charge point"
MAX_HASHES_PER_SOURCE = 2
FROM_GATEWAY = "$gateway/local"  # the "topic" of frames the gateway itself queues for a CP (never an MQTT topic)
BACKLOG_REASON = "Charge point does not read its messages; too much waiting for it"
MQTT_ENDED_REASON = (
    "MQTT session ended (taken over by a newer connection, or the broker went away); reconnect"
)


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
    identity: ChargePointIdentity
    subprotocol: str
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    link: MqttLink | None = None  # while bridged
    credentials: tuple[str, str] = (
        "",
        "",
    )  # what it was admitted with (see Bridge.credential_fingerprint)
    arrived: float = 0.0  # trio.current_time() when its upgrade request was read
    ending: Ending = field(default_factory=Ending)
    finished: trio.Event = field(default_factory=trio.Event)

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


@dataclass
class Bridge:
    """Everything a connection handler needs, shared by all connections."""

    driver: MqttDriver
    registry: Registry
    sessions: LocalSessions
    subprotocols: tuple[str, ...]
    base_path: str = ""
    ping_interval: float = 60.0
    pong_timeout: float = 30.0
    max_connections: int = 20_000
    max_message_rate: float = 20.0
    max_message_burst: int = 40
    tls: bool = False
    tls_direct: bool = False  # the gateway terminates TLS itself (it sees client certificates)
    min_security_profile: int = 0
    cpo_name: str | None = (
        None  # set: profile-3 client certificates are checked (needs --client-ca-file)
    )
    cert_binding: str = "cn-or-san"
    drain_timeout: float = 10.0  # on drain, how long a connection waits for the CP's close frame
    close_timeout: float = (
        5.0  # otherwise (refusals, replaced, errors): then the TCP connection is aborted
    )
    max_pending: int = (
        2_000  # connections between the upgrade request and admission (own bound: see handle)
    )
    reconnect_rate: float = (
        1.0  # connections per second per CP id (AWS IoT: one CONNECT/s per client id)
    )
    reconnect_burst: int = 3
    unknown_lookups_rate: float = (
        2.0  # registry look-ups finding no Thing, per second per source address
    )
    unknown_lookups_burst: int = 20
    call_timeout: float = (
        30.0  # a CP's CALL unanswered this long gets a CALLERROR from the gateway (0: never)
    )
    draining: bool = False
    connections: int = 0
    refused: int = 0
    auth_failures: int = 0
    throttled: int = 0
    calls_timed_out: int = 0
    password_hashes: int = 0  # slow password checks run (a guess answered while blocked costs none)
    calls: CallTimeouts = field(init=False)
    pending: int = 0
    _throttle: KeyThrottle = field(init=False)
    _throttle_logged: dict[str, float] = field(default_factory=dict)
    _verified: dict[str, bytes] = field(default_factory=dict)
    _auth_limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(4))

    def __post_init__(self) -> None:
        self._throttle = KeyThrottle(self.reconnect_rate, self.reconnect_burst)
        self._unknown_lookups = KeyThrottle(self.unknown_lookups_rate, self.unknown_lookups_burst)
        self._auth_backoff = FailureBackoff(free=5, base=1.0, cap=60.0)
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))
        self._hashing: dict[str, int] = {}  # slow password checks in flight, per source address
        self.calls = CallTimeouts(self.call_timeout)

    async def run_call_timeouts(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer, in the CSMS's place, every CP CALL left unanswered for ``call_timeout`` seconds.

        One task for the whole process (not one per CP): it wakes a few
        times per time-out and hands each CALLERROR to the CP's own
        MQTT -> CP pump, so it is sent in order and never blocks this task.
        """
        task_status.started()
        if self.call_timeout <= 0:
            return
        while True:
            await trio.sleep(min(1.0, self.call_timeout / 4))
            for session, message_id in self.calls.expired(trio.current_time()):
                assert isinstance(session, ChargePointSession)
                self.calls_timed_out += 1
                log.warning(
                    "%s: CALL %s not answered by the CSMS within %g s; answered with a CALLERROR",
                    session.identity.cp_id,
                    message_id,
                    self.call_timeout,
                )
                if session.link is not None:
                    session.link.deliver_local(
                        FROM_GATEWAY, timeout_call_error(message_id, self.call_timeout).encode()
                    )

    async def handle(self, request: WebSocketRequest, stream: trio.abc.Stream) -> None:
        """The server's handler (:mod:`.wsserver`): runs for the whole life of one connection.

        Connections that are not admitted yet (registry look-up, password
        check) have a bound of their own, ``max_pending``, apart from
        ``max_connections``, which counts admitted charge points only: a
        flood of unknown or unauthenticated clients can delay new CPs but never
        takes the place of a connected one.
        """
        try:
            await self._handle(request, stream)
        except ConnectionClosed:
            pass  # the CP went away during the handshake or the refusal
        except Exception:
            # Contained here as well as in the server: log it with what we know of the request.
            log.exception("unexpected error handling %s", request.path[:80])

    async def _handle(self, request: WebSocketRequest, stream: trio.abc.Stream) -> None:
        offers = clean_offers(request.proposed_subprotocols)
        subprotocol = next((p for p in offers if p in self.subprotocols), None)
        source = peer_host(stream)
        arrived = trio.current_time()
        self.pending += 1
        try:
            try:
                if self.draining:
                    raise ConnectionRefused("Gateway shutting down", close_code=CLOSE_GOING_AWAY)
                if len(self.sessions) >= self.max_connections or self.pending > self.max_pending:
                    raise ConnectionRefused(
                        f"Gateway at capacity ({self.max_connections} connections); try again later",
                        close_code=CLOSE_TRY_AGAIN_LATER,
                    )
                identity = identity_from_path(request.path, self.base_path)
                subprotocol = choose_subprotocol(offers, self.subprotocols)
                attributes = await self._look_up(identity, source)
                if attributes is not None:
                    self._check_security_profile(stream, identity, attributes)
            except ConnectionRefused as exc:
                await self._refuse(request, subprotocol, exc)
                return
            if attributes is None or requires_password(attributes):
                if not await self._authenticate(request, identity, attributes, source):
                    await request.reject(
                        401,
                        extra_headers=[
                            (b"WWW-Authenticate", b'Basic realm="OCPP", charset="UTF-8"')
                        ],
                    )
                    return
        finally:
            self.pending -= 1
        ws = await request.accept(subprotocol=subprotocol)
        try:
            # Counted once the handshake is complete (where AWS IoT counts an MQTT CONNECT), and
            # before the new connection replaces an existing one.
            self._check_reconnect_rate(identity)
        except ConnectionRefused as exc:
            await self._refuse(request, subprotocol, exc, ws)
            return
        peer = _peer(ws)
        session = ChargePointSession(
            identity,
            subprotocol,
            credentials=self.credential_fingerprint(attributes),
            arrived=arrived,
        )
        if not await self.sessions.claim(session, timeout=self.close_timeout):
            log.info(
                "%s: a newer connection of this charge point is already bridged; closing this one",
                identity.cp_id,
            )
            with trio.move_on_after(self.close_timeout):
                await ws.aclose(CLOSE_NORMAL, REPLACED_REASON)
            return
        self.connections += 1
        log.info("%s: connected from %s (%s)", identity.cp_id, peer, subprotocol)
        try:
            with session.cancel_scope:
                try:
                    await self._bridge(ws, session)
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
            session.link = None
            session.ending.set(CLOSE_GOING_AWAY, "Gateway shutting down")
            # Bounded, also when the gateway itself is being cancelled: then the reader that would
            # see the CP's close reply is gone, so a short wait is all that makes sense.
            cancelled = trio.current_effective_deadline() == -math.inf
            timeout = self.drain_timeout if self.draining and not cancelled else self.close_timeout
            with trio.CancelScope(shield=True):
                with trio.move_on_after(timeout):
                    code = (
                        session.ending.code
                        if session.ending.code not in (None, CLOSE_ABNORMAL)
                        else CLOSE_NORMAL
                    )
                    await ws.aclose(code, session.ending.reason)
            session.finished.set()
            closed = ws.closed
            log.info(
                "%s: disconnected (%s %s)",
                identity.cp_id,
                closed.code if closed else "?",
                (closed.reason or "") if closed else "",
            )

    async def drain(self) -> None:
        """Graceful stop: refuse new CPs, close every connected one with 1001 and wait for them
        (at most ``drain_timeout``) while their connections can still complete the close handshake."""
        self.draining = True
        sessions = self.sessions.all()
        log.info("draining: closing %d charge point connection(s) with 1001", len(sessions))
        for session in sessions:
            session.end(CLOSE_GOING_AWAY, "Gateway shutting down")
        with trio.move_on_after(self.drain_timeout + 1):
            for session in sessions:
                await session.finished.wait()

    async def _refuse(
        self,
        request: WebSocketRequest,
        subprotocol: str | None,
        exc: ConnectionRefused,
        ws: WebSocketConnection | None = None,
    ) -> None:
        """Complete the handshake so that the refusal carries a close code and reason; bounded."""
        if ws is None:
            ws = await request.accept(subprotocol=subprotocol)
        self.refused += 1
        log.info(
            "refused %s from %s: %d %s", request.path[:80], _peer(ws), exc.close_code, exc.reason
        )
        with trio.move_on_after(self.close_timeout):
            await ws.aclose(exc.close_code, exc.reason)

    def _check_reconnect_rate(self, identity: ChargePointIdentity) -> None:
        """One id connecting faster than ``reconnect_rate`` is refused (1013), logged once a minute per id."""
        now = trio.current_time()
        if self._throttle.allow(identity.cp_id, now):
            return
        self.throttled += 1
        last = self._throttle_logged.get(identity.cp_id)
        if last is None or now - last >= 60.0:
            if len(self._throttle_logged) >= 10_000:
                self._throttle_logged = {
                    k: t for k, t in self._throttle_logged.items() if now - t < 60.0
                }
            self._throttle_logged[identity.cp_id] = now
            log.warning(
                "%s: connecting more often than %g/s; refused with 1013 (a charger in a reconnect loop, "
                "or two chargers configured with the same id?)",
                identity.cp_id,
                self.reconnect_rate,
            )
        raise ConnectionRefused(
            f"Too many connections for {identity.cp_id}: at most {self.reconnect_rate:g} per second; retry later",
            close_code=CLOSE_TRY_AGAIN_LATER,
        )

    def _check_security_profile(
        self, stream: trio.abc.Stream, identity: ChargePointIdentity, attributes: dict[str, str]
    ) -> None:
        """Refuse (1008) a connection that does not meet the CP's registered security profile."""
        profile = security_profile(attributes)
        cp_id = identity.cp_id
        if profile < self.min_security_profile:
            raise ConnectionRefused(
                f"Charge Point {cp_id} is registered for security profile {profile}; "
                f"this gateway requires {self.min_security_profile} or higher"
            )
        if profile >= 2 and not self.tls:
            raise ConnectionRefused(
                f"Charge Point {cp_id} uses security profile {profile}: connect with wss:// (TLS)"
            )
        if profile >= 3:
            if not self.tls_direct or self.cpo_name is None:
                raise ConnectionRefused(
                    f"Charge Point {cp_id} uses security profile 3, which this gateway does not serve "
                    "(needs --certfile/--keyfile, --client-ca-file and --cpo-name)"
                )
            check_client_certificate(
                peer_certificate(stream),
                identity,
                attributes,
                cpo_name=self.cpo_name,
                binding=self.cert_binding,
            )

    @staticmethod
    def credential_fingerprint(attributes: dict[str, str] | None) -> tuple[str, str]:
        """What about a Thing decides how its CP authenticates: a change closes the CP (:mod:`.revocation`)."""
        attributes = attributes or {}
        return attributes.get(SECURITY_PROFILE_ATTRIBUTE, ""), attributes.get(
            PASSWORD_HASH_ATTRIBUTE, ""
        )

    async def _look_up(self, identity: ChargePointIdentity, source: str) -> dict[str, str] | None:
        """The Thing's attributes; None for an unknown id when every CP must authenticate.

        Look-ups that find no Thing are budgeted per source address
        (``unknown_lookups_rate``): inventing ids costs the AWS account one
        DescribeThing each, so a source that keeps doing it is told to try
        again later (1013) before it spends any more.  With
        ``--min-security-profile`` >= 1 an unknown id is not told apart from
        a wrong password (None: answered 401 after the same hashing work).
        """
        cached = self.registry.is_cached(identity.thing_name)
        # Spent only when a look-up finds nothing: booking every uncached look-up up front would refuse
        # a storm of real CPs behind one address (a load balancer). The price: look-ups already in
        # flight when a source's budget runs out still run (bounded by max_pending and --registry-rate).
        if not cached and not self._unknown_lookups.would_allow(source, trio.current_time()):
            raise ConnectionRefused(
                "Too many look-ups of unregistered charge points from this address; try again later",
                close_code=CLOSE_TRY_AGAIN_LATER,
            )
        try:
            return await self.registry.check(identity)
        except UnknownChargePoint:
            if not cached:
                self._unknown_lookups.allow(source, trio.current_time())
            if self.min_security_profile >= 1:
                return None
            raise

    async def _authenticate(
        self,
        request: WebSocketRequest,
        identity: ChargePointIdentity,
        attributes: dict[str, str] | None,
        source: str,
    ) -> bool:
        """Check HTTP Basic credentials: user = CP id, password against the stored hash.

        The slow hash runs in a worker thread (at most 4 at once); a
        successful check is remembered (as a fast digest bound to the stored
        hash) so that reconnects do not pay for it again.  Failures back off
        exponentially per source address and per (CP id, source address):
        once blocked, an attempt is answered 401 without hashing and without
        extending the block; at most ``MAX_HASHES_PER_SOURCE`` checks run at
        once per source, so guesses cannot monopolise the hashing threads.  An unknown id (``attributes`` None)
        is hashed against a dummy and fails, in about the time a wrong
        password takes.  Passwords are never logged.
        """
        now = trio.current_time()
        by_source, by_id = "ip:" + source, f"{identity.cp_id}@{source}"
        blocked = max(
            self._auth_backoff.blocked_for(by_source, now),
            self._auth_backoff.blocked_for(by_id, now),
        )
        ok = False
        if blocked == 0 and self._hashing.get(source, 0) < MAX_HASHES_PER_SOURCE:
            # At most a couple of slow checks in flight per source: concurrent guesses cannot queue up
            # thousands of hashes before the first failure is counted.
            self._hashing[source] = self._hashing.get(source, 0) + 1
            try:
                ok = await self._check_password(request, identity, attributes)
            finally:
                self._hashing[source] -= 1
                if not self._hashing[source]:
                    del self._hashing[source]
        elif blocked == 0:
            blocked = 1.0  # too many checks in flight from this source: refused like a blocked one
        if ok:
            self._auth_backoff.succeeded(by_id)
            return True
        self.auth_failures += 1
        if blocked == 0:
            # Only checked attempts count: a refusal while blocked does not extend the block, so nobody
            # can keep another CP's id blocked by failing on purpose.
            self._auth_backoff.failed(by_source, trio.current_time())
            self._auth_backoff.failed(by_id, trio.current_time())
        profile = attributes.get(SECURITY_PROFILE_ATTRIBUTE, "1") if attributes is not None else "?"
        if blocked > 0:
            log.warning(
                "%s: HTTP Basic authentication refused from %s without checking: too many failures, "
                "blocked %.0f s more; 401",
                identity.cp_id,
                source,
                blocked,
            )
        else:
            log.warning(
                "%s: HTTP Basic authentication failed from %s (security profile %s); 401",
                identity.cp_id,
                source,
                profile,
            )
        return False

    async def _check_password(
        self,
        request: WebSocketRequest,
        identity: ChargePointIdentity,
        attributes: dict[str, str] | None,
    ) -> bool:
        credentials = parse_basic_auth(request.headers)
        encoded = attributes.get(PASSWORD_HASH_ATTRIBUTE) if attributes is not None else None
        if credentials is None or credentials[0] != identity.cp_id:
            return False
        password = credentials[1]
        if encoded is None:  # unknown id (or no hash): the same work as a wrong password, then no
            self.password_hashes += 1
            await trio.to_thread.run_sync(
                verify_password, password, self._dummy_hash, limiter=self._auth_limiter
            )
            return False
        fast = hashlib.sha256(encoded.encode() + b"\0" + password.encode()).digest()
        if hmac.compare_digest(self._verified.get(identity.thing_name, b""), fast):
            return True
        self.password_hashes += 1
        ok = await trio.to_thread.run_sync(
            verify_password, password, encoded, limiter=self._auth_limiter
        )
        if ok:
            if len(self._verified) >= 100_000:
                self._verified.clear()
            self._verified[identity.thing_name] = fast
        return ok

    async def _admit(self, ws: WebSocketConnection, session: ChargePointSession) -> bool:
        """Wait for the MQTT connect pacer; False if the CP left meanwhile (its slot goes to the next)."""
        wait_closed = getattr(ws, "wait_closed", None)
        if wait_closed is None:  # not from our server (no way to watch for the close): just wait
            await self.driver.admit(session.identity.cp_id)
            return True
        async with trio.open_nursery() as nursery:

            async def cancel_when_closed() -> None:
                await wait_closed()
                nursery.cancel_scope.cancel()

            nursery.start_soon(cancel_when_closed, name="admission watch")
            refused: MqttConnectError | None = None
            try:
                await self.driver.admit(session.identity.cp_id)
            except MqttConnectError as exc:  # raised as itself, not wrapped in the nursery's group
                refused = exc
            nursery.cancel_scope.cancel()
        if refused is not None:
            raise refused
        return ws.closed is None

    async def _bridge(self, ws: WebSocketConnection, session: ChargePointSession) -> None:
        identity = session.identity
        if not await self._admit(ws, session):
            log.info("%s: left while waiting for its turn to connect to MQTT", identity.cp_id)
            return
        async with self.driver.link(identity.cp_id, admitted=True) as link:
            await link.subscribe(identity.out_topic, 1)
            session.link = link
            record = {"state": {"reported": {"ocppProtocol": session.subprotocol}}}
            await link.publish(
                f"$aws/things/{identity.thing_name}/shadow/update", json.dumps(record).encode(), 1
            )
            # Constant task names: trio would otherwise build one name string per task, per CP.
            async with trio.open_nursery() as nursery:
                # A CP that does not read while its /out fills: the pump may be stuck in a send to it,
                # so the link ends the whole bridge at once (MqttBacklogExceeded, raised below).
                link.on_backlog_exceeded = nursery.cancel_scope.cancel
                nursery.start_soon(
                    self._mqtt_to_cp, ws, link, session, nursery.cancel_scope, name="mqtt->cp"
                )
                if self.ping_interval > 0:
                    nursery.start_soon(
                        self._keepalive, ws, session, nursery.cancel_scope, name="ws keepalive"
                    )
                # The CP -> MQTT pump runs in this task (one task fewer per CP); whichever pump ends first
                # cancels the nursery, and with it the other pump.
                await self._cp_to_mqtt(ws, link, session, nursery.cancel_scope)
            backlog = link.close_reason if link.backlog_exceeded else None
        if backlog is not None:
            raise MqttBacklogExceeded(backlog)

    async def _keepalive(
        self, ws: WebSocketConnection, session: ChargePointSession, done: trio.CancelScope
    ) -> None:
        """Ping the CP; one that does not answer in time is closed and its MQTT session released."""
        while True:
            await trio.sleep(self.ping_interval)
            with trio.move_on_after(self.pong_timeout) as waited:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return  # the reader task reports the close
            if waited.cancelled_caught:
                log.info(
                    "%s: no pong within %g s; closing", session.identity.cp_id, self.pong_timeout
                )
                session.ending.set(
                    CLOSE_INTERNAL_ERROR,
                    f"Keepalive timeout: no pong within {self.pong_timeout:g} s",
                )
                done.cancel()
                return

    async def _cp_to_mqtt(
        self,
        ws: WebSocketConnection,
        link: MqttLink,
        session: ChargePointSession,
        done: trio.CancelScope,
    ) -> None:
        cp_id = session.identity.cp_id
        topic = session.identity.in_topic
        bucket = (
            TokenBucket(self.max_message_rate, self.max_message_burst)
            if self.max_message_rate > 0
            else None
        )
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    session.ending.set(
                        CLOSE_UNSUPPORTED_DATA,
                        "Binary frames are not allowed: OCPP-J uses text frames",
                    )
                    break
                if bucket is not None and not bucket.take(trio.current_time()):
                    log.warning(
                        "%s: more than %g messages/s; closing", cp_id, self.max_message_rate
                    )
                    session.ending.set(
                        CLOSE_POLICY_VIOLATION,
                        f"Message rate limit exceeded ({self.max_message_rate:g}/s)",
                    )
                    break
                log.debug("%s: CP -> %s: %s", cp_id, topic, message)
                await link.publish(topic, message.encode("utf-8"), 1)
                self.calls.sent_by_cp(session, message, trio.current_time())
        except ConnectionClosed as exc:
            session.ending.set(*_close_of(exc))
        except MqttConnectionLost as exc:
            session.ending.set(*_mqtt_ending(exc))
        done.cancel()

    async def _mqtt_to_cp(
        self,
        ws: WebSocketConnection,
        link: MqttLink,
        session: ChargePointSession,
        done: trio.CancelScope,
    ) -> None:
        cp_id = session.identity.cp_id
        out_topic = session.identity.out_topic
        try:
            while True:
                topic, payload = await link.receive()
                local = topic == FROM_GATEWAY
                if topic != out_topic and not local:
                    continue
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    log.error(
                        "%s: dropped a message on %s that is not UTF-8 text (%d bytes)",
                        cp_id,
                        topic,
                        len(payload),
                    )
                    continue
                if not local and not self.calls.sent_to_cp(session, text):
                    log.warning(
                        "%s: dropped a late answer (the CP already got a time-out CALLERROR): %s",
                        cp_id,
                        text[:200],
                    )
                    continue
                try:
                    await ws.send_message(text)
                except ConnectionClosed as exc:
                    log.warning(
                        "%s: CP left before a message could be delivered: %s", cp_id, text[:200]
                    )
                    session.ending.set(*_close_of(exc))
                    break
                log.debug("%s: %s -> CP: %s", cp_id, topic, text)
        except MqttConnectionLost as exc:
            log.info("%s: MQTT connection ended: %s", cp_id, exc)
            session.ending.set(*_mqtt_ending(exc))
        done.cancel()


def security_profile(attributes: dict[str, str]) -> int:
    """The Thing's registered profile: ``ocppSecurityProfile``, else 1 with a password hash, else 0."""
    value = attributes.get(SECURITY_PROFILE_ATTRIBUTE)
    if value in ("0", "1", "2", "3"):
        return int(value)
    if value is not None:
        # A typo in the registry must not silently lower the bar.
        raise ConnectionRefused(
            f"Charge Point has an invalid {SECURITY_PROFILE_ATTRIBUTE} {value[:8]!r} in the registry"
        )
    return 1 if PASSWORD_HASH_ATTRIBUTE in attributes else 0


def requires_password(attributes: dict[str, str]) -> bool:
    """Security profile 1 or 2 (profile 3 authenticates with the client certificate)."""
    return security_profile(attributes) in (1, 2) or (
        PASSWORD_HASH_ATTRIBUTE in attributes and security_profile(attributes) != 3
    )


def _mqtt_ending(exc: MqttConnectionLost) -> tuple[int, str]:
    if isinstance(exc, MqttBacklogExceeded):
        return CLOSE_POLICY_VIOLATION, BACKLOG_REASON
    return CLOSE_NORMAL, MQTT_ENDED_REASON


def _close_of(exc: ConnectionClosed) -> tuple[int, str]:
    if exc.reason is None:
        return CLOSE_ABNORMAL, "connection lost"
    return exc.reason.code, exc.reason.reason or ""


def _peer(ws: WebSocketConnection) -> str:
    try:
        remote = ws.remote
    except OSError:  # the peer is already gone
        return "?"
    return f"{getattr(remote, 'address', '?')}:{getattr(remote, 'port', '?')}"
