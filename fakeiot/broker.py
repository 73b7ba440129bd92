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
* ``stream_connected``: amqtt's ``StreamWriterAdapter.close()`` skips closing
  the transport when flushing fails (the peer is already gone), leaking one
  socket per abruptly closed client; the adapter here always closes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.events import BrokerEvents
from amqtt.mqtt.disconnect import DisconnectPacket

from . import presence
from .shadow_service import ShadowService

log = logging.getLogger(__name__)


def broker_config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": -1}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            "fakeiot.presence.PresencePlugin": {},
        },
    }


class _ClosingStreamWriter(StreamWriterAdapter):
    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._writer.close()  # idempotent


class FakeIotBroker(Broker):
    """amqtt's broker with AWS IoT's take-over and ``$aws/`` topics."""

    def __init__(self, config: dict[str, Any], shadows: ShadowService) -> None:
        super().__init__(config)
        self.shadows = shadows
        self.takeovers = 0

    @property
    def bound_port(self) -> int:
        server = self._servers["default"]
        return int(server.instance.sockets[0].getsockname()[1])

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
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            log.info("%s not allowed to publish to %s", client_session.client_id, topic)
            return True
        payload = bytes(app_message.data or b"")
        await self._broadcast_message(client_session, topic, payload)
        for out_topic, out_payload in self.shadows.handle_mqtt(topic, payload) or ():
            await self._broadcast_message(None, out_topic, out_payload)
        return True
