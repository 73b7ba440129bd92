"""What a client may publish, subscribe to and receive, and where messages go: the routing half of
fakeiot's broker.

amqtt 0.12.1 private methods overridden here (see :mod:`fakeiot.broker`):

* ``_handle_message_delivery``: amqtt drops a client's PUBLISH to a topic
  starting with ``$`` (MQTT-4.7.2-1) and leaves the session wedged.  AWS IoT
  accepts publishes to its reserved ``$aws/`` topics; so does fakeiot.  Shadow
  requests (``$aws/things/<name>/shadow/update|get|delete``) are answered by
  the shadow service, in the broker's store thread
  (:class:`fakeiot.store_worker.StoreWorker`), one at a time so that answers
  go out in the order the shadows were written.  A publish to any other ``$``
  topic, or to a topic with a wildcard or none at all, closes the client's
  connection through the normal disconnect path (presence event, session
  state); amqtt would just stop reading that client.
* ``_topic_filtering``: fakeiot's IoT-policy-like access control
  (:mod:`fakeiot.policy`): the backend role by user name and password, every
  other client confined to its own topics; a refused PUBLISH closes the
  connection as AWS IoT does.
* ``_publish_retained_messages_for_subscription``,
  ``_publish_session_retained_messages``: amqtt hands a connecting client the
  retained messages of *every* client's subscriptions, and queued messages
  without a check; here only those of the client's own subscriptions that
  it may receive.
* ``_retain_broadcast_message``: bounds the queue of a disconnected
  persistent session as a connected client's (:mod:`fakeiot.limits`).
* ``_broadcast_message``: every delivered message also goes through the
  rules engine (:mod:`fakeiot.rules`); its table items are written in the
  store thread, its Lambda invocations queued for the Lambda workers.  It (and
  each republished message) is also offered to the console's live feed
  (:mod:`fakeiot.console_tap`), which never blocks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.events import BrokerEvents

from . import presence
from .broker_sessions import ROLE_ATTRIBUTE
from .connection import LimitCounters, offline_queue_drained, queue_offline
from .console_tap import ConsoleTap
from .limits import DeliveryLimits, Outgoing
from .policy import Role, may_publish, may_receive, may_subscribe
from .rules import RulesEngine
from .shadow_service import ShadowService
from .store_worker import StoreWorker
from .tally import Tally

log = logging.getLogger(__name__)


class RoutingBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """Access control, ``$aws/`` topics, shadows and rules (mixed into :class:`FakeIotBroker`)."""

    limits: DeliveryLimits
    counters: LimitCounters
    refusals: int
    policy_refusals: Tally
    published: Tally
    shadows: ShadowService
    rules: RulesEngine | None
    tap: ConsoleTap | None
    _store_worker: StoreWorker
    _shadow_lock: asyncio.Lock

    async def _close_client(self, session: Any, handler: Any, reason: str) -> bool:
        """End a client's connection through the normal disconnect path (presence event, session
        state), recording ``reason``; returns True, what the message loop must then be told."""
        setattr(session, presence.REASON_ATTRIBUTE, reason)
        await handler.stop()
        return True  # the message loop now sees the disconnect and cleans up

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
            self.policy_refusals.add("subscribe")
            log.info("%s: SUBSCRIBE to %r refused by policy", session.client_id, topic)
        return allowed

    async def _broadcast_message(
        self, session: Any, topic: Any, data: Any, force_qos: int | None = None
    ) -> None:
        self.published.add()
        if self.tap is not None:
            self.tap.offer(topic, data)
        await super()._broadcast_message(session, topic, data, force_qos)
        rules = self.rules
        if rules is None or not topic or not rules.active:
            return
        client_id = session.client_id if session is not None else None
        output = rules.evaluate(topic, bytes(data or b""), client_id)
        if output.items:
            await self._store_worker.run(rules.store_items, output.items)
        rules.invoke(output.invocations)  # queued for the Lambda workers, never waited for
        for out_topic, payload, qos in output.republish:
            self.published.add()
            if self.tap is not None:
                self.tap.offer(out_topic, payload)
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

    async def _handle_message_delivery(
        self, client_session: Any, handler: Any, wait_deliver: Any
    ) -> bool:
        app_message = wait_deliver.result()
        if app_message is None:
            return bool(
                await super()._handle_message_delivery(client_session, handler, wait_deliver)
            )
        client_id = client_session.client_id
        topic = app_message.topic or ""
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            # AWS IoT closes a client that publishes where its policy does not allow.
            log.warning("%s: PUBLISH to %r refused by policy, closing connection", client_id, topic)
            self.refusals += 1
            self.policy_refusals.add("publish")
            return await self._close_client(client_session, handler, presence.FORBIDDEN_ACCESS)
        if not topic or "#" in topic or "+" in topic:
            # MQTT-3.3.2-2 (and 4.7.3-1): amqtt would stop reading the client but leave it connected.
            log.warning("%s: invalid PUBLISH topic %r, closing connection", client_id, topic)
            return await self._close_client(client_session, handler, presence.CLIENT_ERROR)
        if topic.startswith("$") and not topic.startswith("$aws/"):
            # amqtt would log and then ignore the client forever; close it instead, as AWS IoT does.
            log.warning(
                "%s: PUBLISH to reserved topic %r refused, closing connection", client_id, topic
            )
            return await self._close_client(client_session, handler, presence.FORBIDDEN_ACCESS)
        if not topic.startswith("$aws/"):
            return bool(
                await super()._handle_message_delivery(client_session, handler, wait_deliver)
            )
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_id, message=app_message
        )
        payload = bytes(app_message.data or b"")
        await self._broadcast_message(client_session, topic, payload)
        if self.shadows.is_request(topic):
            # One request at a time: its answers go out before the next request's, in write order.
            async with self._shadow_lock:
                answers = await self._store_worker.run(self.shadows.handle_mqtt, topic, payload)
                for out_topic, out_payload in answers or ():
                    await self._broadcast_message(None, out_topic, out_payload)
        return True
