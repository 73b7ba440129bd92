"""The console's only script and style sheet, served as ``/console/static/console.js|css``.

No build step and no inline code: the Content-Security-Policy allows scripts and
styles from these URLs only.  The script renders every frame with ``textContent``
(never as HTML) and keeps at most ``MAX_SHOWN`` frames on the page.
"""

from __future__ import annotations

CONSOLE_JS = r"""
"use strict";
(function () {
  const MAX_SHOWN = 500;
  const frames = document.getElementById("frames");
  if (!frames) { return; }
  const status = document.getElementById("status");
  const droppedOut = document.getElementById("dropped");
  let dropped = 0;
  const filterInput = document.getElementById("filter");
  const filters = filterInput.value.split(",").map(function (f) { return f.trim(); })
    .filter(function (f) { return f.length > 0; });

  function show(frame) {
    const item = document.createElement("li");
    item.className = "frame";
    const head = document.createElement("div");
    head.className = "head";
    const when = document.createElement("span");
    when.className = "time";
    when.textContent = new Date(frame.time * 1000).toISOString();
    const topic = document.createElement("span");
    topic.className = "topic";
    topic.textContent = frame.topic;
    head.append(when, " ", topic);
    const payload = document.createElement("pre");
    payload.className = "payload";
    payload.textContent = frame.payload + (frame.truncated ? " ... (truncated)" : "");
    item.append(head, payload);
    frames.prepend(item);
    while (frames.children.length > MAX_SHOWN) { frames.lastElementChild.remove(); }
  }

  if (filters.length > 0) {
    const query = filters.map(function (f) { return "filter=" + encodeURIComponent(f); }).join("&");
    const source = new EventSource("/console/mqtt/stream?" + query);
    source.addEventListener("open", function () { status.textContent = "subscribed to " + filters.join(", "); });
    source.addEventListener("frame", function (event) { show(JSON.parse(event.data)); });
    source.addEventListener("dropped", function (event) {
      dropped += Number(event.data);
      droppedOut.textContent = String(dropped);
    });
    source.addEventListener("error", function () {
      // CLOSED: fakeiot refused the stream (a bad filter, or every live view taken): no retry.
      status.textContent = source.readyState === EventSource.CLOSED
        ? "refused (a bad filter, or too many live views open): fix it or reload"
        : "reconnecting";
    });
  }

  document.getElementById("clear").addEventListener("click", function () { frames.replaceChildren(); });

  const publish = document.getElementById("publish");
  const result = document.getElementById("pub-result");
  publish.addEventListener("submit", function (event) {
    event.preventDefault();
    const body = new URLSearchParams(new FormData(publish));
    fetch(publish.action, {
      method: "POST", body: body, headers: { "Accept": "text/plain" }, credentials: "same-origin",
    }).then(function (response) {
      return response.text().then(function (text) { result.textContent = text; });
    }).catch(function (error) { result.textContent = "failed: " + error; });
  });
})();
"""

CONSOLE_CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #16191f; }
header { background: #232f3e; color: #fff; padding: 0.6em 1em; display: flex; gap: 2em; }
header nav a { color: #d5dbdb; margin-right: 1.2em; text-decoration: none; }
header nav a.active { color: #ff9900; }
main { padding: 0 1em 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #d5dbdb; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td ul { margin: 0; padding-left: 1em; }
form { margin: 0.3em 0; }
label { display: block; margin: 0.3em 0; }
textarea { font-family: monospace; min-width: 20em; }
pre { background: #f2f3f3; padding: 0.6em; overflow-x: auto; }
.notice { background: #e9f7ec; padding: 0.5em; }
.error { background: #fde8e8; padding: 0.5em; }
#frames { font-family: monospace; padding-left: 2em; }
.frame .head { color: #545b64; }
.frame .topic { color: #0073bb; font-weight: bold; }
.frame pre { margin: 0.2em 0 0.6em; white-space: pre-wrap; word-break: break-all; }
form.delete button { color: #d13212; }
"""
