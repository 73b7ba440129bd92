"""MQTT shared subscriptions in fakeiot's broker (amqtt 0.12.1 has none): the broker half of
:mod:`fakeiot.shared_subscriptions`.

amqtt 0.12.1 private methods overridden here (see :mod:`fakeiot.broker`):

* ``add_subscription``: a filter ``$share/<group>/<filter>`` joins the group
  instead of becoming one of amqtt's subscriptions; its ``<filter>`` is
  checked as amqtt checks any filter (wildcards), and by the access policy
  (:func:`fakeiot.policy.may_subscribe` sees through ``$share/``).  It is not
  among amqtt's subscriptions, so no retained message is sent for it (MQTT 5,
  3.8.4; AWS IoT the same).
* ``add_subscription`` (every filter): at most
  :data:`fakeiot.limits.MAX_SUBSCRIPTIONS` per client, each of bounded size
  (:class:`fakeiot.limits.SubscriptionBook`); beyond, the SUBACK failure code.
* ``_del_subscription``: UNSUBSCRIBE ``$share/<group>/<filter>`` leaves the group;
  a normal filter nobody holds any more leaves amqtt's table (amqtt kept it).
* ``_del_all_subscriptions``: a session that ends (clean session, take-over)
  leaves every group; a persistent session that goes offline stays in them.
* ``_broadcast_message``: after amqtt's delivery to normal subscribers, each
  matching group's message goes to one member
  (:meth:`fakeiot.shared_subscriptions.SharedGroup.choose`).

A member's connection that ends with shared-subscription QoS 1 messages not
acknowledged (sent or still queued) hands them to another online member of
the group (:meth:`SharedBroker._hand_on_shared`, called from
:meth:`fakeiot.connection.FakeIotProtocolHandler.stop`); with no other member
online they stay with the session as any of its messages (kept for its next
connection if persistent, dropped otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action

from .connection import FakeIotProtocolHandler, LimitCounters, queue_offline
from .limits import DeliveryLimits, Outgoing, SubscriptionBook
from .shared_subscriptions import (
    InvalidSharedFilter,
    SharedGroup,
    SharedSubscriptions,
    parse_shared,
    valid_filter,
)

log = logging.getLogger(__name__)

SUBACK_FAILURE = 0x80


class SharedBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """Shared subscriptions (mixed into :class:`fakeiot.broker.FakeIotBroker`)."""

    limits: DeliveryLimits
    counters: LimitCounters
    shared_subscriptions: SharedSubscriptions
    subscription_book: SubscriptionBook

    async def add_subscription(self, subscription: tuple[str, int], session: Any) -> int:
        topic_filter, qos = subscription
        refusal = self.subscription_book.refusal(session.client_id, topic_filter)
        if refusal is not None:
            log.info(
                "%s: SUBSCRIBE to %r refused: %s", session.client_id, topic_filter[:80], refusal
            )
            return SUBACK_FAILURE
        granted = await self._add_subscription(topic_filter, qos, session)
        if granted != SUBACK_FAILURE:
            self.subscription_book.add(session.client_id, topic_filter)
        return granted

    async def _add_subscription(self, topic_filter: str, qos: int, session: Any) -> int:
        subscription = (topic_filter, qos)
        try:
            shared = parse_shared(topic_filter)
        except InvalidSharedFilter as exc:
            log.info("%s: SUBSCRIBE refused: %s", session.client_id, exc)
            return SUBACK_FAILURE
        if shared is None:
            return int(await super().add_subscription(subscription, session))
        if not valid_filter(shared.topic_filter):
            log.info("%s: SUBSCRIBE to %r refused: invalid filter", session.client_id, topic_filter)
            return SUBACK_FAILURE
        if not await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE):
            return SUBACK_FAILURE
        max_qos = self.config.get("max-qos", qos)
        granted = min(qos, max_qos if isinstance(max_qos, int) else qos)
        self.shared_subscriptions.join(shared, session.client_id, granted)
        return granted

    def _del_subscription(self, a_filter: str, session: Any) -> int:
        self.subscription_book.remove(session.client_id, a_filter)
        try:
            shared = parse_shared(a_filter)
        except InvalidSharedFilter:
            shared = None  # never joined: nothing to leave
        if shared is None:
            deleted = int(super()._del_subscription(a_filter, session))
            if not self._subscriptions.get(a_filter, True):
                # amqtt keeps a filter nobody holds any more (until a session ends): subscribe /
                # unsubscribe churn would grow its table, and every message's matching, forever.
                del self._subscriptions[a_filter]
            return deleted
        return int(self.shared_subscriptions.leave(shared, session.client_id))

    async def _del_all_subscriptions(self, session: Any) -> None:
        # amqtt's, through _del_subscription above (it also drops emptied filters).
        for topic_filter in list(self._subscriptions):
            self._del_subscription(topic_filter, session)
        self.shared_subscriptions.leave_all(session.client_id)
        self.subscription_book.remove_all(session.client_id)

    async def _broadcast_message(
        self, session: Any, topic: Any, data: Any, force_qos: int | None = None
    ) -> None:
        await super()._broadcast_message(session, topic, data, force_qos)
        if topic and len(self.shared_subscriptions):
            payload = bytes(data or b"")
            for group in self.shared_subscriptions.matching(topic, self._matches):
                await self._deliver_to_group(group, topic, payload, force_qos)

    async def _receivers(self, group: SharedGroup, topic: str) -> set[str]:
        """The members the access policy lets receive ``topic``."""
        allowed = set()
        for client_id, _ in group.members:
            entry = self._sessions.get(client_id)
            if entry is not None and await self._topic_filtering(entry[0], topic, Action.RECEIVE):
                allowed.add(client_id)
        return allowed

    def _online_handler(self, client_id: str) -> FakeIotProtocolHandler | None:
        entry = self._sessions.get(client_id)
        if entry is None or not entry[0].transitions.is_connected():
            return None
        handler = entry[1]
        if not isinstance(handler, FakeIotProtocolHandler) or handler.is_closing:
            return None
        return handler

    def _online_among(self, allowed: set[str]) -> Callable[[str], bool]:
        return lambda cid: cid in allowed and self._online_handler(cid) is not None

    def _keeps_offline(self, client_id: str) -> bool:
        entry = self._sessions.get(client_id)
        return (
            entry is not None
            and not entry[0].transitions.is_connected()
            and not entry[0].clean_session
        )

    async def _deliver_to_group(
        self, group: SharedGroup, topic: str, payload: bytes, force_qos: int | None
    ) -> None:
        allowed = await self._receivers(group, topic)
        chosen = group.choose(
            self._online_among(allowed), lambda cid: cid in allowed and self._keeps_offline(cid)
        )
        if chosen is None:
            log.debug("%s: no member of %s to deliver %r to", group.key, group.key, topic)
            return
        client_id, sub_qos = chosen
        message = Outgoing(
            topic, payload, sub_qos if force_qos is None else force_qos, False, group.key
        )
        handler = self._online_handler(client_id)
        if handler is not None:
            handler.publish_shared(message)
        elif message.qos:
            # A persistent member, offline, and no member online: its queue keeps it (as Mosquitto's).
            queue_offline(self._sessions[client_id][0], message, self.limits, self.counters)

    async def _hand_on_shared(self, client_id: str, messages: list[Outgoing]) -> list[Outgoing]:
        """Give another online member of its group each message that ``client_id``'s ending
        connection leaves unacknowledged; returns those no other member could take."""
        kept: list[Outgoing] = []
        handed = 0
        for message in messages:
            group = (
                self.shared_subscriptions.group(message.group)
                if message.group is not None
                else None
            )
            chosen = None
            if group is not None:
                allowed = await self._receivers(group, message.topic)
                chosen = group.choose(
                    self._online_among(allowed), lambda _cid: False, excluding=client_id
                )
            handler = self._online_handler(chosen[0]) if chosen is not None else None
            if handler is None:
                kept.append(message)
                continue
            handler.publish_shared(replace(message, retain=False))
            handed += 1
        if handed:
            log.info(
                "%s: %d unacknowledged shared-subscription message(s) handed to other members",
                client_id,
                handed,
            )
        return kept
