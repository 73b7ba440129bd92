"""Who may connect, and how a client's session begins and ends: the admission half of fakeiot's broker.

amqtt 0.12.1 private methods overridden here (see :mod:`fakeiot.broker`):

* ``_initialize_client_session``: amqtt handles a CONNECT's client id
  (deleting the session of a clean-session CONNECT, resuming a persistent
  one) *before* it authenticates the client, so a CONNECT with a wrong
  password could still disconnect the id's holder, and anyone could resume
  anyone's persistent session.  Here the client is authenticated and its
  client id (and will topic) authorised first (:func:`fakeiot.policy.admit`);
  a refused CONNECT gets its CONNACK refusal and changes nothing.  A
  persistent session resumes only for the principal that made it; for
  another, a fresh session starts.  Each connection's handler is a
  :class:`fakeiot.connection.FakeIotProtocolHandler` with the per-client
  limits.
* ``_delete_session``: amqtt lets a second CONNECT with the same client id
  (clean session) run beside the first one.  AWS IoT Core and Mosquitto
  disconnect the old client ("take-over"); so does fakeiot.
* ``_authenticate``: decided in ``_initialize_client_session``.
* ``_handle_disconnect``: records why a client went (client DISCONNECT,
  connection lost, take-over, refused topic, broker shutdown) for the
  presence events of :mod:`fakeiot.presence`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.utils import gen_client_id

from . import presence
from .connection import BoundedStreamReader, FakeIotProtocolHandler, LimitCounters
from .limits import DeliveryLimits, Outgoing
from .policy import ConnectRefused, Credentials, Principal, admit
from .tally import Tally

log = logging.getLogger(__name__)

ROLE_ATTRIBUTE = "fakeiot_role"
CERTIFICATE_ATTRIBUTE = "fakeiot_certificate_id"
PRINCIPAL_ATTRIBUTE = presence.PRINCIPAL_ATTRIBUTE
# an asyncio.Event while a take-over waits for the old connection
_GONE_ATTRIBUTE = "fakeiot_connection_gone"
TAKEOVER_TIMEOUT = 5.0
_RESUMED_FROM_CONNECT = (
    "will_flag",
    "will_message",
    "will_topic",
    "will_qos",
    "keep_alive",
    "username",
    "password",
)


class SessionsBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """CONNECT admission, take-over and disconnect reasons (mixed into :class:`FakeIotBroker`)."""

    limits: DeliveryLimits
    counters: LimitCounters
    takeovers: int
    refusals: int
    policy_refusals: Tally
    _credentials: Credentials
    _certificate_status: Callable[[str], Any]
    # FakeIotBroker sets it to SharedBroker._hand_on_shared: unacknowledged shared-subscription messages to other members
    _shared_hand_on: Callable[[str, list[Outgoing]], Awaitable[list[Outgoing]]]

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
        handler.configure(self.limits, self.counters, self._shared_hand_on)
        certificate = getattr(writer, "certificate_id", None)
        client_id = incoming.client_id or ""
        try:
            principal = admit(
                client_id,
                username=incoming.username,
                password=incoming.password,
                certificate_id=certificate,
                certificate_status=await self._certificate_status_of(certificate),
                will_topic=incoming.will_topic if incoming.will_flag else None,
                credentials=self._credentials,
            )
        except ConnectRefused as refused:
            self.refusals += 1
            self.policy_refusals.add("connect")
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
                for name in _RESUMED_FROM_CONNECT:
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

    async def _certificate_status_of(self, certificate: str | None) -> str | None:
        """The registered status of a client certificate; None: none, or not registered."""
        if certificate is None:
            return None
        status = await self._store_lookup(self._certificate_status, certificate)
        return None if status is None else str(status)

    async def _store_lookup(self, function: Callable[[str], Any], arg: str) -> Any:
        """Overridden by :class:`FakeIotBroker` to run ``function`` in its store thread."""
        return function(arg)

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
