"""A minimal OCPP-J charge point over trio-websocket.

Used by ``scripts/simulate.py``, the test suite and load tools.  Messages
are built from the ``ocpp`` package's dataclasses and validated against its
JSON schemas before they are sent, so what goes over the wire is real OCPP.
"""

from __future__ import annotations

import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import ocpp.messages
import trio
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.messages import Call, validate_payload
from trio_websocket import ConnectionClosed, ConnectionTimeout, WebSocketConnection

from .credentials import basic_auth_header
from .subprotocol import OCPP_VERSIONS
from .websocket import wrap_client_stream

ocpp.messages.ASYNC_VALIDATION = False

log = logging.getLogger(__name__)


class CallErrorReceived(Exception):
    def __init__(self, frame: list[Any]) -> None:
        super().__init__(f"{frame[2]}: {frame[3]}")
        self.message_id = frame[1]
        self.code = frame[2]
        self.description = frame[3]
        self.details = frame[4] if len(frame) > 4 else {}


def payload_of(message: Any) -> dict[str, Any]:
    """camelCase JSON payload of an ``ocpp`` call dataclass."""
    return remove_nones(snake_to_camel_case(serialize_as_dict(message)))  # type: ignore[no-any-return]


def boot_notification(
    version: str, *, vendor: str, model: str, serial: str, firmware: str
) -> tuple[str, dict[str, Any]]:
    if version == "1.6":
        from ocpp.v16 import call as v16

        msg: Any = v16.BootNotification(
            charge_point_vendor=vendor,
            charge_point_model=model,
            charge_point_serial_number=serial,
            firmware_version=firmware,
        )
    else:
        from ocpp.v201 import call as v201
        from ocpp.v201 import datatypes

        msg = v201.BootNotification(
            charging_station=datatypes.ChargingStationType(
                vendor_name=vendor, model=model, serial_number=serial, firmware_version=firmware
            ),
            reason="PowerUp",
        )
    return "BootNotification", payload_of(msg)


def heartbeat() -> tuple[str, dict[str, Any]]:
    return "Heartbeat", {}


class ChargePoint:
    """One OCPP-J connection, from the charge point's side."""

    def __init__(
        self,
        ws: WebSocketConnection,
        cp_id: str,
        *,
        on_frame: Callable[[str, str], None] | None = None,
    ) -> None:
        self.ws = ws
        self.cp_id = cp_id
        self.subprotocol = ws.subprotocol
        self.version = OCPP_VERSIONS.get(ws.subprotocol or "", "2.0.1")
        self._on_frame = on_frame or (lambda direction, text: None)

    async def send_text(self, text: str) -> None:
        self._on_frame("sent", text)
        await self.ws.send_message(text)

    async def receive_text(self) -> str:
        message = await self.ws.get_message()
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        self._on_frame("received", text)
        return text

    async def call(
        self, action: str, payload: dict[str, Any], *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Send a CALL and return the CALLRESULT payload (CallErrorReceived on a CALLERROR)."""
        call = Call(str(uuid.uuid4()), action, payload)
        await validate_payload(call, self.version)
        await self.send_text(call.to_json())
        with trio.fail_after(timeout):
            while True:
                frame = json.loads(await self.receive_text())
                if frame[0] == 2:
                    # The CSMS asked something; this simple client implements nothing.
                    await self.send_text(
                        json.dumps([4, frame[1], "NotImplemented", f"{frame[2]} not supported", {}])
                    )
                    continue
                if frame[1] != call.unique_id:
                    continue
                if frame[0] == 4:
                    raise CallErrorReceived(frame)
                return frame[2]  # type: ignore[no-any-return]


@asynccontextmanager
async def open_client_websocket(
    url: str,
    *,
    subprotocols: list[str],
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 30.0,
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket whose TCP stream is always closed.

    trio-websocket 0.12's ``open_websocket_url`` leaves its socket open after
    a server-initiated close and after a rejected handshake (HTTP 401...);
    here the stream is opened and closed by us, and the library only wraps
    it.  A single error from inside is raised as itself, not as a group.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"
    if secure:
        stream: (
            trio.SocketStream | trio.SSLStream[trio.SocketStream]
        ) = await trio.open_ssl_over_tcp_stream(
            host,
            port,
            ssl_context=ssl_context or ssl.create_default_context(),
            https_compatible=True,
        )
    else:
        stream = await trio.open_tcp_stream(host, port)
    try:
        if isinstance(stream, trio.SSLStream):
            # Fail here, clearly, on a bad certificate: trio-websocket would wait forever.
            await stream.do_handshake()
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(connect_timeout):
                        ws = await wrap_client_stream(
                            nursery,
                            stream,
                            host_header,
                            resource,
                            subprotocols=subprotocols,
                            extra_headers=extra_headers,
                        )
                except trio.TooSlowError:
                    raise ConnectionTimeout from None
                try:
                    yield ws
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def connect(
    url: str,
    cp_id: str,
    *,
    subprotocols: list[str] | None = None,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    on_frame: Callable[[str, str], None] | None = None,
    connect_timeout: float = 30.0,
) -> AsyncIterator[ChargePoint]:
    """Open ``<url>/<cp_id>`` offering ``subprotocols`` (default: OCPP 2.0.1).

    With ``password``, authenticates with HTTP Basic auth (OCPP security profile 1/2).
    """
    target = f"{url.rstrip('/')}/{cp_id}"
    headers = [basic_auth_header(cp_id, password)] if password is not None else None
    async with open_client_websocket(
        target,
        subprotocols=subprotocols or ["ocpp2.0.1"],
        extra_headers=headers,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
    ) as ws:
        yield ChargePoint(ws, cp_id, on_frame=on_frame)


__all__ = [
    "CallErrorReceived",
    "ChargePoint",
    "ConnectionClosed",
    "boot_notification",
    "connect",
    "heartbeat",
]
