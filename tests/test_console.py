"""fakeiot's web console over plain HTTP: escaping, the access and CSRF rules, the bounded live feed,
404/405.  The browser test is tests/test_console_browser.py."""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import trio

from fakeiot import FakeIot, FakeIotConfig, running_fakeiot
from fakeiot import console_pages as pages
from fakeiot.console import MAX_PAYLOAD_SHOWN, sse_frame
from fakeiot.console_tap import ConsoleTap, Frame, InvalidFilter, TooManyViewers
from fakeiot.limits import MAX_PAYLOAD
from gateway.mqtt_link import MqttDriver
from iotshared.attributes import PASSWORD_HASH_ATTRIBUTE

from .conftest import Spy

HOSTILE = "<script>alert(1)</script>"
HOSTILE_LEVEL = "<img src=x onerror=alert(1)>"  # no "/": one topic level
Reply = tuple[int, dict[str, str], str]


def request(
    iot: FakeIot,
    method: str,
    path: str,
    *,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    url = urlsplit(iot.api_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        sent = {"Host": url.netloc, **(headers or {})}
        if form is not None:
            body = urlencode(form).encode()
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


async def call(iot: FakeIot, method: str, path: str, **kwargs: Any) -> Reply:
    return await trio.to_thread.run_sync(lambda: request(iot, method, path, **kwargs))


def token_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def test_pages_and_hostile_content_are_escaped(fakeiot: FakeIot, aws: Any) -> None:
    status, headers, page = await call(fakeiot, "GET", "/console")
    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    token = token_of(page)
    # a hostile Thing name: refused, and the error page shows it as text
    status, _, page = await call(
        fakeiot, "POST", "/console/things", form={"csrf": token, "name": HOSTILE}
    )
    assert status == 400
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and HOSTILE not in page
    # a hostile attribute line
    status, _, page = await call(
        fakeiot,
        "POST",
        "/console/things",
        form={"csrf": token, "name": "CP1", "attributes": 'x"><img src=x onerror=alert(1)>'},
    )
    assert status == 400 and "<img" not in page
    # a hostile value in a shadow document (the shadow service takes any JSON string)
    await trio.to_thread.run_sync(lambda: aws[0].create_thing(thingName="CP1"))
    reported = {"state": {"reported": {"x": "</pre>" + HOSTILE}}}
    await trio.to_thread.run_sync(
        lambda: aws[1].update_thing_shadow(thingName="CP1", payload=json.dumps(reported))
    )
    status, _, page = await call(fakeiot, "GET", "/console/things/CP1")
    assert status == 200
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert HOSTILE not in page and "</pre><script>" not in page
    # a hostile topic published (backend-side, as any MQTT payload or topic can be), stored by the
    # heartbeat rule, shown in the heartbeat table
    rule = {
        "sql": "SELECT topic(1) AS chargePointId, timestamp() AS lastTimestamp FROM '+/in' "
        "WHERE get(*, 2) = 'Heartbeat'",
        "actions": [
            {
                "dynamoDBv2": {
                    "roleArn": "arn:aws:iam::0:role/r",
                    "putItem": {"tableName": "chargePointHeartbeat"},
                }
            }
        ],
    }
    status, _, _ = await call(
        fakeiot, "POST", "/rules/chargePointHeartbeat", body=json.dumps(rule).encode()
    )
    assert status == 200
    status, _, answer = await call(
        fakeiot,
        "POST",
        "/console/mqtt/publish",
        form={
            "csrf": token,
            "topic": f"{HOSTILE_LEVEL}/in",
            "qos": "0",
            "payload": '[2,"1","Heartbeat",{}]',
        },
        headers={"Accept": "text/plain"},
    )
    assert (status, answer) == (200, "done")
    status, _, page = await call(fakeiot, "GET", "/console/heartbeats")
    assert status == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img" not in page


async def test_things_forms_create_set_password_and_delete(fakeiot: FakeIot, aws: Any) -> None:
    _, _, page = await call(fakeiot, "GET", "/console/things")
    token = token_of(page)
    status, headers, _ = await call(
        fakeiot,
        "POST",
        "/console/things",
        form={
            "csrf": token,
            "name": "CP7",
            "attributes": "site=north\n",
            "password": "0123456789abcdef",
        },
    )
    assert status == 303 and headers["Location"] == "/console/things?done=created"
    thing = await trio.to_thread.run_sync(lambda: aws[0].describe_thing(thingName="CP7"))
    hashed = thing["attributes"].pop(PASSWORD_HASH_ATTRIBUTE)
    assert thing["attributes"] == {"site": "north"} and "0123456789abcdef" not in hashed
    _, _, page = await call(fakeiot, "GET", "/console/things?done=created")
    assert "Thing created." in page and hashed not in page  # the hash is never shown
    status, _, _ = await call(
        fakeiot,
        "POST",
        "/console/things/CP7/attributes",
        form={"csrf": token, "attributes": "site=south"},
    )
    assert status == 303
    thing = await trio.to_thread.run_sync(lambda: aws[0].describe_thing(thingName="CP7"))
    assert thing["attributes"] == {
        "site": "south",
        PASSWORD_HASH_ATTRIBUTE: hashed,
    }  # the hash kept
    status, _, page = await call(
        fakeiot, "POST", "/console/things/CP7/password", form={"csrf": token, "password": "short"}
    )
    assert status == 400 and "password must be" in page
    status, _, _ = await call(fakeiot, "POST", "/console/things/CP7/delete", form={"csrf": token})
    assert status == 303
    status, _, _ = await call(fakeiot, "POST", "/console/things/CP7/delete", form={"csrf": token})
    assert status == 404


async def test_csrf_host_and_method_rules(fakeiot: FakeIot) -> None:
    _, _, page = await call(fakeiot, "GET", "/console/things")
    token = token_of(page)
    form = {"csrf": token, "name": "CP9"}
    assert (await call(fakeiot, "POST", "/console/things", form={"name": "CP9"}))[0] == 403
    assert (await call(fakeiot, "POST", "/console/things", form={**form, "csrf": "x"}))[0] == 403
    evil = {"Origin": "http://evil.example"}
    assert (await call(fakeiot, "POST", "/console/things", form=form, headers=evil))[0] == 403
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert (await call(fakeiot, "POST", "/console/things", form=form, headers=cross))[0] == 403
    as_json = {"Content-Type": "application/json"}
    assert (await call(fakeiot, "POST", "/console/things", form=form, headers=as_json))[0] == 415
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example
    status, _, page = await call(
        fakeiot, "GET", "/console/things", headers={"Host": "evil.example"}
    )
    assert status == 403 and token not in page
    assert (await call(fakeiot, "GET", "/console/nowhere"))[0] == 404
    too_many = "&".join(f"filter={i}" for i in range(30))
    assert (await call(fakeiot, "GET", f"/console/mqtt?{too_many}"))[0] == 400
    assert (await call(fakeiot, "GET", "/console/things/CP1/nowhere"))[0] == 404
    status, headers, _ = await call(fakeiot, "GET", "/console/things/CP1/delete")
    assert status == 405 and headers["Allow"] == "POST"
    status, headers, _ = await call(fakeiot, "DELETE", "/console/things")
    assert status == 405 and headers["Allow"] == "GET, POST"
    assert (await call(fakeiot, "GET", "/health"))[0] == 200  # the API itself is unchanged
    # with the right token, origin and site, the same form goes through
    ok = {"Origin": urlsplit(fakeiot.api_url).scheme + "://" + urlsplit(fakeiot.api_url).netloc}
    assert (await call(fakeiot, "POST", "/console/things", form=form, headers=ok))[0] == 303


async def test_with_access_keys_the_console_asks_for_basic_auth(tmp_path: Path) -> None:
    config = FakeIotConfig(
        mqtt_port=0,
        api_port=0,
        data_dir=tmp_path / "iot",
        api_access_key_id="AKIDCONSOLE",
        api_secret_access_key="s3cret-console-key",
    )
    async with running_fakeiot(config) as iot:
        status, headers, page = await call(iot, "GET", "/console")
        assert status == 401 and headers["WWW-Authenticate"].startswith(
            'Basic realm="fakeiot console"'
        )

        def basic(user: str, password: str) -> dict[str, str]:
            return {
                "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            }

        status, _, page = await call(
            iot, "GET", "/console", headers=basic("AKIDCONSOLE", "wrong-guess")
        )
        assert status == 401 and "wrong-guess" not in page and "s3cret" not in page
        assert (await call(iot, "GET", "/console", headers=basic("OTHER", "s3cret-console-key")))[
            0
        ] == 401
        assert (await call(iot, "GET", "/console", headers={"Authorization": "Basic !!"}))[0] == 401
        # Non-ASCII (a header is latin-1): refused like any malformed credentials, not a crash
        assert (await call(iot, "GET", "/console", headers={"Authorization": "Basic \xe9t\xe9"}))[
            0
        ] == 401
        status, _, page = await call(
            iot, "GET", "/console", headers=basic("AKIDCONSOLE", "s3cret-console-key")
        )
        assert status == 200 and "s3cret" not in page
        # Basic credentials open the console only: the API still wants SigV4
        assert (
            await call(iot, "GET", "/things", headers=basic("AKIDCONSOLE", "s3cret-console-key"))
        )[0] == 403


def test_tap_queue_drops_oldest_and_counts() -> None:
    tap = ConsoleTap(max_viewers=2, queue_size=3)
    with tap.viewer(["+/in"]) as viewer:
        for i in range(10):
            tap.offer("CP1/in", b"%d" % i)
            tap.offer("CP1/out", b"not matched")
        frames, dropped = viewer.take(0)
        assert [f.payload for f in frames] == [b"7", b"8", b"9"] and dropped == 7
        assert tap.dropped == 7
        assert viewer.take(0.01) == ([], 0)  # nothing new: times out
        with tap.viewer(["#"]), pytest.raises(TooManyViewers):
            with tap.viewer(["#"]):
                pass
    assert tap.viewers == 0 and tap.refused_viewers == 1
    for bad in ([], ["a/#/b"], ["a+"], ["x"] * 9):
        with pytest.raises(InvalidFilter):
            with tap.viewer(bad):
                pass


def test_tap_memory_is_bounded_in_bytes_not_only_in_frames() -> None:
    """A flood of the largest payloads (128 KiB) keeps only what the live view shows of each."""
    tap = ConsoleTap(max_viewers=1, queue_size=500)
    big = ("é" * (MAX_PAYLOAD // 2)).encode()  # 128 KiB of two-byte characters
    with tap.viewer(["#"]) as viewer:
        for _ in range(500):
            tap.offer("CP1/in", big)
        frames, dropped = viewer.take(0)
    assert len(frames) == 500 and dropped == 0
    kept = sum(len(f.payload) for f in frames)
    assert kept <= 500 * 4 * MAX_PAYLOAD_SHOWN  # 8 MiB, not 64 MiB
    shown = json.loads(sse_frame(frames[0]).decode().split("data: ", 1)[1])
    assert shown["truncated"] and shown["payload"] == "é" * MAX_PAYLOAD_SHOWN
    small = json.loads(sse_frame(Frame(1, 0.0, "t", b"short")).decode().split("data: ", 1)[1])
    assert small["payload"] == "short" and not small["truncated"]


def test_tap_without_viewers_costs_little_and_keeps_presence_bounded() -> None:
    tap = ConsoleTap(presence_history=5)
    start = time.perf_counter()
    for _ in range(20000):
        tap.offer("CP1/in", b"x" * 100)
    assert time.perf_counter() - start < 2.0  # nothing is copied or queued without a viewer
    for i in range(8):
        tap.offer(f"$aws/events/presence/connected/CP{i}", b"{}")
    assert [f.topic[-3:] for f in tap.presence_events()] == ["CP3", "CP4", "CP5", "CP6", "CP7"]


async def test_an_absent_viewer_never_slows_the_broker(
    fakeiot: FakeIot, mqtt_driver: MqttDriver, spy: Spy
) -> None:
    """A live view that nobody reads: the broker still delivers everything, the tap drops and counts."""
    with fakeiot.tap.viewer(["#"]) as viewer:
        async with mqtt_driver.link("test:pub") as link:
            for i in range(fakeiot.tap.queue_size + 100):
                await link.publish("CP1/in", b'[2,"%d","Heartbeat",{}]' % i, 0)
            await spy.wait_for(
                lambda t, p: p.startswith(b'[2,"%d"' % (fakeiot.tap.queue_size + 99))
            )
        assert len(spy.on("CP1/in")) == fakeiot.tap.queue_size + 100
        frames, dropped = viewer.take(0)
        assert len(frames) == fakeiot.tap.queue_size and dropped == 100
        assert fakeiot.tap.dropped >= 100


def open_stream(
    iot: FakeIot, query: str, *, receive_buffer: int | None = None
) -> tuple[socket.socket, bytes]:
    """A raw SSE request; returns the socket and what arrived with the headers."""
    url = urlsplit(iot.api_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    try:
        sock.connect((url.hostname or "", url.port or 0))
        sock.sendall(
            f"GET /console/mqtt/stream?{query} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except BaseException:
        sock.close()
        raise
    return sock, data


async def test_a_browser_that_stops_reading_never_slows_the_broker(
    fakeiot: FakeIot, mqtt_driver: MqttDriver, spy: Spy
) -> None:
    """A live view over HTTP whose reader stalls: its thread blocks on the socket, its queue drops
    the oldest frames (counted), and the broker delivers every message to everyone else."""
    count, payload = 1000, b"x" * 2048
    sock, head = await trio.to_thread.run_sync(
        lambda: open_stream(fakeiot, "filter=%2B%2Fin", receive_buffer=4096)
    )
    try:
        assert head.startswith(b"HTTP/1.1 200")
        async with mqtt_driver.link("test:pub") as link:
            for i in range(count):
                await link.publish("CP1/in", b"%d:" % i + payload, 0)
            await spy.wait_for(lambda t, p: p.startswith(b"%d:" % (count - 1)), timeout=20)
        assert len(spy.on("CP1/in")) == count
        assert fakeiot.tap.dropped > 0  # the stalled view lost the oldest, counted
        assert fakeiot.tap.viewers == 1
        _, _, metrics = await call(fakeiot, "GET", "/metrics")
        assert "fakeiot_console_live_views 1.0" in metrics
        dropped = re.search(r"^fakeiot_console_frames_dropped_total (\S+)$", metrics, re.MULTILINE)
        assert dropped and float(dropped.group(1)) == fakeiot.tap.dropped
    finally:
        sock.close()


async def test_stream_delivers_frames_and_caps_viewers(fakeiot: FakeIot) -> None:
    sockets = []
    try:
        sock, head = await trio.to_thread.run_sync(lambda: open_stream(fakeiot, "filter=%2B%2Fout"))
        sockets.append(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
        _, _, page = await call(fakeiot, "GET", "/console/mqtt")
        form = {
            "csrf": token_of(page),
            "topic": "CP1/out",
            "qos": "1",
            "payload": '[2,"a","Reset",{}]',
        }
        assert (await call(fakeiot, "POST", "/console/mqtt/publish", form=form))[0] == 303

        def read_frame() -> dict[str, Any]:
            data = head
            while b"event: frame\ndata: " not in data or not data.endswith(b"\n\n"):
                data += sock.recv(4096)
            line = data.split(b"event: frame\ndata: ", 1)[1].split(b"\n", 1)[0]
            return json.loads(line)  # type: ignore[no-any-return]

        frame = await trio.to_thread.run_sync(read_frame)
        assert (frame["topic"], frame["payload"]) == ("CP1/out", '[2,"a","Reset",{}]')
        for _ in range(fakeiot.tap.max_viewers - 1):
            more, head = await trio.to_thread.run_sync(lambda: open_stream(fakeiot, "filter=%23"))
            sockets.append(more)
            assert head.startswith(b"HTTP/1.1 200")
        extra, head = await trio.to_thread.run_sync(lambda: open_stream(fakeiot, "filter=%23"))
        sockets.append(extra)
        assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 10" in head
        status, _, page = await call(fakeiot, "GET", "/console/mqtt/stream?filter=a%2B")
        assert status == 400 and "must be a whole level" in page
        # Another site's page (an EventSource or <img> to 127.0.0.1, loopback Host and all)
        # cannot take the live views' slots: refused before a viewer exists.
        for sock in sockets:
            sock.close()
        sockets.clear()
        refused = await call(
            fakeiot,
            "GET",
            "/console/mqtt/stream?filter=%23",
            headers={"Sec-Fetch-Site": "cross-site"},
        )
        assert refused[0] == 403 and "cross-site" in refused[2]
        assert fakeiot.tap.refused_viewers == 1  # only the one over the cap above
    finally:
        for sock in sockets:
            sock.close()


async def test_no_console_leaves_only_the_api(tmp_path: Path) -> None:
    config = FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path / "iot", console=False)
    async with running_fakeiot(config) as iot:
        status, headers, body = await call(iot, "GET", "/console/things")
        assert status == 404 and headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
        assert "No such operation: GET /console/things" in body
        assert iot.broker is not None and iot.broker.tap is None  # nothing offered to a tap


def test_pages_escape_whatever_the_store_holds() -> None:
    """The renderers escape on their own, whatever the registry, broker or rules let through."""
    hostile_frame = Frame(
        1, 0.0, "$aws/events/presence/connected/x", json.dumps({"clientId": HOSTILE}).encode()
    )
    thing = {"thingName": HOSTILE, "attributes": {HOSTILE: HOSTILE}, "version": HOSTILE}
    rendered = [
        pages.things_page([thing], '"><script>', "created"),
        pages.thing_page(thing, {"state": {"reported": {HOSTILE: HOSTILE}}}),
        pages.clients_page([HOSTILE], [hostile_frame]),
        pages.table_page(HOSTILE, [{HOSTILE: HOSTILE, "lastTimestamp": 1700000000000}]),
        pages.mqtt_page([HOSTILE], HOSTILE, None),
        pages.error_page(400, HOSTILE),
    ]
    for html in rendered:
        assert "<script>alert" not in html and '"><script>' not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "&quot;&gt;&lt;script&gt;" in html
    assert "2023-11-14T22:13:20+00:00" in rendered[3]  # the timestamp also shown as UTC time
    # A timestamp no date can show (any rule or PutItem may store one): the number, not a crash
    odd = pages.table_page(
        "t", [{"k": 1, "lastTimestamp": v} for v in (10**20, float("nan"), -(10**18))]
    )
    assert "<td>100000000000000000000</td>" in odd and "<td>NaN</td>" in odd
    with_hash = [{"thingName": "CP1", "attributes": {PASSWORD_HASH_ATTRIBUTE: "pbkdf2-hash"}}]
    listed = pages.things_page(with_hash, "t", None)
    assert "(set)" in listed and "pbkdf2-hash" not in listed  # a password hash is never shown
