"""The MQTT broker of fakeiot: amqtt 0.12.1, with the gaps to AWS IoT closed.

amqtt is pinned to 0.12.1 because some of its private methods are overridden
here, in the one place where fakeiot patches it:

* ``_initialize_client_session``: amqtt handles a CONNECT's client id
  (deleting the session of a clean-session CONNECT, resuming a persistent
  one) *before* it authenticates the client, so a CONNECT with a wrong
  password could still disconnect the id's holder, and anyone could resume
  anyone's persistent session.  Here the client is authenticated and its
  client id (and will topic) authorised first (:func:`fakeiot.policy.admit`);
  a refused CONNECT gets its CONNACK refusal and changes nothing.  A
  persistent session resumes only for the principal that made it; for
  another, a fresh session starts.
* ``_delete_session``: amqtt lets a second CONNECT with the same client id
  (clean session) run beside the first one.  AWS IoT Core and Mosquitto
  disconnect the old client ("take-over"); so does :class:`FakeIotBroker`.
* ``_handle_message_delivery``: amqtt drops a client's PUBLISH to a topic
  starting with ``$`` (MQTT-4.7.2-1) and leaves the session wedged.  AWS IoT
  accepts publishes to its reserved ``$aws/`` topics; so does fakeiot.  Shadow
  requests (``$aws/things/<name>/shadow/update|get|delete``) are answered by
  the shadow service.  A publish to any other ``$`` topic closes the
  client's connection (amqtt would ignore that client from then on).
* ``_handle_disconnect``: records why a client went (client DISCONNECT,
  connection lost, take-over, refused topic, broker shutdown) for the
  presence events of :mod:`fakeiot.presence`.
* ``_authenticate``, ``_topic_filtering``: fakeiot's IoT-policy-like access
  control (:mod:`fakeiot.policy`): the backend role by user name and
  password, every other client confined to its own topics; a refused
  PUBLISH closes the connection as AWS IoT does.
* ``_publish_retained_messages_for_subscription``,
  ``_publish_session_retained_messages``: amqtt hands a connecting client the
  retained messages of *every* client's subscriptions, and queued messages
  without a check; here only those of the client's own subscriptions that
  it may receive.
* ``_create_ssl_context``: amqtt asks for client certificates but accepts
  clients without one (``CERT_OPTIONAL``); fakeiot's TLS listener requires
  one (mutual TLS, as AWS IoT's port 8883) and TLS 1.2+.  A certificate
  registered through the API (CreateKeysAndCertificate) must be ACTIVE.
* ``_broadcast_message``: every delivered message also goes through the
  rules engine (:mod:`fakeiot.rules`).
* ``stream_connected``: amqtt's ``StreamWriterAdapter.close()`` skips closing
  the transport when flushing fails (the peer is already gone), leaking one
  socket per abruptly closed client, and waits forever to flush to a client
  that does not read; the adapter here always closes it, within
  ``CLOSE_FLUSH_TIMEOUT``.  The reader refuses packets over
  :data:`fakeiot.limits.MAX_PACKET` before reading them
  (:class:`fakeiot.connection.BoundedStreamReader`).
* Per-client limits (:mod:`fakeiot.limits`, :mod:`fakeiot.connection`): each
  connection's handler is a :class:`fakeiot.connection.FakeIotProtocolHandler`
  (made in ``_initialize_client_session``), with AWS IoT's QoS 1 in-flight
  window and a bounded queue behind it, and its 128 KB payload limit;
  ``_retain_broadcast_message`` bounds the queue of a disconnected persistent
  session the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.adapters import StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.utils import gen_client_id

from . import presence
from .connection import (
    BoundedStreamReader,
    FakeIotProtocolHandler,
    LimitCounters,
    offline_queue_drained,
    queue_offline,
)
from .limits import DeliveryLimits, DeliveryStats, Outgoing
from .policy import (
    ConnectRefused,
    Credentials,
    Principal,
    Role,
    admit,
    may_publish,
    may_receive,
    may_subscribe,
)
from .rules import RulesEngine
from .shadow_service import ShadowService

log = logging.getLogger(__name__)

ROLE_ATTRIBUTE = "fakeiot_role"
CERTIFICATE_ATTRIBUTE = "fakeiot_certificate_id"
PRINCIPAL_ATTRIBUTE = presence.PRINCIPAL_ATTRIBUTE
_GONE_ATTRIBUTE = (
    "fakeiot_connection_gone"  # an asyncio.Event while a take-over waits for the old connection
)
TAKEOVER_TIMEOUT = 5.0
CLOSE_FLUSH_TIMEOUT = 2.0  # seconds a closing connection may take to flush what it was sending


@dataclass(frozen=True)
class TlsListener:
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path


def broker_config(host: str, port: int, tls: TlsListener | None = None) -> dict[str, Any]:
    listeners: dict[str, Any] = {
        "default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": -1}
    }
    if tls is not None:
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{host}:{tls.port}",
            "max_connections": -1,
            "ssl": True,
            "cafile": str(tls.ca_file),
            "certfile": str(tls.cert_file),
            "keyfile": str(tls.key_file),
        }
    return {"listeners": listeners, "plugins": {"fakeiot.presence.PresencePlugin": {}}}


def certificate_id(der: bytes) -> str:
    """AWS IoT's certificate id: the SHA-256 of the DER certificate, in hex."""
    return hashlib.sha256(der).hexdigest()


class _ClosingStreamWriter(StreamWriterAdapter):
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.certificate_id = certificate_id(der) if der else None

    async def close(self) -> None:
        try:
            await asyncio.wait_for(super().close(), CLOSE_FLUSH_TIMEOUT)
        except TimeoutError:
            self._writer.transport.abort()  # the client does not read: drop what it was sent
        finally:
            self._writer.close()  # idempotent


class FakeIotBroker(Broker):
    """amqtt's broker with AWS IoT's take-over and ``$aws/`` topics."""

    def __init__(
        self,
        config: dict[str, Any],
        shadows: ShadowService,
        *,
        credentials: Credentials,
        rules: RulesEngine | None = None,
        certificate_status: Callable[[str], str | None] = lambda _id: None,
        limits: DeliveryLimits | None = None,
    ) -> None:
        self._open_writers: set[asyncio.StreamWriter] = set()
        super().__init__(config)
        self.limits = limits if limits is not None else DeliveryLimits()
        self.counters = LimitCounters()
        self.shadows = shadows
        self.rules = rules
        self.takeovers = 0
        self.refusals = 0
        self._credentials = credentials
        self._certificate_status = certificate_status

    def bound_port_of(self, listener: str) -> int:
        server = self._servers[listener]
        return int(server.instance.sockets[0].getsockname()[1])

    @property
    def bound_port(self) -> int:
        return self.bound_port_of("default")

    @property
    def dropped_messages(self) -> int:
        """Messages dropped because a client's queue was full, since start."""
        return self.counters.dropped

    @property
    def oversized(self) -> int:
        """Connections closed for a payload or packet over the size limit, since start."""
        return self.counters.oversized

    def delivery_stats(self, client_id: str) -> DeliveryStats | None:
        """What the broker holds for a connected client (call on the broker's loop)."""
        entry = self._sessions.get(client_id)
        if (
            entry is None
            or not isinstance(entry[1], FakeIotProtocolHandler)
            or not entry[0].transitions.is_connected()
        ):
            return None
        return entry[1].delivery_stats()

    @staticmethod
    def _create_ssl_context(listener: Any) -> ssl.SSLContext:
        context = Broker._create_ssl_context(listener)
        context.verify_mode = ssl.CERT_REQUIRED
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Any]:
        # amqtt 0.12.1's version, with authentication and authorisation moved before the client id
        # touches any existing session (see the module docstring).
        try:
            handler, incoming = await FakeIotProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError:
            await writer.close()
            raise
        except (AMQTTError, NoDataError) as exc:
            await writer.close()  # amqtt leaves it open (a refused or truncated CONNECT)
            raise AMQTTError(exc) from exc
        assert isinstance(handler, FakeIotProtocolHandler)
        handler.configure(self.limits, self.counters)
        certificate = getattr(writer, "certificate_id", None)
        client_id = incoming.client_id or ""
        try:
            principal = admit(
                client_id,
                username=incoming.username,
                password=incoming.password,
                certificate_id=certificate,
                certificate_status=self._certificate_status(certificate)
                if certificate is not None
                else None,
                will_topic=incoming.will_topic if incoming.will_flag else None,
                credentials=self._credentials,
            )
        except ConnectRefused as refused:
            self.refusals += 1
            log.warning(
                "%r from %s: CONNECT refused: %s", client_id[:60], remote_address, refused.reason
            )
            try:
                await ConnackPacket.build(0, refused.code).to_stream(writer)
            finally:
                await writer.close()
            raise AMQTTError(f"CONNECT refused: {refused.reason}") from None

        session = incoming
        session.parent = 0
        if not client_id:
            session.client_id = gen_client_id()  # only the backend role gets here (admit)
        elif incoming.clean_session:
            await self._delete_session(client_id)  # take-over, now of an authorised client only
        elif client_id in self._sessions:
            existing = self._sessions[client_id][0]
            if getattr(existing, PRINCIPAL_ATTRIBUTE, None) == principal:
                await self._end_connection_of(existing)
                # as amqtt: the new connection brings its own will, keepalive and credentials
                for name in (
                    "will_flag",
                    "will_message",
                    "will_topic",
                    "will_qos",
                    "keep_alive",
                    "username",
                    "password",
                ):
                    setattr(existing, name, getattr(incoming, name))
                session = existing
                session.parent = 1
            else:
                log.info(
                    "%s: persistent session belongs to another principal: starting a new one",
                    client_id,
                )
                await self._delete_session(client_id)
        if isinstance(reader, BoundedStreamReader):
            reader.label = session.client_id
        setattr(session, PRINCIPAL_ATTRIBUTE, principal)
        setattr(session, ROLE_ATTRIBUTE, principal.role)
        setattr(session, CERTIFICATE_ATTRIBUTE, certificate)
        timeout_disconnect_delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(timeout_disconnect_delay, int):
            session.keep_alive += timeout_disconnect_delay
        return handler, session

    async def _end_connection_of(self, session: Any) -> None:
        """Take-over of a persistent session that is still connected: end the old connection and let it
        finish (amqtt would reuse the session at once, and the old connection's teardown would then mark
        the new one disconnected)."""
        entry = self._sessions.get(session.client_id)
        if entry is None or entry[0] is not session or not session.transitions.is_connected():
            return
        self.takeovers += 1
        log.info(
            "client %s connected again: disconnecting the previous connection (take-over)",
            session.client_id,
        )
        gone = asyncio.Event()
        setattr(session, _GONE_ATTRIBUTE, gone)
        setattr(session, presence.REASON_ATTRIBUTE, presence.DUPLICATE_CLIENTID)
        await entry[1].stop()
        try:
            await asyncio.wait_for(gone.wait(), TAKEOVER_TIMEOUT)
        except TimeoutError:
            log.warning(
                "%s: the previous connection did not end within %g s",
                session.client_id,
                TAKEOVER_TIMEOUT,
            )

    async def _authenticate(self, session: Any, _listener: Any) -> bool:
        # Decided in _initialize_client_session, before take-over; only admitted sessions get here.
        return isinstance(getattr(session, PRINCIPAL_ATTRIBUTE, None), Principal)

    async def _topic_filtering(self, session: Any, topic: str, action: Action) -> bool:
        if session is None:
            return True
        role = getattr(session, ROLE_ATTRIBUTE, Role.DEVICE)
        check = {
            Action.PUBLISH: may_publish,
            Action.SUBSCRIBE: may_subscribe,
            Action.RECEIVE: may_receive,
        }[action]
        allowed = check(role, session.client_id, topic)
        if not allowed and action is Action.SUBSCRIBE:
            log.info("%s: SUBSCRIBE to %r refused by policy", session.client_id, topic)
        return allowed

    async def _broadcast_message(
        self, session: Any, topic: Any, data: Any, force_qos: int | None = None
    ) -> None:
        await super()._broadcast_message(session, topic, data, force_qos)
        if self.rules is not None and topic:
            client_id = session.client_id if session is not None else None
            for out_topic, payload, qos in self.rules.on_message(
                topic, bytes(data or b""), client_id
            ):
                await super()._broadcast_message(None, out_topic, payload, qos)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        # amqtt calls this at CONNECT for every client's subscription filters: only this session's count.
        topic_filter = subscription[0]
        if not any(
            subscriber is session for subscriber, _ in self._subscriptions.get(topic_filter, ())
        ):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(
                session, topic, Action.RECEIVE
            ):
                qos = min(subscription[1], retained.qos or subscription[1])
                tasks.append(
                    asyncio.ensure_future(
                        handler.mqtt_publish(retained.topic, retained.data, qos, retain=True)
                    )
                )
        if tasks:
            await asyncio.wait(tasks)

    async def _retain_broadcast_message(
        self, broadcast: dict[str, Any], qos: int, target_session: Any
    ) -> None:
        # A message for a disconnected persistent session: kept within the same bounds as a connected client's.
        queue_offline(
            target_session,
            Outgoing(broadcast["topic"], broadcast["data"], qos, False),
            self.limits,
            self.counters,
        )

    async def _publish_session_retained_messages(self, session: Any) -> None:
        # Messages queued while a persistent session was offline: still subject to the receive check.
        handler = self._get_handler(session)
        offline_queue_drained(session)
        tasks = []
        while handler is not None and not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            if await self._topic_filtering(session, queued.topic, Action.RECEIVE):
                tasks.append(
                    asyncio.ensure_future(
                        handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=True)
                    )
                )
        if tasks:
            await asyncio.wait(tasks)

    def connected_client_ids(self) -> list[str]:
        return [
            cid
            for cid, (session, _) in self._sessions.items()
            if session.transitions.is_connected()
        ]

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        peer = writer.get_extra_info("peername")
        bounded = BoundedStreamReader(
            reader, peer=f"{peer[0]}:{peer[1]}" if peer else "?", counters=self.counters
        )
        self._open_writers.add(writer)
        try:
            await self._client_connected(listener_name, bounded, _ClosingStreamWriter(writer))
        finally:
            self._open_writers.discard(writer)

    async def shutdown(self) -> None:
        """amqtt's shutdown, then close every connection it did not know about.

        amqtt closes the connections of the sessions it holds; a connection
        still in its CONNECT, refused, or taken over is not among them, and its
        socket would outlive the event loop (a ResourceWarning "loop is closed"
        when it is collected, in whatever test runs next).
        """
        await super().shutdown()
        writers = list(self._open_writers)
        for writer in writers:
            writer.transport.abort()
        for writer in writers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _delete_session(self, client_id: str) -> None:
        entry = self._sessions.get(client_id)
        if entry is not None and entry[0].transitions.is_connected():
            self.takeovers += 1
            log.info(
                "client %s connected again: disconnecting the previous connection (take-over)",
                client_id,
            )
            setattr(entry[0], presence.REASON_ATTRIBUTE, presence.DUPLICATE_CLIENTID)
            await entry[1].stop()
        await super()._delete_session(client_id)

    async def _handle_disconnect(
        self, client_session: Any, handler: Any, disconnect_waiter: Any
    ) -> None:
        # Record why the client went before amqtt fires CLIENT_DISCONNECTED (see presence.py).
        if getattr(client_session, presence.REASON_ATTRIBUTE, None) is None:
            client_initiated = isinstance(disconnect_waiter.result(), DisconnectPacket)
            reason = (
                presence.CLIENT_INITIATED_DISCONNECT
                if client_initiated
                else presence.CONNECTION_LOST
            )
            if self.transitions.state == "stopping":
                reason = presence.SERVER_INITIATED_DISCONNECT
            setattr(client_session, presence.REASON_ATTRIBUTE, reason)
        try:
            await super()._handle_disconnect(client_session, handler, disconnect_waiter)
        finally:
            gone = getattr(client_session, _GONE_ATTRIBUTE, None)
            if gone is not None:
                gone.set()
                setattr(client_session, _GONE_ATTRIBUTE, None)

    async def _handle_message_delivery(
        self, client_session: Any, handler: Any, wait_deliver: Any
    ) -> bool:
        app_message = wait_deliver.result()
        topic = app_message.topic if app_message is not None else None
        if topic and not await self._topic_filtering(
            client_session, topic=topic, action=Action.PUBLISH
        ):
            # AWS IoT closes a client that publishes where its policy does not allow.
            log.warning(
                "%s: PUBLISH to %r refused by policy, closing connection",
                client_session.client_id,
                topic,
            )
            self.refusals += 1
            setattr(client_session, presence.REASON_ATTRIBUTE, presence.FORBIDDEN_ACCESS)
            await handler.stop()
            return True
        if topic and topic.startswith("$") and not topic.startswith("$aws/"):
            # amqtt would log and then ignore the client forever; close it instead, as AWS IoT does.
            log.warning(
                "%s: PUBLISH to reserved topic %r refused, closing connection",
                client_session.client_id,
                topic,
            )
            setattr(client_session, presence.REASON_ATTRIBUTE, presence.FORBIDDEN_ACCESS)
            await handler.stop()
            return True  # the message loop now sees the disconnect and cleans up
        if not topic or not topic.startswith("$aws/"):
            return bool(
                await super()._handle_message_delivery(client_session, handler, wait_deliver)
            )
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=app_message
        )
        if "#" in topic or "+" in topic:
            log.warning(
                "%s: wildcard in PUBLISH topic %r, closing connection",
                client_session.client_id,
                topic,
            )
            return False
        payload = bytes(app_message.data or b"")
        await self._broadcast_message(client_session, topic, payload)
        for out_topic, out_payload in self.shadows.handle_mqtt(topic, payload) or ():
            await self._broadcast_message(None, out_topic, out_payload)
        return True
