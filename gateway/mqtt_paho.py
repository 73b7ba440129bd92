"""paho-mqtt's client, configured for the gateway and fixed where it leaks (no Trio here).

:class:`PahoClient` closes the socket on a failed TLS handshake;
:func:`new_paho_client` sets it up as :class:`.mqtt_connection.MqttLink`
drives it: external loop, MQTT 3.1.1, manual acknowledgements, no queueing
or in-flight bound of paho's own.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

if TYPE_CHECKING:
    from .mqtt_link import MqttSettings


class PahoClient(paho.Client):
    """paho's client, without its socket leak on a failed TLS handshake.

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
