"""A small, bounded HTTP/1.1 server: h11 (sans-I/O) over ``trio.serve_listeners``, no framework.

Used by the command API (gateway/processor/command_http.py) and the metrics and health
endpoints (gateway/health.py).  One request per connection (``Connection: close``); what a
hostile client can make it hold is bounded:

* the request must arrive within ``request_timeout`` seconds (else 408);
* its head is at most :data:`MAX_HEAD` bytes (else 431, from h11) and its body at most
  ``max_body`` bytes (else 413); a request h11 cannot parse is answered 400;
* at most ``max_connections`` connections are served at once: one more is answered 503 at
  once; at most as many refused ones linger (see below) at a time, the rest are closed at once;
* sending the answer is bounded by :data:`SEND_TIMEOUT` (a client that does not read is
  dropped).

After refusing a request that was not read whole, what the client still sends is read and
dropped (bounded) before closing: closing with unread data would reset the connection, and
the client could lose the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import trio

from .errors import ConfigError

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
REQUEST_TIMEOUT = 10.0
SEND_TIMEOUT = 10.0
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 256 * 1024


@dataclass(frozen=True)
class Response:
    """What a handler answers: status, body and its content type (plus any extra headers)."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())


class HttpRefusal(Exception):
    """The request cannot be served (read timeout, body too large, malformed): answer ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[h11.Request, bytes], Awaitable[Response]]
Refused = Callable[[HttpRefusal], Response]


def plain_refusal(refusal: HttpRefusal) -> Response:
    """A refusal as one line of plain text."""
    return Response(refusal.status, f"{refusal.message}\n".encode())


async def serve_http(
    handler: Handler,
    *,
    host: str,
    port: int,
    name: str,
    refused: Refused = plain_refusal,
    max_body: int = 0,
    request_timeout: float = REQUEST_TIMEOUT,
    max_connections: int = 64,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` until cancelled; ``started(port)`` with the bound port once listening.

    ``handler(request, body)`` runs for each complete request; ``refused`` turns a refusal
    (408, 413, 431, 400, 503) into the response sent.  A handler's bug is answered 500 and
    logged: it costs that request, never the server.  A port that cannot be bound raises
    :class:`~gateway.errors.ConfigError` naming the server.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:  # a start-up error the operator fixes: said in one line
        raise ConfigError(f"{name}: cannot listen on {host}:{port}: {exc}") from None
    bound = int(listeners[0].socket.getsockname()[1])
    slots = trio.Semaphore(max_connections)
    lingering = trio.Semaphore(max_connections)  # refused connections draining before the close

    async def serve_connection(stream: trio.SocketStream) -> None:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            log.warning("%s: %d connections already served; one refused", name, max_connections)
            busy = HttpRefusal(503, "too many requests at once; retry")
            await send_response(stream, h11.Connection(h11.SERVER), refused(busy))
            try:  # its request is unread: drain it so the close does not reset the 503 away
                lingering.acquire_nowait()
            except trio.WouldBlock:  # a flood: those beyond the bound are closed at once
                return
            try:
                await linger(stream)
            finally:
                lingering.release()
            return
        try:
            await _serve_one(stream, handler, refused, max_body, request_timeout, name)
        except Exception:  # noqa: BLE001 - a bug costs this request, never the server
            log.exception("%s: internal error on a request", name)
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve_connection, listeners)
        task_status.started(bound)


async def _serve_one(
    stream: trio.SocketStream,
    handler: Handler,
    refused: Refused,
    max_body: int,
    request_timeout: float,
    name: str,
) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        request, body = await read_request(stream, connection, request_timeout, max_body)
    except HttpRefusal as refusal:
        await send_response(stream, connection, refused(refusal))
        await linger(stream)
        return
    except h11.RemoteProtocolError as exc:
        malformed = HttpRefusal(exc.error_status_hint, f"malformed HTTP request: {str(exc)[:200]}")
        await send_response(stream, connection, refused(malformed))
        await linger(stream)
        return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    try:
        response = await handler(request, body)
    except Exception:  # noqa: BLE001 - a bug: answered 500, logged; the server goes on
        log.exception("%s: internal error on %r", name, request.target[:200])
        response = refused(HttpRefusal(500, "internal error; see the log"))
    await send_response(stream, connection, response, head_only=request.method == b"HEAD")


async def read_request(
    stream: trio.SocketStream, connection: h11.Connection, timeout: float, max_body: int
) -> tuple[h11.Request, bytes]:
    """One whole request within ``timeout``; raises HttpRefusal, h11.RemoteProtocolError, or
    trio.ClosedResourceError when the client left first."""
    request: h11.Request | None = None
    body = bytearray()
    too_large = HttpRefusal(413, f"the body is over {max_body} bytes")
    with trio.move_on_after(timeout):
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(MAX_HEAD))
            elif isinstance(event, h11.Request):
                request = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit() and int(length) > max_body:
                    raise too_large
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_body:
                    raise too_large
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                return request, bytes(body)
            else:  # ConnectionClosed before a whole request
                raise trio.ClosedResourceError
    raise HttpRefusal(408, f"no complete request within {timeout:g} s")


async def send_response(
    stream: trio.SocketStream,
    connection: h11.Connection,
    response: Response,
    *,
    head_only: bool = False,
) -> None:
    """Send ``response`` and end the connection's use (bounded by :data:`SEND_TIMEOUT`);
    ``head_only``: the answer to a HEAD request (no body)."""
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("connection", "close"),
        *response.headers,
    ]
    try:
        with trio.move_on_after(SEND_TIMEOUT):  # a client that does not read is dropped
            await stream.send_all(
                connection.send(h11.Response(status_code=response.status, headers=headers))
                + (b"" if head_only else connection.send(h11.Data(data=response.body)))
                + connection.send(h11.EndOfMessage())
            )
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return


async def linger(stream: trio.SocketStream) -> None:
    """Half-close, then read and drop what the client still sends (bounded) before the close."""
    dropped = 0
    with trio.move_on_after(LINGER_TIMEOUT):
        try:
            await stream.send_eof()
            while dropped < LINGER_BYTES and (chunk := await stream.receive_some(65536)):
                dropped += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
