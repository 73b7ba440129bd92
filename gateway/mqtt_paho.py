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
    """paho's client, without its socket leak on a failed TLS handshake, and with a lighter PUBACK.

    paho 2.x's ``_ssl_wrap_socket`` wraps the TCP socket and shakes hands in
    one step; when the handshake fails (an untrusted broker certificate, a
    refused client certificate, a time-out) it drops the SSLSocket it made
    without closing it: one file descriptor per failed connect until the
    garbage collector finds it, then a ResourceWarning.  This is paho's method
    (2.1, 2.2) with the socket closed on every error path.  Host names are
    checked by the context (``check_hostname``): with ``tls_set_context()``,
    the only way this module configures TLS, paho adds no check of its own.
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

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        context = self._ssl_context
        if context is None:
            tcp_sock.close()
            raise ValueError("TLS without an SSL context")
        try:
            ssl_sock = context.wrap_socket(
                tcp_sock, server_hostname=self._host, do_handshake_on_connect=False
            )
        except BaseException:
            tcp_sock.close()
            raise
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock


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
    if settings.ssl_context is not None:
        client.tls_set_context(settings.ssl_context)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    return client


def pending_bytes(sock: Any) -> int:
    """Decrypted bytes a TLS socket holds that ``select``/``epoll`` no longer signal."""
    pending = getattr(sock, "pending", None)
    return pending() if pending is not None else 0
