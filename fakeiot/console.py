"""fakeiot's web console: ``/console/...`` on the HTTP API's port, the offline stand-in for the AWS
IoT console pages an operator uses (Things, shadows, the MQTT test client, clients, a rule table).

Access, the same as the API's:

* without access keys fakeiot binds loopback only and does not check requests;
  the console then only answers requests whose ``Host`` names a loopback address
  (``127.0.0.1``, ``localhost``, ``[::1]``), so a web page that rebinds its own
  DNS name to 127.0.0.1 cannot read it;
* with access keys a browser cannot sign (SigV4), so the console asks for HTTP
  Basic authentication: the access key id as user name and its secret as
  password, compared in constant time.  Nothing supplied is logged or echoed.

State changes are POST only, each with the console's token (random per process,
in every form) and, when the browser sends them, an ``Origin`` of this host and a
``Sec-Fetch-Site`` of ``same-origin``: another site cannot submit them (CSRF).
Every answer carries a strict Content-Security-Policy (scripts and styles from
``/console/static/`` only), ``X-Frame-Options: DENY`` and ``no-store``.

The live MQTT view is Server-Sent Events fed by :class:`fakeiot.console_tap.ConsoleTap`;
each stream is one API server thread, so the tap's viewer cap bounds them, and
each stream ends after ``stream_lifetime`` seconds (the browser reconnects).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from iotshared.attributes import PASSWORD_HASH_ATTRIBUTE
from iotshared.errors import PasswordRejected
from iotshared.passwords import hash_password

from . import console_pages as pages
from .api import IotApi
from .console_static import CONSOLE_CSS, CONSOLE_JS
from .console_tap import ConsoleTap, InvalidFilter, TooManyViewers
from .errors import ApiError
from .publish import PublishApi
from .registry import check_thing_name

log = logging.getLogger(__name__)

PREFIX = "/console"
HEARTBEAT_TABLE = "chargePointHeartbeat"
MAX_PAYLOAD_SHOWN = 4096  # characters of a payload sent to the live view
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def is_console_path(target: str) -> bool:
    path = urlsplit(target).path
    return path == PREFIX or path.startswith(PREFIX + "/")


class _Answer(Exception):
    """A request answered with an error page (``status``, ``message``), plus ``headers``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


class Console:
    """The console's request handling, called by the API server for ``/console`` paths."""

    def __init__(
        self,
        api: IotApi,
        tap: ConsoleTap,
        *,
        access_keys: Mapping[str, str] | None = None,
        connected_clients: Callable[[], list[str]] = list,
        stream_lifetime: float = 300.0,
        keepalive_interval: float = 15.0,
    ) -> None:
        self.api = api
        self.tap = tap
        self.access_keys = dict(access_keys or {})
        self.connected_clients = connected_clients
        self.stream_lifetime = stream_lifetime
        self.keepalive_interval = keepalive_interval
        self.token = secrets.token_urlsafe(32)  # the CSRF token of every form, per process

    # -- the edge ---------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        url = urlsplit(request.path)
        query = {k: v for k, v in parse_qs(url.query, max_num_fields=20).items()}
        parts = [unquote(p) for p in url.path[len(PREFIX) :].strip("/").split("/") if p]
        try:
            self._check_access(request)
            if len(parts) >= 2 and parts[0] == "things":
                self._call(lambda: check_thing_name(parts[1]))  # before the store sees it
            if request.command == "POST":
                form = self._form(request, body)
                self._post(request, parts, form)
            elif request.command == "GET":
                self._get(request, parts, query)
            else:
                self._refuse_unknown(parts, request.command)
        except _Answer as answer:
            if "text/plain" in request.headers.get("Accept", ""):
                self._send(
                    request, answer.status, answer.message.encode(), "text/plain", answer.headers
                )
            else:
                html = pages.error_page(answer.status, answer.message)
                self._send(request, answer.status, html.encode(), "text/html", answer.headers)

    def _check_access(self, request: BaseHTTPRequestHandler) -> None:
        who = request.client_address[0]
        if not self.access_keys:
            host = request.headers.get("Host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in _LOOPBACK_HOSTS:
                log.warning("console %s: refused a request whose Host is not a loopback name", who)
                raise _Answer(
                    403, "the console answers only a loopback Host (127.0.0.1, localhost, [::1])"
                )
            return
        if not self._authenticated(request.headers.get("Authorization", "")):
            log.warning(
                "console %s: %s %s refused: no valid Basic credentials",
                who,
                request.command,
                request.path[:80],
            )
            raise _Answer(
                401,
                "sign in with an access key id (user name) and its secret access key (password)",
                {"WWW-Authenticate": 'Basic realm="fakeiot console", charset="UTF-8"'},
            )

    def _authenticated(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        ok = False
        for key_id, secret in self.access_keys.items():  # every key compared: no early exit
            same_id = hmac.compare_digest(user.encode(), key_id.encode())
            same_secret = hmac.compare_digest(password.encode(), secret.encode())
            ok |= same_id and same_secret and bool(sep)
        return ok

    def _form(self, request: BaseHTTPRequestHandler, body: bytes) -> dict[str, str]:
        """A POST's form, once it is shown to come from the console's own pages."""
        kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise _Answer(415, "send the console's forms as application/x-www-form-urlencoded")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"http://{request.headers.get('Host', '')}":
            raise _Answer(403, "cross-origin form refused (Origin is not this console)")
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise _Answer(403, "cross-site form refused (Sec-Fetch-Site)")
        try:
            fields = parse_qs(
                body.decode("utf-8"),
                keep_blank_values=True,
                max_num_fields=20,
                strict_parsing=False,
            )
        except (UnicodeDecodeError, ValueError):
            raise _Answer(400, "the form is not valid UTF-8 url-encoded data") from None
        form = {k: v[-1] for k, v in fields.items()}
        if not hmac.compare_digest(form.get("csrf", "").encode(), self.token.encode()):
            raise _Answer(
                403, "the form's token is missing or stale: reload the page and submit again"
            )
        return form

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", f"{content_type}; charset=utf-8")
        request.send_header("Content-Length", str(len(data)))
        for name, value in {**_SECURITY_HEADERS, **(headers or {})}.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)

    def _html(self, request: BaseHTTPRequestHandler, html: str) -> None:
        self._send(request, 200, html.encode(), "text/html")

    def _redirect(self, request: BaseHTTPRequestHandler, location: str) -> None:
        if "text/plain" in request.headers.get("Accept", ""):  # the page's script: no reload
            self._send(request, 200, b"done", "text/plain")
            return
        self._send(request, 303, b"", "text/plain", {"Location": location})

    # -- pages ------------------------------------------------------------------------

    def _get(
        self, request: BaseHTTPRequestHandler, parts: list[str], query: dict[str, list[str]]
    ) -> None:
        notice = query.get("done", [""])[-1] or None
        match parts:
            case [] | ["things"]:
                things = self.api.registry.list_things({"maxResults": "250"})["things"]
                self._html(request, pages.things_page(things, self.token, notice))
            case ["things", name]:
                thing = self._call(lambda: self.api.registry.describe_thing(name))
                try:
                    shadow: dict[str, Any] | None = self.api.get_shadow(name, b"")
                except ApiError as exc:
                    if exc.status != 404:
                        raise _Answer(exc.status, exc.message) from None
                    shadow = None
                self._html(request, pages.thing_page(thing, shadow))
            case ["mqtt"]:
                filters = [
                    f.strip()
                    for v in query.get("filter", ["+/in,+/out"])
                    for f in v.split(",")
                    if f.strip()
                ]
                self._html(request, pages.mqtt_page(filters, self.token, notice))
            case ["mqtt", "stream"]:
                filters = [f for v in query.get("filter", []) for f in [v.strip()] if f]
                self._stream(request, filters)
            case ["clients"]:
                self._html(
                    request,
                    pages.clients_page(self.connected_clients(), self.tap.presence_events()),
                )
            case ["heartbeats"]:
                items = self.api.store.scan_items(HEARTBEAT_TABLE)
                self._html(request, pages.table_page(HEARTBEAT_TABLE, items))
            case ["static", "console.js"]:
                self._send(request, 200, CONSOLE_JS.encode(), "text/javascript")
            case ["static", "console.css"]:
                self._send(request, 200, CONSOLE_CSS.encode(), "text/css")
            case _:
                self._refuse_unknown(parts, "GET")

    def _post(
        self, request: BaseHTTPRequestHandler, parts: list[str], form: dict[str, str]
    ) -> None:
        match parts:
            case ["things"]:
                name = form.get("name", "").strip()
                self._call(lambda: check_thing_name(name))
                attributes = _parse_attributes(form.get("attributes", ""))
                attributes.update(_password_attribute(form.get("password", "")))
                payload = {"attributePayload": {"attributes": attributes}}
                self._call(lambda: self.api.registry.create_thing(name, payload))
                self._redirect(request, "/console/things?done=created")
            case ["things", name, "attributes"]:
                current = self._call(lambda: self.api.registry.describe_thing(name))["attributes"]
                attributes = _parse_attributes(form.get("attributes", ""))
                if PASSWORD_HASH_ATTRIBUTE in current:  # not shown in the form: kept
                    attributes[PASSWORD_HASH_ATTRIBUTE] = current[PASSWORD_HASH_ATTRIBUTE]
                body = {"attributePayload": {"attributes": attributes}}
                self._call(lambda: self.api.registry.update_thing(name, body))
                self._redirect(request, "/console/things?done=attributes")
            case ["things", name, "password"]:
                hashed = _password_attribute(form.get("password", ""))
                if not hashed:
                    raise _Answer(400, "give a password")
                merged: dict[str, Any] = {"attributePayload": {"attributes": hashed, "merge": True}}
                self._call(lambda: self.api.registry.update_thing(name, merged))
                self._redirect(request, "/console/things?done=password")
            case ["things", name, "delete"]:
                self._call(lambda: self.api.registry.describe_thing(name))
                self._call(lambda: self.api.registry.delete_thing(name))
                self._redirect(request, "/console/things?done=deleted")
            case ["mqtt", "publish"]:
                topic, qos = form.get("topic", ""), form.get("qos", "0")
                publisher = PublishApi(self.api.publish, self.api.shadows)
                self._call(
                    lambda: publisher.publish_message(
                        topic, {"qos": qos}, form.get("payload", "").encode()
                    )
                )
                self._redirect(request, "/console/mqtt?done=published")
            case _:
                self._refuse_unknown(parts, "POST")

    @staticmethod
    def _refuse_unknown(parts: list[str], method: str) -> None:
        allowed = _allowed_methods(parts)
        if not allowed:
            raise _Answer(404, "no such console page")
        raise _Answer(
            405,
            f"{method} is not allowed here (allowed: {', '.join(allowed)})",
            {"Allow": ", ".join(allowed)},
        )

    @staticmethod
    def _call(operation: Callable[[], Any]) -> Any:
        try:
            return operation()
        except ApiError as exc:
            raise _Answer(exc.status, exc.message) from None

    # -- the live view ----------------------------------------------------------------

    def _stream(self, request: BaseHTTPRequestHandler, filters: list[str]) -> None:
        try:
            with self.tap.viewer(filters) as viewer:
                request.close_connection = True  # the stream ends with the connection
                request.send_response(200)
                request.send_header("Content-Type", "text/event-stream; charset=utf-8")
                for name, value in _SECURITY_HEADERS.items():
                    request.send_header(name, value)
                request.end_headers()
                request.wfile.write(b"retry: 2000\n\n")
                request.wfile.flush()
                deadline = time.monotonic() + self.stream_lifetime
                while not viewer.closed and (left := deadline - time.monotonic()) > 0:
                    frames, dropped = viewer.take(min(self.keepalive_interval, left))
                    chunks = [b"event: dropped\ndata: %d\n\n" % dropped] if dropped else []
                    chunks += [_sse_frame(f.seq, f.timestamp, f.topic, f.payload) for f in frames]
                    request.wfile.write(b"".join(chunks) or b": keep-alive\n\n")
                    request.wfile.flush()
        except InvalidFilter as exc:
            raise _Answer(400, str(exc)) from None
        except TooManyViewers as exc:
            raise _Answer(
                503, f"{exc}: close another live view and reload", {"Retry-After": "10"}
            ) from None
        except OSError:  # the browser went away, or stopped reading for read_timeout seconds
            return


_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_ROUTES: dict[tuple[str, ...], tuple[str, ...]] = {  # "*": any one segment
    (): ("GET",),
    ("things",): ("GET", "POST"),
    ("things", "*"): ("GET",),
    ("things", "*", "attributes"): ("POST",),
    ("things", "*", "password"): ("POST",),
    ("things", "*", "delete"): ("POST",),
    ("mqtt",): ("GET",),
    ("mqtt", "stream"): ("GET",),
    ("mqtt", "publish"): ("POST",),
    ("clients",): ("GET",),
    ("heartbeats",): ("GET",),
    ("static", "console.js"): ("GET",),
    ("static", "console.css"): ("GET",),
}


def _allowed_methods(parts: list[str]) -> tuple[str, ...]:
    for pattern, methods in _ROUTES.items():
        if len(pattern) == len(parts) and all(
            p in ("*", s) for p, s in zip(pattern, parts, strict=True)
        ):
            return methods
    return ()


def _sse_frame(seq: int, timestamp: float, topic: str, payload: bytes) -> bytes:
    text = payload.decode("utf-8", errors="replace")
    doc = {
        "seq": seq,
        "time": timestamp,
        "topic": topic,
        "payload": text[:MAX_PAYLOAD_SHOWN],
        "truncated": len(text) > MAX_PAYLOAD_SHOWN,
    }
    # json.dumps puts everything on one line (newlines escaped): one SSE data line
    return f"id: {seq}\nevent: frame\ndata: {json.dumps(doc)}\n\n".encode()


def _parse_attributes(text: str) -> dict[str, str]:
    """``key=value`` lines (blank lines ignored); the registry checks names and values."""
    attributes: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise _Answer(400, f"attribute line {line.strip()[:40]!r} is not key=value")
        if key.strip() == PASSWORD_HASH_ATTRIBUTE:
            raise _Answer(400, "set a password with the password field, not as an attribute")
        attributes[key.strip()] = value.strip()
    return attributes


def _password_attribute(password: str) -> dict[str, str]:
    if not password:
        return {}
    try:
        return {PASSWORD_HASH_ATTRIBUTE: hash_password(password)}
    except PasswordRejected as exc:
        raise _Answer(400, str(exc)) from None
