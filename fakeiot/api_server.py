"""fakeiot's HTTP API server: the edge between sockets and :class:`fakeiot.api.IotApi`.

Authentication: given access keys, every request but ``GET /health`` must
carry a valid AWS SigV4 signature by one of them (:mod:`fakeiot.sigv4`), as
boto3 makes; reads too, since Thing attributes hold password hashes.
Without keys requests are not signed: fakeiot then refuses to bind
anything but a loopback address (:func:`fakeiot.config.check_exposure`),
and answers only requests whose ``Host`` is a loopback name (403 otherwise:
the DNS-rebinding guard of :mod:`fakeiot.hostcheck`).

Framing: only ``Content-Length`` bodies (no ``Transfer-Encoding``), of at
most :data:`MAX_BODY` bytes; a negative, non-numeric or conflicting length
is answered 400, a larger one 413, before any of the body is read.  Each
read waits at most ``read_timeout`` seconds, and a body must arrive within
that time (else 408).

``/console`` paths go to the web console (:mod:`fakeiot.console`), with its
own access rule (a browser cannot sign requests).

Served by the standard library's threading HTTP server: one thread per
client connection, all joined when the server closes.  At most
``max_connections`` are open at once: one more is answered 503 and closed at
once (no thread), so clients that open connections and never finish a request
(slowloris) cost bounded threads.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import sigv4
from .api import IotApi
from .console import Console, is_console_path
from .errors import ApiError
from .hostcheck import loopback_host
from .loggable import loggable

log = logging.getLogger(__name__)

MAX_BODY = (
    1 << 20
)  # 1 MiB: above AWS IoT's largest request bodies (a shadow document is at most 8 KiB)
_CONTENT_LENGTH = re.compile(r"[0-9]{1,15}", re.ASCII)
_BUSY_BODY = (
    b'{"message": "fakeiot serves as many HTTP connections as it may at once: retry later"}'
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"x-amzn-ErrorType: ServiceUnavailableException\r\nRetry-After: 5\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Refusal(Exception):
    """A request answered with an error before it reaches the API (framing, size, time)."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The handler writes a response's headers and its body in two sends: with Nagle's algorithm on,
    # the body waits for the client's delayed ACK of the headers, 40 ms on every request.
    disable_nagle_algorithm = True
    server: ApiServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(
            self.server.read_timeout
        )  # every read of the request line, headers and body

    def _serve(self) -> None:
        try:
            body = self._read_body(self._content_length())
        except _Refusal as refusal:
            self.close_connection = True  # the rest of the stream cannot be trusted
            self._reply(refusal.status, {"message": refusal.message}, refusal.error_type)
            return
        if self.server.console is not None and is_console_path(self.path):
            self.server.console.handle(self, body)  # its own access rule: fakeiot/console.py
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.command == "GET" and self.path == "/metrics" and self.server.metrics is not None:
            # Unsigned, like /health: counts only (fakeiot/metrics.py says why that is safe).
            data, content_type = self.server.metrics(headers.get("accept", ""))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if not self.server.access_keys and not loopback_host(headers.get("host")):
            # Unsigned (loopback only): a page in this machine's browser that rebound its name
            # to 127.0.0.1 must not read the registry (fakeiot/hostcheck.py).
            log.warning(
                "api %s: refused a request whose Host is not a loopback name",
                self.client_address[0],
            )
            self._reply(
                403,
                {
                    "message": "without access keys fakeiot answers only a loopback Host (127.0.0.1, localhost, [::1])"
                },
                "ForbiddenException",
            )
            return
        if self.server.access_keys and not (self.command == "GET" and self.path == "/health"):
            try:
                sigv4.verify(
                    self.command,
                    self.path,
                    headers,
                    body,
                    keys=self.server.access_keys,
                    now=datetime.datetime.now(datetime.UTC),
                )
            except sigv4.SignatureRejected as exc:
                log.warning(
                    "api %s: %s %s refused: %s",
                    self.client_address[0],
                    self.command,
                    loggable(self.path),
                    exc.message,
                )
                self._reply(403, {"message": exc.message}, exc.error_type)
                return
        try:
            status, doc = self.server.api.handle(self.command, self.path, body, headers)
        except ApiError as exc:
            self._reply(exc.status, {"message": exc.message}, exc.error_type)
            return
        self._reply(status, doc)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding") is not None:
            raise _Refusal(
                400,
                "InvalidRequestException",
                "Transfer-Encoding is not supported: send the body with a Content-Length",
            )
        values = {value.strip() for value in self.headers.get_all("Content-Length") or ()}
        if not values:
            return 0
        if len(values) > 1:
            raise _Refusal(400, "InvalidRequestException", "conflicting Content-Length headers")
        text = values.pop()
        if not text.isascii() or not text.isdigit():
            raise _Refusal(
                400,
                "InvalidRequestException",
                f"invalid Content-Length {text[:20]!r}: not a non-negative decimal integer",
            )
        if not _CONTENT_LENGTH.fullmatch(text) or int(text) > MAX_BODY:
            raise _Refusal(
                413,
                "RequestEntityTooLargeException",
                f"request body of {text[:20]} bytes is larger than fakeiot's 1 MiB limit",
            )
        return int(text)

    def _read_body(self, length: int) -> bytes:
        """Read ``length`` bytes, all within ``read_timeout`` (a slow sender cannot hold the thread longer)."""
        timeout = self.server.read_timeout
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        received = 0
        try:
            while received < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(length - received, 65536))
                if not chunk:
                    raise _Refusal(
                        400,
                        "InvalidRequestException",
                        f"request body ended after {received} of {length} bytes",
                    )
                chunks.append(chunk)
                received += len(chunk)
        except TimeoutError:
            raise _Refusal(
                408,
                "RequestTimeoutException",
                f"request body incomplete: {length} bytes announced, {received} received within {timeout:g} s",
            ) from None
        finally:
            self.connection.settimeout(timeout)
        return b"".join(chunks)

    def _reply(self, status: int, doc: Any, error_type: str | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api %s - %s", self.address_string(), loggable(format % args, 400))


class ApiServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every request thread
    block_on_close = True
    console: Console | None = None  # the web console, when fakeiot serves one

    def __init__(
        self,
        address: tuple[str, int],
        api: IotApi,
        *,
        access_keys: dict[str, str] | None = None,
        read_timeout: float = 20.0,
        max_connections: int = 128,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be positive")
        self.api = api
        self.access_keys = dict(
            access_keys or {}
        )  # access key id -> secret; empty: requests are not checked
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.refused_connections = 0  # answered 503: max_connections were open
        self._full_reported = False
        # GET /metrics: the exposition for an Accept header, and its content type (None: 404).
        self.metrics: Callable[[str], tuple[bytes, str]] | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Counted here, on the accepting thread, before a thread is started for it.
        with self._connections_lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections.add(request)
                self._full_reported = False
        if full:
            self._refuse_busy(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._connections_lock:
                self._connections.discard(request)
            raise

    def _refuse_busy(self, request: Any, client_address: Any) -> None:
        self.refused_connections += 1
        if not self._full_reported:  # once per episode: a flood must not flood the log too
            self._full_reported = True
            log.warning(
                "api: %d HTTP connections open, the most fakeiot serves: refusing more (503) "
                "until one ends (the latest from %s)",
                self.max_connections,
                client_address[0],
            )
        try:
            request.setblocking(False)  # a new socket's send buffer takes these few bytes
            request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is routine, not a server error: one line, no traceback.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("api: connection from %s ended abruptly: %r", client_address[0], error)
        else:
            log.error("api: request from %s failed", client_address[0], exc_info=True)

    def server_close(self) -> None:
        # Idle keep-alive connections would hold their threads; end them first.
        with self._connections_lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        super().server_close()
