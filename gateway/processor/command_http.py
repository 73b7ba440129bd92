"""The command API over HTTP: ``POST /charge-points/{id}/calls/{action}``, the request JSON as body.

h11 (sans-I/O HTTP/1.1, already installed with trio-websocket) over ``trio.serve_tcp``: a
handful of lines for one route, no framework.  One request per connection (``Connection:
close``); the request must arrive within :data:`REQUEST_TIMEOUT` seconds and its body is at
most :data:`MAX_BODY` bytes.

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
ROUTE = re.compile(r"\A/charge-points/([^/?#]+)/calls/([^/?#]+)\Z")


async def serve_command_api(
    service: CommandService,
    *,
    host: str,
    port: int,
    token: str | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled; ``started(port)`` with the bound port once listening."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = int(listeners[0].socket.getsockname()[1])

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_one(stream, service, token)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        log.warning(
            "command API on http://%s:%d/charge-points/{id}/calls/{action} (%s)",
            host,
            bound,
            "bearer token required" if token else "NO AUTHENTICATION: keep it on loopback",
        )
        task_status.started(bound)


async def _serve_one(stream: trio.SocketStream, service: CommandService, token: str | None) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        request, body = await _read_request(stream, connection)
    except _Refusal as refusal:
        await _respond(stream, connection, refusal.status, refusal.body)
        return
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    status, answer = await _answer(service, token, request, body)
    await _respond(stream, connection, status, answer)


class _Refusal(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": error, "message": message}


async def _read_request(
    stream: trio.SocketStream, connection: h11.Connection
) -> tuple[h11.Request, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    with trio.move_on_after(REQUEST_TIMEOUT):
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
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
    raise _Refusal(408, "RequestTimeout", f"no complete request within {REQUEST_TIMEOUT:g} s")


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
        log.info("%s: command %s refused: %s", cp_id[:64], action[:64], exc.message)
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
        await stream.send_all(connection.send(h11.Response(status_code=status, headers=headers)))
        await stream.send_all(connection.send(h11.Data(data=data)))
        await stream.send_all(connection.send(h11.EndOfMessage()))
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return
