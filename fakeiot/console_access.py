"""Who may use fakeiot's web console, and which forms it accepts (see :mod:`fakeiot.console`).

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
The live view's stream, a GET, is refused cross-site too (its slots are few).
Every answer carries a strict Content-Security-Policy (scripts and styles from
``/console/static/`` only), ``X-Frame-Options: DENY`` and ``no-store``.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from .hostcheck import loopback_host
from .loggable import loggable

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make forms send "Origin: null"
    "Cache-Control": "no-store",
}


SAME_ORIGIN = ("same-origin", "none")  # Sec-Fetch-Site of the console's own pages (none: typed)


class Refusal(Exception):
    """A request answered with an error page (``status``, ``message``), plus ``headers``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def check_access(request: BaseHTTPRequestHandler, access_keys: Mapping[str, str]) -> None:
    """Raise :class:`Refusal` unless ``request`` may use the console."""
    who = request.client_address[0]
    if not access_keys:
        if not loopback_host(request.headers.get("Host")):
            log.warning("console %s: refused a request whose Host is not a loopback name", who)
            raise Refusal(
                403, "the console answers only a loopback Host (127.0.0.1, localhost, [::1])"
            )
        return
    header = request.headers.get("Authorization")
    if header is None or not authenticated(header, access_keys):
        # A browser's first request carries no credentials: routine.  Wrong ones are worth a line
        # (never what was sent).
        log.log(
            logging.DEBUG if header is None else logging.WARNING,
            "console %s: %s %s refused: %s",
            who,
            request.command,
            loggable(request.path),
            "no credentials" if header is None else "invalid Basic credentials",
        )
        raise Refusal(
            401,
            "sign in with an access key id (user name) and its secret access key (password)",
            {"WWW-Authenticate": 'Basic realm="fakeiot console", charset="UTF-8"'},
        )


def authenticated(header: str, access_keys: Mapping[str, str]) -> bool:
    """Whether ``header`` is Basic credentials of one of ``access_keys`` (constant time)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except ValueError:  # binascii.Error, UnicodeDecodeError, and a non-ASCII (latin-1) header
        return False
    ok = False
    for key_id, secret in access_keys.items():  # every key compared: no early exit
        same_id = hmac.compare_digest(user.encode(), key_id.encode())
        same_secret = hmac.compare_digest(password.encode(), secret.encode())
        ok |= same_id and same_secret and bool(sep)
    return ok


def form_of(request: BaseHTTPRequestHandler, body: bytes, token: str) -> dict[str, str]:
    """A POST's form, once it is shown to come from the console's own pages."""
    kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Refusal(415, "send the console's forms as application/x-www-form-urlencoded")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"http://{request.headers.get('Host', '')}":
        raise Refusal(403, "cross-origin form refused (Origin is not this console)")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in SAME_ORIGIN:
        raise Refusal(403, "cross-site form refused (Sec-Fetch-Site)")
    try:
        fields = parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=20,
            strict_parsing=False,
        )
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "the form is not valid UTF-8 url-encoded data") from None
    form = {k: v[-1] for k, v in fields.items()}
    if not hmac.compare_digest(form.get("csrf", "").encode(), token.encode()):
        raise Refusal(403, "the form's token is missing or stale: reload the page and submit again")
    return form


ROUTES: dict[tuple[str, ...], tuple[str, ...]] = {  # "*": any one segment
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
    ("commands",): ("GET", "POST"),
    ("static", "console.js"): ("GET",),
    ("static", "console.css"): ("GET",),
}


def allowed_methods(parts: list[str]) -> tuple[str, ...]:
    for pattern, methods in ROUTES.items():
        if len(pattern) == len(parts) and all(
            p in ("*", s) for p, s in zip(pattern, parts, strict=True)
        ):
            return methods
    return ()


def refuse_unknown(parts: list[str], method: str) -> None:
    """404 for a path the console does not have, 405 (with ``Allow``) for a method it does not take there."""
    allowed = allowed_methods(parts)
    if not allowed:
        raise Refusal(404, "no such console page")
    raise Refusal(
        405,
        f"{method} is not allowed here (allowed: {', '.join(allowed)})",
        {"Allow": ", ".join(allowed)},
    )
