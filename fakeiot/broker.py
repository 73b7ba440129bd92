"""The MQTT broker of fakeiot: amqtt 0.12.1, with the gaps to AWS IoT closed.

amqtt is pinned to 0.12.1 because some of its private methods are overridden
here, in the one place where fakeiot patches it:

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
* ``_create_ssl_context``: amqtt asks for client certificates but accepts
  clients without one (``CERT_OPTIONAL``); fakeiot's TLS listener requires
  one (mutual TLS, as AWS IoT's port 8883) and TLS 1.2+.  A certificate
  registered through the API (CreateKeysAndCertificate) must be ACTIVE.
* ``_broadcast_message``: every delivered message also goes through the
  rules engine (:mod:`fakeiot.rules`).
* ``stream_connected``: amqtt's ``StreamWriterAdapter.close()`` skips closing
  the transport when flushing fails (the peer is already gone), leaking one
  socket per abruptly closed client; the adapter here always closes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.events import BrokerEvents
from amqtt.mqtt.disconnect import DisconnectPacket

from . import presence
from .policy import BACKEND_USERNAME, Role, may_publish, may_receive, may_subscribe
from .rules import RulesEngine
from .shadow_service import ShadowService

log = logging.getLogger(__name__)

ROLE_ATTRIBUTE = "fakeiot_role"
CERTIFICATE_ATTRIBUTE = "fakeiot_certificate_id"


@dataclass(frozen=True)
class TlsListener:
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path


def broker_config(host: str, port: int, tls: TlsListener | None = None) -> dict[str, Any]:
    listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": -1}}
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
            await super().close()
        finally:
            self._writer.close()  # idempotent


class FakeIotBroker(Broker):
    """amqtt's broker with AWS IoT's take-over and ``$aws/`` topics."""

    def __init__(
        self,
        config: dict[str, Any],
        shadows: ShadowService,
        *,
        backend_password: str,
        rules: RulesEngine | None = None,
        certificate_status: Callable[[str], str | None] = lambda _id: None,
    ) -> None:
        super().__init__(config)
        self.shadows = shadows
        self.rules = rules
        self.takeovers = 0
        self.refusals = 0
        self._backend_password = backend_password.encode()
        self._certificate_status = certificate_status

    def bound_port_of(self, listener: str) -> int:
        server = self._servers[listener]
        return int(server.instance.sockets[0].getsockname()[1])

    @property
    def bound_port(self) -> int:
        return self.bound_port_of("default")

    @staticmethod
    def _create_ssl_context(listener: Any) -> ssl.SSLContext:
        context = Broker._create_ssl_context(listener)
        context.verify_mode = ssl.CERT_REQUIRED
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def _handle_client_session(self, reader: Any, writer: Any, client_session: Any, *args: Any) -> None:
        setattr(client_session, CERTIFICATE_ATTRIBUTE, getattr(writer, "certificate_id", None))
        await super()._handle_client_session(reader, writer, client_session, *args)

    async def _authenticate(self, session: Any, _listener: Any) -> bool:
        certificate = getattr(session, CERTIFICATE_ATTRIBUTE, None)
        if certificate is not None and self._certificate_status(certificate) not in (None, "ACTIVE"):
            log.warning("%s: certificate %s is not ACTIVE: connection refused", session.client_id, certificate[:12])
            self.refusals += 1
            return False
        if session.username == BACKEND_USERNAME:
            given = (session.password or "").encode()
            if not hmac.compare_digest(given, self._backend_password):
                log.warning("%s: wrong backend password: connection refused", session.client_id)
                self.refusals += 1
                return False
            setattr(session, ROLE_ATTRIBUTE, Role.BACKEND)
        else:
            setattr(session, ROLE_ATTRIBUTE, Role.DEVICE)
        return True

    async def _topic_filtering(self, session: Any, topic: str, action: Action) -> bool:
        if session is None:
            return True
        role = getattr(session, ROLE_ATTRIBUTE, Role.DEVICE)
        check = {Action.PUBLISH: may_publish, Action.SUBSCRIBE: may_subscribe, Action.RECEIVE: may_receive}[action]
        allowed = check(role, session.client_id, topic)
        if not allowed and action is Action.SUBSCRIBE:
            log.info("%s: SUBSCRIBE to %r refused by policy", session.client_id, topic)
        return allowed

    async def _broadcast_message(self, session: Any, topic: Any, data: Any, force_qos: int | None = None) -> None:
        await super()._broadcast_message(session, topic, data, force_qos)
        if self.rules is not None and topic:
            client_id = session.client_id if session is not None else None
            for out_topic, payload, qos in self.rules.on_message(topic, bytes(data or b""), client_id):
                await super()._broadcast_message(None, out_topic, payload, qos)

    def connected_client_ids(self) -> list[str]:
        return [cid for cid, (session, _) in self._sessions.items() if session.transitions.is_connected()]

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str) -> None:
        await self._client_connected(listener_name, StreamReaderAdapter(reader), _ClosingStreamWriter(writer))

    async def _delete_session(self, client_id: str) -> None:
        entry = self._sessions.get(client_id)
        if entry is not None and entry[0].transitions.is_connected():
            self.takeovers += 1
            log.info("client %s connected again: disconnecting the previous connection (take-over)", client_id)
            setattr(entry[0], presence.REASON_ATTRIBUTE, presence.DUPLICATE_CLIENTID)
            await entry[1].stop()
        await super()._delete_session(client_id)

    async def _handle_disconnect(self, client_session: Any, handler: Any, disconnect_waiter: Any) -> None:
        # Record why the client went before amqtt fires CLIENT_DISCONNECTED (see presence.py).
        if getattr(client_session, presence.REASON_ATTRIBUTE, None) is None:
            client_initiated = isinstance(disconnect_waiter.result(), DisconnectPacket)
            reason = presence.CLIENT_INITIATED_DISCONNECT if client_initiated else presence.CONNECTION_LOST
            if self.transitions.state == "stopping":
                reason = presence.SERVER_INITIATED_DISCONNECT
            setattr(client_session, presence.REASON_ATTRIBUTE, reason)
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def _handle_message_delivery(self, client_session: Any, handler: Any, wait_deliver: Any) -> bool:
        app_message = wait_deliver.result()
        topic = app_message.topic if app_message is not None else None
        if topic and not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            # AWS IoT closes a client that publishes where its policy does not allow.
            log.warning("%s: PUBLISH to %r refused by policy, closing connection", client_session.client_id, topic)
            self.refusals += 1
            setattr(client_session, presence.REASON_ATTRIBUTE, presence.FORBIDDEN_ACCESS)
            await handler.stop()
            return True
        if topic and topic.startswith("$") and not topic.startswith("$aws/"):
            # amqtt would log and then ignore the client forever; close it instead, as AWS IoT does.
            log.warning("%s: PUBLISH to reserved topic %r refused, closing connection", client_session.client_id, topic)
            setattr(client_session, presence.REASON_ATTRIBUTE, presence.FORBIDDEN_ACCESS)
            await handler.stop()
            return True  # the message loop now sees the disconnect and cleans up
        if not topic or not topic.startswith("$aws/"):
            return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=app_message
        )
        if "#" in topic or "+" in topic:
            log.warning("%s: wildcard in PUBLISH topic %r, closing connection", client_session.client_id, topic)
            return False
        payload = bytes(app_message.data or b"")
        await self._broadcast_message(client_session, topic, payload)
        for out_topic, out_payload in self.shadows.handle_mqtt(topic, payload) or ():
            await self._broadcast_message(None, out_topic, out_payload)
        return True
