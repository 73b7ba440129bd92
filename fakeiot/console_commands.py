"""The console's command form: a CALL sent to a charge point through the processor's command API.

fakeiot knows nothing of OCPP.  What the form holds goes, as it is, to the command API the
operator points the console at (``--command-api-url``; ``python -m gateway`` sets it when it
serves one, see docs/commands.md): ``POST {url}/charge-points/{cp}/calls/{action}``.  That API
validates the request against the action's schema for the CP's OCPP version, sends it on
``<cp>/out``, waits for the answer and says what happened; the page shows its answer.

Bounded: the form's body by the API server's own limit, the wait by :data:`COMMAND_WAIT`
(the command API answers within its own time-out, 30 s by default), the answer read by
:data:`MAX_ANSWER`.  No proxy from the environment is used: the URL is reached directly.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

COMMAND_WAIT = 60.0  # seconds a form submission waits for the command API's answer
MAX_ANSWER = 256 * 1024  # bytes of the command API's answer read
ACTION = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CommandFormError(ValueError):
    """The form cannot be sent as it is (the message says what to fix)."""


@dataclass(frozen=True)
class CommandOutcome:
    """What the command API answered: its HTTP status and JSON document.

    ``status`` 0 with ``problem``: it could not be reached, or did not answer JSON."""

    status: int
    answer: Any = None
    problem: str | None = None


def check_command_api_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host (raises :class:`ValueError` naming it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the command API URL must be http(s)://host[:port], not {url!r}")
    return url.rstrip("/")


def parse_form(cp_id: str, action: str, payload: str) -> tuple[str, str, bytes]:
    """The form's fields checked for shape (the command API checks the rest)."""
    cp_id, action = cp_id.strip(), action.strip()
    if not cp_id:
        raise CommandFormError("give the charge point's id")
    if not ACTION.fullmatch(action):
        raise CommandFormError("the action is an OCPP action name, such as Reset")
    try:
        document = json.loads(payload or "{}")
    except ValueError as exc:
        raise CommandFormError(f"the payload is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CommandFormError('the payload is a JSON object, such as {"type": "Immediate"}')
    return cp_id, action, json.dumps(document).encode()


def send_command(
    base_url: str, cp_id: str, action: str, body: bytes, *, timeout: float = COMMAND_WAIT
) -> CommandOutcome:
    """POST the command to the command API and return what it answered (never raises)."""
    url = f"{base_url}/charge-points/{quote(cp_id, safe='')}/calls/{quote(action, safe='')}"
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, data = response.status, response.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:  # 4xx/5xx: the command API's own answer
        status, data = exc.code, exc.read(MAX_ANSWER + 1)
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return CommandOutcome(0, problem=f"the command API at {base_url} did not answer: {reason}")
    if len(data) > MAX_ANSWER:
        return CommandOutcome(status, problem=f"its answer is over {MAX_ANSWER} bytes")
    try:
        return CommandOutcome(status, json.loads(data))
    except ValueError:
        return CommandOutcome(status, problem="its answer is not JSON")
