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
from dataclasses import dataclass, field

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from .client_certs import check_client_certificate
from .credentials import (
    PASSWORD_HASH_ATTRIBUTE,
    SECURITY_PROFILE_ATTRIBUTE,
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
    MqttConnectionLost,
    MqttError,
    clip_reason,
)
from .identity import ChargePointIdentity, identity_from_path
from .mqtt_link import MqttDriver, MqttLink
from .ratelimit import TokenBucket
from .registry import Registry
from .subprotocol import choose_subprotocol, clean_offers

log = logging.getLogger(__name__)

REPLACED_REASON = "Replaced by a newer connection of this charge point"
MQTT_ENDED_REASON = "MQTT session ended (taken over by a newer connection, or the broker went away); reconnect"


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

    async def claim(self, session: ChargePointSession, *, timeout: float = 5.0) -> None:
        """Make ``session`` the CP's connection, closing an older one first."""
        old = self._by_id.get(session.identity.cp_id)
        self._by_id[session.identity.cp_id] = session
        if old is not None:
            log.info("%s: new connection replaces the existing one", session.identity.cp_id)
            old.replace()
            with trio.move_on_after(timeout):
                await old.finished.wait()

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
    ping_interval: float = 60.0
    pong_timeout: float = 30.0
    max_connections: int = 20_000
    max_message_rate: float = 20.0
    max_message_burst: int = 40
    tls: bool = False
    tls_direct: bool = False  # the gateway terminates TLS itself (it sees client certificates)
    min_security_profile: int = 0
    cpo_name: str | None = None  # set: profile-3 client certificates are checked (needs --client-ca-file)
    cert_binding: str = "cn-or-san"
    drain_timeout: float = 10.0  # how long a closing connection waits for the CP's close frame
    draining: bool = False
    connections: int = 0
    refused: int = 0
    auth_failures: int = 0
    active: int = 0
    _verified: dict[str, bytes] = field(default_factory=dict)
    _auth_limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(4))

    async def handle(self, request: WebSocketRequest) -> None:
        """trio-websocket's handler: runs for the whole life of one connection."""
        self.active += 1
        try:
            await self._handle(request)
        except ConnectionClosed:
            pass  # the CP went away during the handshake or the refusal
        except Exception:
            # trio-websocket lets a handler's error end the whole server: never let one escape.
            log.exception("unexpected error handling %s", request.path[:80])
        finally:
            self.active -= 1

    async def _handle(self, request: WebSocketRequest) -> None:
        offers = clean_offers(request.proposed_subprotocols)
        subprotocol = next((p for p in offers if p in self.subprotocols), None)
        try:
            if self.draining:
                raise ConnectionRefused("Gateway shutting down", close_code=CLOSE_GOING_AWAY)
            if self.active > self.max_connections:
                raise ConnectionRefused(
                    f"Gateway at capacity ({self.max_connections} connections); try again later",
                    close_code=CLOSE_TRY_AGAIN_LATER,
                )
            identity = identity_from_path(request.path)
            subprotocol = choose_subprotocol(offers, self.subprotocols)
            attributes = await self.registry.check(identity)
            self._check_security_profile(request, identity, attributes)
        except ConnectionRefused as exc:
            # Complete the handshake so that the refusal carries a close code and reason.
            ws = await request.accept(subprotocol=subprotocol)
            self.refused += 1
            log.info("refused %s from %s: %d %s", request.path[:80], _peer(ws), exc.close_code, exc.reason)
            await ws.aclose(exc.close_code, exc.reason)
            return
        if requires_password(attributes) and not await self._authenticate(request, identity, attributes):
            self.auth_failures += 1
            log.warning("%s: HTTP Basic authentication failed (security profile %s); 401", identity.cp_id,
                        attributes.get(SECURITY_PROFILE_ATTRIBUTE, "1"))
            await request.reject(401, extra_headers=[(b"WWW-Authenticate", b'Basic realm="OCPP", charset="UTF-8"')])
            return
        ws = await request.accept(subprotocol=subprotocol)
        peer = _peer(ws)
        session = ChargePointSession(identity, subprotocol)
        await self.sessions.claim(session)
        self.connections += 1
        log.info("%s: connected from %s (%s)", identity.cp_id, peer, subprotocol)
        try:
            with session.cancel_scope:
                await self._bridge(ws, session)
        except ConnectionRefused as exc:
            session.ending.set(exc.close_code, exc.reason)
        except MqttError as exc:
            log.warning("%s: MQTT failure: %s", identity.cp_id, exc)
            session.ending.set(CLOSE_NORMAL, MQTT_ENDED_REASON)
        except Exception:
            # A bug must cost this one connection, never the server and its other CPs.
            log.exception("%s: unexpected error; closing this connection", identity.cp_id)
            session.ending.set(CLOSE_INTERNAL_ERROR, "Internal error in the gateway")
        finally:
            self.sessions.release(session)
            session.ending.set(CLOSE_GOING_AWAY, "Gateway shutting down")
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self.drain_timeout):
                    code = session.ending.code if session.ending.code not in (None, CLOSE_ABNORMAL) else CLOSE_NORMAL
                    await ws.aclose(code, session.ending.reason)
            session.finished.set()
            closed = ws.closed
            log.info("%s: disconnected (%s %s)", identity.cp_id, closed.code if closed else "?", (closed.reason or "") if closed else "")

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

    def _check_security_profile(
        self, request: WebSocketRequest, identity: ChargePointIdentity, attributes: dict[str, str]
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
            raise ConnectionRefused(f"Charge Point {cp_id} uses security profile {profile}: connect with wss:// (TLS)")
        if profile >= 3:
            if not self.tls_direct or self.cpo_name is None:
                raise ConnectionRefused(
                    f"Charge Point {cp_id} uses security profile 3, which this gateway does not serve "
                    "(needs --certfile/--keyfile, --client-ca-file and --cpo-name)"
                )
            check_client_certificate(
                _peer_certificate(request), identity, attributes, cpo_name=self.cpo_name, binding=self.cert_binding
            )

    async def _authenticate(self, request: WebSocketRequest, identity: ChargePointIdentity, attributes: dict[str, str]) -> bool:
        """Check HTTP Basic credentials: user = CP id, password against the stored hash.

        The slow hash runs in a worker thread; a successful check is
        remembered (as a fast digest bound to the stored hash) so that
        reconnects do not pay for it again.  Passwords are never logged.
        """
        encoded = attributes.get(PASSWORD_HASH_ATTRIBUTE)
        credentials = parse_basic_auth(request.headers)
        if encoded is None or credentials is None or credentials[0] != identity.cp_id:
            return False
        password = credentials[1]
        fast = hashlib.sha256(encoded.encode() + b"\0" + password.encode()).digest()
        if hmac.compare_digest(self._verified.get(identity.thing_name, b""), fast):
            return True
        ok = await trio.to_thread.run_sync(verify_password, password, encoded, limiter=self._auth_limiter)
        if ok:
            if len(self._verified) >= 100_000:
                self._verified.clear()
            self._verified[identity.thing_name] = fast
        return ok

    async def _bridge(self, ws: WebSocketConnection, session: ChargePointSession) -> None:
        identity = session.identity
        async with self.driver.link(identity.cp_id) as link:
            await link.subscribe(identity.out_topic, 1)
            record = {"state": {"reported": {"ocppProtocol": session.subprotocol}}}
            await link.publish(f"$aws/things/{identity.thing_name}/shadow/update", json.dumps(record).encode(), 1)
            # Constant task names: trio would otherwise build one name string per task, per CP.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._mqtt_to_cp, ws, link, session, nursery.cancel_scope, name="mqtt->cp")
                if self.ping_interval > 0:
                    nursery.start_soon(self._keepalive, ws, session, nursery.cancel_scope, name="ws keepalive")
                # The CP -> MQTT pump runs in this task (one task fewer per CP); whichever pump ends first
                # cancels the nursery, and with it the other pump.
                await self._cp_to_mqtt(ws, link, session, nursery.cancel_scope)

    async def _keepalive(self, ws: WebSocketConnection, session: ChargePointSession, done: trio.CancelScope) -> None:
        """Ping the CP; one that does not answer in time is closed and its MQTT session released."""
        while True:
            await trio.sleep(self.ping_interval)
            with trio.move_on_after(self.pong_timeout) as waited:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return  # the reader task reports the close
            if waited.cancelled_caught:
                log.info("%s: no pong within %g s; closing", session.identity.cp_id, self.pong_timeout)
                session.ending.set(CLOSE_INTERNAL_ERROR, f"Keepalive timeout: no pong within {self.pong_timeout:g} s")
                done.cancel()
                return

    async def _cp_to_mqtt(self, ws: WebSocketConnection, link: MqttLink, session: ChargePointSession, done: trio.CancelScope) -> None:
        cp_id = session.identity.cp_id
        topic = session.identity.in_topic
        bucket = TokenBucket(self.max_message_rate, self.max_message_burst) if self.max_message_rate > 0 else None
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    session.ending.set(CLOSE_UNSUPPORTED_DATA, "Binary frames are not allowed: OCPP-J uses text frames")
                    break
                if bucket is not None and not bucket.take(trio.current_time()):
                    log.warning("%s: more than %g messages/s; closing", cp_id, self.max_message_rate)
                    session.ending.set(CLOSE_POLICY_VIOLATION, f"Message rate limit exceeded ({self.max_message_rate:g}/s)")
                    break
                log.debug("%s: CP -> %s: %s", cp_id, topic, message)
                await link.publish(topic, message.encode("utf-8"), 1)
        except ConnectionClosed as exc:
            session.ending.set(*_close_of(exc))
        except MqttConnectionLost:
            session.ending.set(CLOSE_NORMAL, MQTT_ENDED_REASON)
        done.cancel()

    async def _mqtt_to_cp(self, ws: WebSocketConnection, link: MqttLink, session: ChargePointSession, done: trio.CancelScope) -> None:
        cp_id = session.identity.cp_id
        out_topic = session.identity.out_topic
        try:
            while True:
                topic, payload = await link.receive()
                if topic != out_topic:
                    continue
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    log.error("%s: dropped a message on %s that is not UTF-8 text (%d bytes)", cp_id, topic, len(payload))
                    continue
                try:
                    await ws.send_message(text)
                except ConnectionClosed as exc:
                    log.warning("%s: CP left before a message could be delivered: %s", cp_id, text[:200])
                    session.ending.set(*_close_of(exc))
                    break
                log.debug("%s: %s -> CP: %s", cp_id, topic, text)
        except MqttConnectionLost as exc:
            log.info("%s: MQTT connection ended: %s", cp_id, exc)
            session.ending.set(CLOSE_NORMAL, MQTT_ENDED_REASON)
        done.cancel()


def security_profile(attributes: dict[str, str]) -> int:
    """The Thing's registered profile: ``ocppSecurityProfile``, else 1 with a password hash, else 0."""
    value = attributes.get(SECURITY_PROFILE_ATTRIBUTE)
    if value in ("0", "1", "2", "3"):
        return int(value)
    if value is not None:
        # A typo in the registry must not silently lower the bar.
        raise ConnectionRefused(f"Charge Point has an invalid {SECURITY_PROFILE_ATTRIBUTE} {value[:8]!r} in the registry")
    return 1 if PASSWORD_HASH_ATTRIBUTE in attributes else 0


def requires_password(attributes: dict[str, str]) -> bool:
    """Security profile 1 or 2 (profile 3 authenticates with the client certificate)."""
    return security_profile(attributes) in (1, 2) or (
        PASSWORD_HASH_ATTRIBUTE in attributes and security_profile(attributes) != 3
    )


def _peer_certificate(request: WebSocketRequest) -> bytes | None:
    """The verified client certificate (DER) of a wss:// connection, if it sent one.

    trio-websocket (pinned < 0.13) keeps the connection's stream in
    ``_stream``; over TLS it is a :class:`trio.SSLStream`.
    """
    stream = getattr(getattr(request, "_connection", None), "_stream", None)
    if isinstance(stream, trio.SSLStream):
        der = stream.getpeercert(binary_form=True)
        return bytes(der) if der else None
    return None


def _close_of(exc: ConnectionClosed) -> tuple[int, str]:
    if exc.reason is None:
        return CLOSE_ABNORMAL, "connection lost"
    return exc.reason.code, exc.reason.reason or ""


def _peer(ws: WebSocketConnection) -> str:
    remote = ws.remote
    return f"{getattr(remote, 'address', '?')}:{getattr(remote, 'port', '?')}"
