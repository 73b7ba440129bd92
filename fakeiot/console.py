"""fakeiot's web console: ``/console/...`` on the HTTP API's port, the offline stand-in for the AWS
IoT console pages an operator uses (Things, shadows, the MQTT test client, clients, a rule table).

Access, CSRF and the security headers: :mod:`fakeiot.console_access`.

The live MQTT view is Server-Sent Events fed by :class:`fakeiot.console_tap.ConsoleTap`;
each stream is one API server thread, so the tap's viewer cap bounds them, and
each stream ends after ``stream_lifetime`` seconds (the browser reconnects).
"""

from __future__ import annotations

import json
import secrets
import socket
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
from .console_access import (
    SAME_ORIGIN,
    SECURITY_HEADERS,
    Refusal,
    check_access,
    form_of,
    refuse_unknown,
)
from .console_commands import (
    CommandFormError,
    check_command_api_url,
    parse_form,
    send_command,
)
from .console_static import CONSOLE_CSS, CONSOLE_JS
from .console_tap import ConsoleTap, Frame, InvalidFilter, TooManyViewers
from .errors import ApiError
from .publish import PublishApi
from .registry import check_thing_name

PREFIX = "/console"
HEARTBEAT_TABLE = "chargePointHeartbeat"
MAX_PAYLOAD_SHOWN = 4096  # characters of a payload sent to the live view (the tap keeps 16 KiB)
SEND_BUFFER = 64 * 1024  # bytes of a live view's socket send buffer


def is_console_path(target: str) -> bool:
    path = urlsplit(target).path
    return path == PREFIX or path.startswith(PREFIX + "/")


class Console:
    """The console's request handling, called by the API server for ``/console`` paths."""

    def __init__(
        self,
        api: IotApi,
        tap: ConsoleTap,
        *,
        access_keys: Mapping[str, str] | None = None,
        connected_clients: Callable[[], list[str] | None] = list,
        command_api_url: str | None = None,
        stream_lifetime: float = 300.0,
        keepalive_interval: float = 15.0,
    ) -> None:
        self.api = api
        self.tap = tap
        self.access_keys = dict(access_keys or {})
        self.connected_clients = connected_clients
        # The processor's command API the Commands page sends through (None: not configured).
        self.command_api_url = (
            None if command_api_url is None else check_command_api_url(command_api_url)
        )
        self.stream_lifetime = stream_lifetime
        self.keepalive_interval = keepalive_interval
        self.token = secrets.token_urlsafe(32)  # the CSRF token of every form, per process

    # -- the edge ---------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        url = urlsplit(request.path)
        parts = [unquote(p) for p in url.path[len(PREFIX) :].strip("/").split("/") if p]
        try:
            check_access(request, self.access_keys)
            try:
                query = parse_qs(url.query, max_num_fields=20)
            except ValueError:
                raise Refusal(400, "too many query parameters (at most 20)") from None
            if len(parts) >= 2 and parts[0] == "things":
                self._call(lambda: check_thing_name(parts[1]))  # before the store sees it
            if request.command == "POST":
                form = form_of(request, body, self.token)
                self._post(request, parts, form)
            elif request.command == "GET":
                self._get(request, parts, query)
            else:
                refuse_unknown(parts, request.command)
        except Refusal as answer:
            if "text/plain" in request.headers.get("Accept", ""):
                self._send(
                    request, answer.status, answer.message.encode(), "text/plain", answer.headers
                )
            else:
                html = pages.error_page(answer.status, answer.message)
                self._send(request, answer.status, html.encode(), "text/html", answer.headers)

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
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
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
                        raise Refusal(exc.status, exc.message) from None
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
                # A GET changes nothing, but a stream holds one of few slots: another site's
                # page (EventSource, <img>) must not take them (a browser sends this header).
                if request.headers.get("Sec-Fetch-Site", "same-origin") not in SAME_ORIGIN:
                    raise Refusal(403, "cross-site live view refused (Sec-Fetch-Site)")
                filters = [f for v in query.get("filter", []) for f in [v.strip()] if f]
                self._stream(request, filters)
            case ["clients"]:
                connected = self.connected_clients()
                if connected is None:
                    raise Refusal(503, "the MQTT broker did not answer within 5 s: reload")
                events = self.tap.presence_events()
                self._html(request, pages.clients_page(connected, events))
            case ["heartbeats"]:
                items = self.api.store.scan_items(HEARTBEAT_TABLE)
                self._html(request, pages.table_page(HEARTBEAT_TABLE, items))
            case ["commands"]:
                self._html(request, pages.commands_page(self.command_api_url, self.token, {}))
            case ["static", "console.js"]:
                self._send(request, 200, CONSOLE_JS.encode(), "text/javascript")
            case ["static", "console.css"]:
                self._send(request, 200, CONSOLE_CSS.encode(), "text/css")
            case _:
                refuse_unknown(parts, "GET")

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
                    raise Refusal(400, "give a password")
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
            case ["commands"]:
                self._command(request, form)
            case _:
                refuse_unknown(parts, "POST")

    def _command(self, request: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        """Send the form's command through the command API (waits for its answer, bounded)."""
        url = self.command_api_url
        if url is None:
            raise Refusal(409, "no command API is configured (--command-api-url)")
        try:
            cp_id, action, body = parse_form(
                form.get("cp_id", ""), form.get("action", ""), form.get("payload", "")
            )
        except CommandFormError as exc:
            self._html(request, pages.commands_page(url, self.token, form, problem=str(exc)))
            return
        outcome = send_command(url, cp_id, action, body)
        self._html(request, pages.commands_page(url, self.token, form, outcome))

    @staticmethod
    def _call(operation: Callable[[], Any]) -> Any:
        try:
            return operation()
        except ApiError as exc:
            raise Refusal(exc.status, exc.message) from None

    # -- the live view ----------------------------------------------------------------

    def _stream(self, request: BaseHTTPRequestHandler, filters: list[str]) -> None:
        try:
            with self.tap.viewer(filters) as viewer:
                request.close_connection = True  # the stream ends with the connection
                # A fixed kernel buffer (no autotuning to MBs): a browser that stops reading is
                # soon behind, and its queue, not the kernel, holds (and drops) what it misses.
                request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                request.send_response(200)
                request.send_header("Content-Type", "text/event-stream; charset=utf-8")
                for name, value in SECURITY_HEADERS.items():
                    request.send_header(name, value)
                request.end_headers()
                request.wfile.write(b"retry: 2000\n\n")
                request.wfile.flush()
                deadline = time.monotonic() + self.stream_lifetime
                while not viewer.closed and (left := deadline - time.monotonic()) > 0:
                    frames, dropped = viewer.take(min(self.keepalive_interval, left))
                    chunks = [b"event: dropped\ndata: %d\n\n" % dropped] if dropped else []
                    chunks += [sse_frame(f) for f in frames]
                    request.wfile.write(b"".join(chunks) or b": keep-alive\n\n")
                    request.wfile.flush()
        except InvalidFilter as exc:
            raise Refusal(400, str(exc)) from None
        except TooManyViewers as exc:
            raise Refusal(
                503, f"{exc}: close another live view and reload", {"Retry-After": "10"}
            ) from None
        except OSError:  # the browser went away, or stopped reading for read_timeout seconds
            return


def sse_frame(frame: Frame) -> bytes:
    """One Server-Sent Event for ``frame``: its payload as text, cut to MAX_PAYLOAD_SHOWN characters."""
    text = frame.payload.decode("utf-8", errors="replace")
    doc = {
        "seq": frame.seq,
        "time": frame.timestamp,
        "topic": frame.topic,
        "payload": text[:MAX_PAYLOAD_SHOWN],
        "truncated": len(text) > MAX_PAYLOAD_SHOWN or frame.size is not None,
    }
    # json.dumps puts everything on one line (newlines escaped): one SSE data line
    return f"id: {frame.seq}\nevent: frame\ndata: {json.dumps(doc)}\n\n".encode()


def _parse_attributes(text: str) -> dict[str, str]:
    """``key=value`` lines (blank lines ignored); the registry checks names and values."""
    attributes: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise Refusal(400, f"attribute line {line.strip()[:40]!r} is not key=value")
        if key.strip() == PASSWORD_HASH_ATTRIBUTE:
            raise Refusal(400, "set a password with the password field, not as an attribute")
        attributes[key.strip()] = value.strip()
    return attributes


def _password_attribute(password: str) -> dict[str, str]:
    if not password:
        return {}
    try:
        return {PASSWORD_HASH_ATTRIBUTE: hash_password(password)}
    except PasswordRejected as exc:
        raise Refusal(400, str(exc)) from None
