"""The console's HTML pages, rendered from plain data (pure: no I/O, no server state).

Every value that comes from outside (Thing names, attributes, shadow documents,
topics, payloads, client ids, error messages) goes through :func:`html.escape`
(quotes included) before it is placed in the page; nothing is ever put in a
``<script>`` or a ``style`` (the Content-Security-Policy allows neither inline),
and the live feed's frames are rendered by ``console.js`` with ``textContent``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from iotshared.attributes import PASSWORD_HASH_ATTRIBUTE

from .console_commands import CommandOutcome
from .console_tap import Frame

NAV = (
    ("things", "/console/things", "Things"),
    ("mqtt", "/console/mqtt", "MQTT test client"),
    ("clients", "/console/clients", "Clients"),
    ("heartbeats", "/console/heartbeats", "Heartbeat table"),
    ("commands", "/console/commands", "Commands"),
)

NOTICES = {  # fixed texts for ?done=...: nothing from the query string is echoed
    "created": "Thing created.",
    "deleted": "Thing deleted.",
    "attributes": "Attributes saved.",
    "password": "Password set (only its hash is kept, in the Thing's attributes).",
    "published": "Message published.",
}


def e(value: Any) -> str:
    """``value`` as HTML text, quotes escaped (safe in text and quoted attributes)."""
    return escape(str(value), quote=True)


def page(active: str, title: str, body: str, *, notice: str | None = None) -> str:
    """A whole page: navigation, the notice (a key of :data:`NOTICES`), ``body`` (already HTML)."""
    links = "".join(
        f'<a href="{href}"{" class=active" if key == active else ""}>{e(label)}</a>'
        for key, href, label in NAV
    )
    note = f'<p class="notice">{e(NOTICES[notice])}</p>' if notice in NOTICES else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)} - fakeiot console</title>"
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script>'
        "</head><body>"
        f"<header><strong>fakeiot console</strong><nav>{links}</nav></header>"
        f"<main><h1>{e(title)}</h1>{note}{body}</main></body></html>\n"
    )


def error_page(status: int, message: str) -> str:
    return page("", f"Error {status}", f'<p class="error">{e(message)}</p>')


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def _shown_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """The attributes as shown: the password hash is never displayed, only that one is set."""
    return {
        k: ("(set)" if k == PASSWORD_HASH_ATTRIBUTE else v) for k, v in sorted(attributes.items())
    }


def things_page(things: Sequence[Mapping[str, Any]], token: str, notice: str | None) -> str:
    rows = []
    for thing in things:
        name = str(thing.get("thingName", ""))
        attributes = _shown_attributes(thing.get("attributes") or {})
        attrs = "".join(
            f"<li><code>{e(k)}</code> = <code>{e(v)}</code></li>" for k, v in attributes.items()
        )
        editable = "\n".join(
            f"{k}={v}"
            for k, v in (thing.get("attributes") or {}).items()
            if k != PASSWORD_HASH_ATTRIBUTE
        )
        base = f"/console/things/{e(name)}"
        rows.append(
            f'<tr data-thing="{e(name)}"><td><a href="{base}">{e(name)}</a></td>'
            f"<td><ul>{attrs}</ul></td><td>{e(thing.get('version', ''))}</td><td>"
            f'<form method="post" action="{base}/attributes">{_csrf(token)}'
            f'<textarea name="attributes" rows="2">{e(editable)}</textarea>'
            '<button type="submit">Save attributes</button></form>'
            f'<form method="post" action="{base}/password">{_csrf(token)}'
            '<input type="password" name="password" autocomplete="new-password" placeholder="new password">'
            '<button type="submit">Set password</button></form>'
            f'<form method="post" action="{base}/delete" class="delete">{_csrf(token)}'
            '<button type="submit">Delete</button></form></td></tr>'
        )
    table = (
        "<table><thead><tr><th>Thing</th><th>Attributes</th><th>Version</th><th></th></tr></thead>"
        f'<tbody id="things">{"".join(rows)}</tbody></table>'
        if rows
        else '<p id="things">No Things yet.</p>'
    )
    create = (
        '<h2>Create a Thing</h2><form method="post" action="/console/things" id="create-thing">'
        f"{_csrf(token)}"
        '<label>Name <input name="name" id="thing-name" required maxlength="128" '
        'pattern="[A-Za-z0-9:_\\-]{1,128}"></label>'
        '<label>Attributes (one <code>key=value</code> a line) <textarea name="attributes" rows="2">'
        "</textarea></label>"
        '<label>Password (optional) <input type="password" name="password" autocomplete="new-password">'
        '</label><button type="submit">Create</button></form>'
    )
    return page("things", "Things", table + create, notice=notice)


def thing_page(thing: Mapping[str, Any], shadow: Mapping[str, Any] | None) -> str:
    name = str(thing.get("thingName", ""))
    attributes = _shown_attributes(thing.get("attributes") or {})
    attrs = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in attributes.items())
    details = (
        f"<p>ARN <code>{e(thing.get('thingArn', ''))}</code>, version {e(thing.get('version', ''))}</p>"
        f"<h2>Attributes</h2><table><tbody>{attrs or '<tr><td>none</td></tr>'}</tbody></table>"
    )
    if shadow is None:
        doc = '<p id="shadow">This Thing has no shadow yet.</p>'
    else:
        text = json.dumps(shadow, indent=2, ensure_ascii=False)  # its own order: state first
        doc = f'<pre id="shadow">{e(text)}</pre>'
    return page("things", f"Thing {name}", f"{details}<h2>Device shadow (classic)</h2>{doc}")


def mqtt_page(filters: Sequence[str], token: str, notice: str | None) -> str:
    shown = ", ".join(filters)
    body = (
        '<section><h2>Subscribe</h2><form id="subscribe" method="get" action="/console/mqtt">'
        "<label>Topic filters (comma separated) "
        f'<input name="filter" id="filter" value="{e(shown)}" size="40"></label>'
        '<button type="submit">Subscribe</button></form>'
        '<p>Status: <span id="status">not connected</span>. '
        'Dropped (this view was too slow): <span id="dropped">0</span>.</p>'
        '<button type="button" id="clear">Clear</button>'
        '<ol id="frames" reversed></ol></section>'
        '<section><h2>Publish</h2><form id="publish" method="post" action="/console/mqtt/publish">'
        f'{_csrf(token)}<label>Topic <input name="topic" id="pub-topic" required size="40"></label>'
        '<label>QoS <select name="qos"><option>0</option><option>1</option></select></label>'
        '<label>Payload <textarea name="payload" id="pub-payload" rows="3"></textarea></label>'
        '<button type="submit">Publish</button> <span id="pub-result"></span></form></section>'
    )
    return page("mqtt", "MQTT test client", body, notice=notice)


def _when(timestamp_s: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp_s, datetime.UTC).isoformat(timespec="seconds")


def clients_page(connected: Iterable[str], events: Sequence[Frame]) -> str:
    now = "".join(f"<li>{e(cid)}</li>" for cid in sorted(connected))
    rows = []
    for frame in reversed(events):
        try:
            doc = json.loads(frame.payload)
        except ValueError:
            doc = {}
        doc = doc if isinstance(doc, dict) else {}
        rows.append(
            f"<tr><td>{e(_when(frame.timestamp))}</td><td>{e(doc.get('clientId', ''))}</td>"
            f"<td>{e(doc.get('eventType', ''))}</td><td>{e(doc.get('disconnectReason', ''))}</td>"
            f"<td>{e(doc.get('principalIdentifier', ''))}</td><td>{e(doc.get('ipAddress', ''))}</td></tr>"
        )
    body = (
        f'<h2>Connected now</h2><ul id="connected">{now or "<li>nobody</li>"}</ul>'
        "<h2>Presence events (newest first)</h2><table><thead><tr><th>time (UTC)</th><th>client id</th>"
        "<th>event</th><th>reason</th><th>principal</th><th>address</th></tr></thead>"
        f'<tbody id="presence">{"".join(rows)}</tbody></table>'
    )
    return page("clients", "Clients", body)


def table_page(table: str, items: Sequence[Mapping[str, Any]]) -> str:
    columns = sorted({key for item in items for key in item})
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    rows = []
    for item in items:
        cells = []
        for column in columns:
            value = item.get(column, "")
            text = value if isinstance(value, str) else json.dumps(value)
            if column.lower().endswith("timestamp") and isinstance(value, int | float):
                try:
                    text = f"{value} ({_when(value / 1000)})"
                except (OverflowError, OSError, ValueError):  # no date: NaN, beyond year 9999...
                    text = json.dumps(value)
            cells.append(f"<td>{e(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    body = (
        f"<p>Items the rules engine stored in <code>{e(table)}</code> "
        "(one per charge point, the latest heartbeat).</p>"
        f'<table><thead><tr>{head}</tr></thead><tbody id="items">{"".join(rows)}</tbody></table>'
        if items
        else f'<p id="items">No items in <code>{e(table)}</code> yet (is the heartbeat rule defined?).</p>'
    )
    return page("heartbeats", f"Table {table}", body)


def commands_page(
    api_url: str | None,
    token: str,
    fields: Mapping[str, str],
    outcome: CommandOutcome | None = None,
    problem: str | None = None,
) -> str:
    """The command form, and the command API's answer to the last one sent."""
    if api_url is None:
        body = (
            "<p>No command API is configured. Commands to charge points are the message "
            "processor's: start its HTTP command API (<code>python -m gateway "
            "--processor-http-port 8091</code> for the development stack, which then points "
            "this page at it; or <code>python -m gateway.processor serve --http-port ...</code>) "
            "and give fakeiot <code>--command-api-url http://127.0.0.1:8091</code>.</p>"
        )
        return page("commands", "Commands", body)
    cp_id = fields.get("cp_id", "")
    action = fields.get("action", "Reset")
    payload = fields.get("payload", '{"type": "Immediate"}')
    body = (
        f"<p>Sent through the command API at <code>{e(api_url)}</code>, which checks the "
        "payload against the action's schema for the charge point's OCPP version, sends the "
        "CALL on <code>&lt;cp&gt;/out</code> and waits for its answer.</p>"
        '<form id="command" method="post" action="/console/commands">'
        f"{_csrf(token)}"
        f'<label>Charge point <input name="cp_id" id="cmd-cp" required value="{e(cp_id)}"></label>'
        f'<label>Action <input name="action" id="cmd-action" required value="{e(action)}"></label>'
        '<label>Payload (JSON) <textarea name="payload" id="cmd-payload" rows="4">'
        f"{e(payload)}</textarea></label>"
        '<button type="submit">Send</button></form>'
    )
    if problem is not None:
        body += f'<p class="error" id="cmd-result">{e(problem)}</p>'
    elif outcome is not None:
        verdict = "no answer" if outcome.status == 0 else f"HTTP {outcome.status}"
        shown = (
            outcome.problem
            if outcome.problem is not None
            else json.dumps(outcome.answer, indent=2, ensure_ascii=False)
        )
        body += (
            f'<section id="cmd-result"><h2>Answer: {e(verdict)}</h2><pre>{e(shown)}</pre></section>'
        )
    return page("commands", "Commands", body)
