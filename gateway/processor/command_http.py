"""The command API over HTTP: ``POST /charge-points/{id}/calls/{action}``, the request JSON as body.

The gateway's small HTTP server (gateway/http_server.py: h11 over ``trio.serve_listeners``)
serves one route.  One request per connection (``Connection: close``); the request must
arrive within :data:`REQUEST_TIMEOUT` seconds (else 408), its head is at most
:data:`~gateway.http_server.MAX_HEAD` bytes (else 431) and its body at most :data:`MAX_BODY`
bytes (else 413); a request h11 cannot parse is answered 400.  At most
:data:`MAX_CONNECTIONS` connections are served at once: one more is answered 503 at once and
closed.  Sending the answer is bounded (a client that does not read is dropped).

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
from functools import partial
from typing import Any
from urllib.parse import unquote

import h11
import trio

from ..http_server import HttpRefusal, Response, serve_http
from .command_service import CommandService
from .commands import CommandFailed, parse_payload

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 10.0
# Each connection holds a task, a socket, up to MAX_HEAD + MAX_BODY bytes and, while its command
# waits, a place in a CP's queue: the API serves this many at once.
MAX_CONNECTIONS = 64
ROUTE = re.compile(r"\A/charge-points/([^/?#]+)/calls/([^/?#]+)\Z")
REFUSAL_ERRORS = {
    408: "RequestTimeout",
    413: "PayloadTooLarge",
    500: "InternalError",
    503: "TooManyConnections",
}


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
    async with trio.open_nursery() as nursery:
        bound: int = await nursery.start(
            partial(
                serve_http,
                partial(_handle, service, token),
                host=host,
                port=port,
                name="command API",
                refused=_refused,
                max_body=MAX_BODY,
                request_timeout=request_timeout,
                max_connections=max_connections,
            )
        )
        log.warning(
            "command API on http://%s:%d/charge-points/{id}/calls/{action} (%s)",
            host,
            bound,
            "bearer token required" if token else "NO AUTHENTICATION: keep it on loopback",
        )
        task_status.started(bound)


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, json.dumps(body).encode(), "application/json")


def _refused(refusal: HttpRefusal) -> Response:
    error = REFUSAL_ERRORS.get(refusal.status, "BadRequest")
    return _json(refusal.status, {"error": error, "message": refusal.message})


async def _handle(
    service: CommandService, token: str | None, request: h11.Request, body: bytes
) -> Response:
    return _json(*await _answer(service, token, request, body))


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
