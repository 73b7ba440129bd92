"""The command API over HTTP: ``POST /charge-points/{id}/calls/{action}``, the request JSON as body.

h11 (sans-I/O HTTP/1.1, already installed with trio-websocket) over ``trio.serve_tcp``: a
handful of lines for one route, no framework.  One request per connection (``Connection:
close``); the request must arrive within :data:`REQUEST_TIMEOUT` seconds (else 408), its head
is at most :data:`MAX_HEAD` bytes (else 431) and its body at most :data:`MAX_BODY` bytes (else
413); a request h11 cannot parse is answered 400.  At most :data:`MAX_CONNECTIONS` connections
are served at once: one more is answered 503 at once and closed.  Sending the answer is bounded
by :data:`SEND_TIMEOUT` (a client that does not read is dropped).

Answers (JSON): 200 the CALLRESULT payload; 502 a CALLERROR (``code``, ``description``,
``details``) or an invalid response (with the raw ``payload``); 400 an invalid request (its
``field``); 401 a missing/wrong bearer token (when one is configured); 404 an unknown CP or
path; 409 an offline CP; 429 the CP's queue is full; 503 broker/registry unavailable; 504 no
answer in time.

There is no authentication unless a token is configured: bind it to loopback (the default).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any
from urllib.parse import unquote

import h11
import trio

from .command_service import CommandService
from .commands import CommandFailed, parse_payload

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
REQUEST_TIMEOUT = 10.0
SEND_TIMEOUT = 10.0
# After refusing a request that was not read whole, what the client still sends is read and
# dropped for this long (and up to LINGER_BYTES) before closing: closing with unread data would
# reset the connection, and the client could lose the answer.
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 256 * 1024
# Each connection holds a task, a socket, up to MAX_HEAD + MAX_BODY bytes and, while its command
# waits, a place in a CP's queue: the API serves this many at once.
MAX_CONNECTIONS = 64
ROUTE = re.compile(r"\A/charge-points/([^/?#]+)/calls/([^/?#]+)\Z")


async def serve_command_api(
    service: CommandService,
    *,
    host: str,
    port: int,
    token: str | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled; ``started(port)`` with the bound port once listening."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = int(listeners[0].socket.getsockname()[1])
    slots = trio.Semaphore(max_connections)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            log.warning("command API: %d connections already served; one refused", max_connections)
            busy = {"error": "TooManyConnections", "message": "too many requests at once; retry"}
            await _respond(stream, h11.Connection(h11.SERVER), 503, busy)
            return
        try:
            await _serve_one(stream, service, token, request_timeout)
        except Exception:  # noqa: BLE001 - a bug costs this request, never the API (nor the processor)
            log.exception("command API: internal error on a request")
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        log.warning(
            "command API on http://%s:%d/charge-points/{id}/calls/{action} (%s)",
            host,
            bound,
            "bearer token required" if token else "NO AUTHENTICATION: keep it on loopback",
        )
        task_status.started(bound)


async def _serve_one(
    stream: trio.SocketStream, service: CommandService, token: str | None, request_timeout: float
) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        request, body = await _read_request(stream, connection, request_timeout)
    except _Refusal as refusal:
        await _respond(stream, connection, refusal.status, refusal.body)
        await _linger(stream)
        return
    except h11.RemoteProtocolError as exc:
        await _respond(
            stream,
            connection,
            exc.error_status_hint,
            {"error": "BadRequest", "message": f"malformed HTTP request: {str(exc)[:200]}"},
        )
        await _linger(stream)
        return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    try:
        status, answer = await _answer(service, token, request, body)
    except Exception:  # noqa: BLE001 - a bug: answered 500, logged; the API goes on
        log.exception("command API: internal error on %r", request.target[:200])
        status, answer = 500, {"error": "InternalError", "message": "internal error; see the log"}
    await _respond(stream, connection, status, answer)


class _Refusal(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": error, "message": message}


async def _read_request(
    stream: trio.SocketStream, connection: h11.Connection, timeout: float
) -> tuple[h11.Request, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    with trio.move_on_after(timeout):
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(MAX_HEAD))
            elif isinstance(event, h11.Request):
                request = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit() and int(length) > MAX_BODY:
                    raise _Refusal(413, "PayloadTooLarge", f"the body is over {MAX_BODY} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise _Refusal(413, "PayloadTooLarge", f"the body is over {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                return request, bytes(body)
            else:  # ConnectionClosed before a whole request
                raise trio.ClosedResourceError
    raise _Refusal(408, "RequestTimeout", f"no complete request within {timeout:g} s")


async def _answer(
    service: CommandService, token: str | None, request: h11.Request, body: bytes
) -> tuple[int, dict[str, Any]]:
    target = request.target.decode("ascii", "replace")
    match = ROUTE.match(target)
    if match is None:
        return 404, {"error": "NotFound", "message": "POST /charge-points/{id}/calls/{action}"}
    if request.method != b"POST":
        return 405, {"error": "MethodNotAllowed", "message": "use POST"}
    if token is not None:
        given = dict(request.headers).get(b"authorization", b"")
        if not hmac.compare_digest(given, b"Bearer " + token.encode()):
            return 401, {"error": "Unauthorized", "message": "a valid bearer token is required"}
    cp_id, action = unquote(match.group(1)), unquote(match.group(2))
    try:
        payload = parse_payload(body or b"{}")
        outcome = await service.call(cp_id, action, payload)
    except CommandFailed as exc:
        log.info("%r: command %r refused: %s", cp_id[:64], action[:64], exc.message)
        return exc.status, exc.to_json()
    return outcome.status, outcome.to_json()


async def _respond(
    stream: trio.SocketStream, connection: h11.Connection, status: int, body: dict[str, Any]
) -> None:
    data = json.dumps(body).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(data))),
        ("connection", "close"),
    ]
    try:
        with trio.move_on_after(SEND_TIMEOUT):  # a client that does not read is dropped
            await stream.send_all(
                connection.send(h11.Response(status_code=status, headers=headers))
                + connection.send(h11.Data(data=data))
                + connection.send(h11.EndOfMessage())
            )
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close, then read and drop what the client still sends (bounded) before the close."""
    dropped = 0
    with trio.move_on_after(LINGER_TIMEOUT):
        try:
            await stream.send_eof()
            while dropped < LINGER_BYTES and (chunk := await stream.receive_some(65536)):
                dropped += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
