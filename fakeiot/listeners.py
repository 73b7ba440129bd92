"""fakeiot's MQTT listeners: amqtt's listener configuration, and what a connection's socket needs.

* :func:`broker_config`: the plain listener and, optionally, the mutual-TLS
  one (AWS IoT's port 8883), with the presence plugin.
* :func:`certificate_id`: AWS IoT's id of a client certificate.
* :class:`ClosingStreamWriter`: amqtt's ``StreamWriterAdapter.close()``
  skips closing the transport when flushing fails (the peer is already
  gone), leaking one socket per abruptly closed client, and waits forever to
  flush to a client that does not read; this one always closes it, within
  :data:`CLOSE_FLUSH_TIMEOUT`.  It also carries the id of the verified client
  certificate (TLS listener), for the CONNECT's admission.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.adapters import StreamWriterAdapter

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


class ClosingStreamWriter(StreamWriterAdapter):  # type: ignore[misc]  # amqtt is untyped
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
