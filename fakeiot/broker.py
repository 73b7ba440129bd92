"""The MQTT broker of fakeiot: amqtt 0.12.1, with the gaps to AWS IoT closed.

amqtt is pinned to 0.12.1 because some of its private methods are overridden,
in these modules only, each saying why:

* :mod:`fakeiot.broker_sessions`: CONNECT admission before the client id
  touches any session, take-over of a client id, persistent sessions kept
  per principal, why a client went (presence events);
* :mod:`fakeiot.broker_routing`: IoT-policy-like access control, ``$aws/``
  topics and shadow requests, retained and queued messages only for whom
  may receive them, the rules engine;
* :mod:`fakeiot.broker_shared`: MQTT shared subscriptions
  (``$share/<group>/<filter>``), which amqtt does not have;
* here: the listeners (``_create_ssl_context``: fakeiot's TLS listener
  requires a client certificate, as AWS IoT's port 8883, and TLS 1.2+; a
  certificate registered through the API must be ACTIVE), every connection's
  socket (``stream_connected``: :class:`fakeiot.listeners.ClosingStreamWriter`
  and a reader that refuses packets over :data:`fakeiot.limits.MAX_PACKET`
  before reading them, :class:`fakeiot.connection.BoundedStreamReader`),
  start and shutdown.

Per-client limits (:mod:`fakeiot.limits`, :mod:`fakeiot.connection`): each
connection's handler is a :class:`fakeiot.connection.FakeIotProtocolHandler`,
with AWS IoT's QoS 1 in-flight window and a bounded queue behind it, and its
128 KB payload limit.

Store operations the broker makes (shadow requests over MQTT, rule table
items, certificate look-ups) run in its :class:`fakeiot.store_worker.StoreWorker`
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

from amqtt.broker import Broker

from . import presence
from .broker_routing import RoutingBroker
from .broker_sessions import SessionsBroker
from .broker_shared import SharedBroker
from .connection import BoundedStreamReader, FakeIotProtocolHandler, LimitCounters
from .console_tap import ConsoleTap
from .limits import DeliveryLimits, DeliveryStats, SubscriptionBook
from .listeners import ClosingStreamWriter
from .policy import Credentials
from .rules import RulesEngine
from .shadow_service import ShadowService
from .shared_subscriptions import SharedSubscriptions
from .store_worker import StoreWorker
from .tally import Tally

log = logging.getLogger(__name__)

# At shutdown, how long the presence events of the clients being disconnected may take to go out.
SHUTDOWN_DRAIN_TIMEOUT = 2.0


class _NoStartupTraceback(logging.Filter):
    """amqtt logs a traceback when a listener cannot bind; fakeiot reports the cause in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Broker startup failed"


class FakeIotBroker(SessionsBroker, RoutingBroker, SharedBroker):
    """amqtt's broker with AWS IoT's take-over, access control, ``$aws/`` topics, shadows, rules and
    shared subscriptions."""

    def __init__(
        self,
        config: dict[str, Any],
        shadows: ShadowService,
        *,
        credentials: Credentials,
        rules: RulesEngine | None = None,
        certificate_status: Callable[[str], str | None] = lambda _id: None,
        limits: DeliveryLimits | None = None,
        tap: ConsoleTap | None = None,
    ) -> None:
        self._open_writers: set[asyncio.StreamWriter] = set()
        self.shared_subscriptions = SharedSubscriptions()
        self.subscription_book = SubscriptionBook()
        self._shared_hand_on = self._hand_on_shared
        super().__init__(config)
        self.limits = limits if limits is not None else DeliveryLimits()
        self.counters = LimitCounters()
        self.shadows = shadows
        self.rules = rules
        self.tap = tap  # the console's live feed (fakeiot/console_tap.py)
        self.takeovers = 0
        self.refusals = 0
        # The metrics (fakeiot/metrics.py): policy refusals by action (connect, publish,
        # subscribe), and every message routed (from clients, the API, shadows, rules, presence).
        self.policy_refusals = Tally()
        self.published = Tally()
        self._credentials = credentials
        self._certificate_status = certificate_status
        self._store_worker = StoreWorker()
        self._shadow_lock = asyncio.Lock()

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

    def connected_client_ids(self) -> list[str]:
        return [
            cid
            for cid, (session, _) in self._sessions.items()
            if session.transitions.is_connected()
        ]

    @staticmethod
    def _create_ssl_context(listener: Any) -> ssl.SSLContext:
        context: ssl.SSLContext = Broker._create_ssl_context(listener)  # amqtt is untyped
        context.verify_mode = ssl.CERT_REQUIRED
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def _store_lookup(self, function: Callable[[str], Any], arg: str) -> Any:
        return await self._store_worker.run(function, arg)

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        peer = writer.get_extra_info("peername")
        bounded = BoundedStreamReader(
            reader, peer=f"{peer[0]}:{peer[1]}" if peer else "?", counters=self.counters
        )
        self._open_writers.add(writer)
        try:
            await self._client_connected(listener_name, bounded, ClosingStreamWriter(writer))
        finally:
            self._open_writers.discard(writer)

    async def start(self) -> None:
        """amqtt's start; a listener that cannot bind raises (amqtt's BrokerError) without a logged
        traceback: the caller reports it."""
        quiet = _NoStartupTraceback()
        self.logger.addFilter(quiet)
        try:
            await super().start()
        except BaseException:
            self._store_worker.close()
            raise
        finally:
            self.logger.removeFilter(quiet)

    async def shutdown(self) -> None:
        """Disconnect every client and let their presence events go out; then amqtt's shutdown, and
        close every connection it did not know about.

        amqtt stops its broadcast loop right after ending the sessions, so the
        presence event of a client it disconnects is never sent, and it says so
        twice ("1 messages not broadcasted").  amqtt closes the connections of
        the sessions it holds; a connection still in its CONNECT, refused, or
        taken over is not among them, and its socket would outlive the event
        loop (a ResourceWarning "loop is closed" when it is collected, in
        whatever test runs next).
        """
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()  # no new connections (amqtt waits for it to close below)
        for session, handler in list(self._sessions.values()):
            if session.transitions.is_connected():
                setattr(session, presence.REASON_ATTRIBUTE, presence.SERVER_INITIATED_DISCONNECT)
                await handler.stop()
        await self._drain_broadcasts()
        try:
            await super().shutdown()
        finally:
            writers = list(self._open_writers)
            for writer in writers:
                writer.transport.abort()
            for writer in writers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
            self._store_worker.close()

    async def _drain_broadcasts(self) -> None:
        """Wait (bounded) until the broadcast loop has taken every queued message; drop the rest,
        logged once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_DRAIN_TIMEOUT):
                while True:
                    await self.plugins_manager.wait_fired_events()
                    if self._broadcast_queue.empty():
                        return
                    await asyncio.sleep(0.01)
        left = self._broadcast_queue.qsize()
        while not self._broadcast_queue.empty():
            self._broadcast_queue.get_nowait()
        if left:
            log.warning("fakeiot: %d messages not delivered at shutdown", left)
