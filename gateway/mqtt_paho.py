"""paho-mqtt's client, configured for the gateway and fixed where it leaks or is slow (no Trio here).

:class:`PahoClient` closes the socket on a failed TLS handshake and handles
an MQTT 3.1.1 PUBACK without making objects for it;
:func:`new_paho_client` sets it up as :class:`.mqtt_connection.MqttLink`
drives it: external loop, MQTT 3.1.1, manual acknowledgements, no queueing
or in-flight bound of paho's own.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import TYPE_CHECKING, Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

if TYPE_CHECKING:
    from .mqtt_link import MqttSettings


# An MQTT 3.1.1 PUBACK is its packet id and nothing else: the reason code and properties paho hands
# on_publish are always "Success" and empty, so one of each serves every PUBACK.
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
_PACKET_ID = struct.Struct("!H")


class PahoClient(paho.Client):
    """paho's client, connected on a socket opened by its caller, and with a lighter PUBACK.

    The caller (:class:`.mqtt_connection.MqttLink`) opens the TCP connection
    and shakes hands for TLS itself, bounded and closing the socket on every
    error path; paho gets the socket ready (:meth:`connect_on`).  paho's own
    socket code is never used: its blocking ``connect()`` would need a thread
    per connect, and its TLS wrapper dropped the socket of a failed handshake
    without closing it (paho 2.1, 2.2).
    """

    def drop_socket(self) -> None:
        """Close the socket without sending DISCONNECT (a link that is already lost or abandoned).

        paho has no public call for this (``disconnect()`` sends a packet first); its private
        ``_sock_close`` is reached here only, so a paho upgrade has one place to check.
        """
        self._sock_close()

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        """paho's handler (2.1, 2.2), less the two objects it makes for every MQTT 3.1.1 PUBACK.

        paho decodes each PUBACK into a new ReasonCode and a new Properties, about a tenth of
        the gateway's CPU per forwarded message; MQTT 3.1.1's carry neither, so the shared
        ones above are handed on.  Same checks (a PUBACK is exactly 2 bytes, else paho's
        MalformedPacket, which ends the connection as a protocol error), same bookkeeping
        (``_do_on_publish``).  MQTT 5 and PUBCOMP (QoS 2) go to paho's own.
        """
        if cmd != "PUBACK" or self._protocol == MQTTProtocolVersion.MQTTv5:
            return super()._handle_pubackcomp(cmd)
        packet = self._in_packet["packet"]
        if len(packet) != 2:
            raise MalformedPacket("wrong size of packet")
        (mid,) = _PACKET_ID.unpack(packet)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def connect_on(
        self, sock: socket.socket | ssl.SSLSocket, host: str, port: int, keepalive: int
    ) -> None:
        """paho's ``connect()`` on a socket the caller has connected (and shaken hands on, for TLS).

        paho's own ``connect()`` also opens the socket, blocking (DNS, TCP, TLS handshake): a
        worker thread for each, and under load every step of that thread waits for the GIL.
        Here paho only installs ``sock`` (``_create_socket``) and queues CONNECT; nothing blocks,
        so it runs in the caller's (the Trio) thread.  ``sock`` is this client's from here on:
        closed with it, or here should paho refuse it.
        """
        self._given_socket = sock
        try:
            self.connect(host, port, keepalive=keepalive)
        finally:
            if self._given_socket is not None:  # paho failed before taking it
                self._given_socket = None
                sock.close()

    _given_socket: socket.socket | ssl.SSLSocket | None = None

    def _create_socket(self) -> Any:
        sock = self._given_socket
        if sock is None:
            raise RuntimeError("PahoClient connects only on a given socket (connect_on)")
        self._given_socket = None
        return sock


def new_paho_client(settings: MqttSettings, client_id: str, *, clean_session: bool) -> PahoClient:
    """A client for one MQTT connection; the caller sets the callbacks and drives the loop."""
    client = PahoClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=paho.MQTTv311,
        reconnect_on_failure=False,
    )
    client.connect_timeout = settings.connect_timeout
    # The link's own bound applies (see MqttLink.publish); paho must never queue or drop on its own.
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.manual_ack_set(True)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    return client


def pending_bytes(sock: Any) -> int:
    """Decrypted bytes a TLS socket holds that ``select``/``epoll`` no longer signal."""
    pending = getattr(sock, "pending", None)
    return pending() if pending is not None else 0
