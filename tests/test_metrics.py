"""--metrics-port: /metrics after a scripted session, /readyz during drain and without a broker,
hostile HTTP clients; and the pure pieces (histogram, readiness rule, refusal causes)."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionRejected

from fakeiot import FakeIot
from gateway import health, http_server
from gateway.admission import AdmissionFacts, NotRegistered, Refuse, decide
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import (
    CallErrorReceived,
    ChargePoint,
    boot_notification,
    connect,
    heartbeat,
)
from gateway.config import ConfigError, GatewayConfig, parse_config
from gateway.credentials import hash_password
from gateway.histogram import FixedHistogram
from gateway.supervisor import worker_config

from .conftest import gateway_config, load_script
from .test_admission import SETTINGS
from .test_gateway_loop import closed_with
from .waiting import until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# -- pure pieces ----------------------------------------------------------------------------


def test_fixed_histogram_counts_per_bucket_and_cumulates() -> None:
    histogram = FixedHistogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.count == 4 and histogram.total == pytest.approx(3.65)
    with pytest.raises(ValueError):
        FixedHistogram((1.0, 0.5))


def test_readiness_rule_draining_first_then_broker_then_registry() -> None:
    rule = health.not_ready_reason
    assert rule(draining=False, broker_up=True, registry_up=True) is None
    assert rule(draining=True, broker_up=False, registry_up=False) == health.DRAINING
    assert rule(draining=False, broker_up=False, registry_up=False) == health.BROKER_DOWN
    assert rule(draining=False, broker_up=True, registry_up=False) == health.REGISTRY_DOWN


def test_refusals_carry_a_fixed_cause_for_the_metrics() -> None:
    def refusal(**facts: Any) -> Refuse:
        verdict = decide(AdmissionFacts(offered=("ocpp2.0.1",), **facts), SETTINGS)
        assert isinstance(verdict, Refuse), verdict
        return verdict

    assert refusal(path="/CP1", draining=True).cause == "draining"
    assert refusal(path="/bad id").cause == "invalid_identity"
    assert refusal(path="/CP1", registry=NotRegistered()).cause == "unknown_charge_point"
    no_version = decide(AdmissionFacts(path="/CP1", offered=("ocpp0.1",)), SETTINGS)
    assert isinstance(no_version, Refuse) and no_version.cause == "no_subprotocol"


def test_each_worker_gets_its_own_metrics_port() -> None:
    config = GatewayConfig(metrics_port=9100, workers=4)
    assert [worker_config(config, n).metrics.port for n in (1, 2, 4)] == [9100, 9101, 9103]
    assert worker_config(replace(config, metrics_port=0), 3).metrics.port == 0
    assert worker_config(replace(config, metrics_port=None), 3).metrics.port is None
    with pytest.raises(ConfigError, match="past 65535"):
        parse_config(["--mqtt-host", "b", "--workers", "4", "--metrics-port", "65534"], {})
    assert parse_config(["--metrics-port", "9100"], {}).metrics.host == "127.0.0.1"


# -- HTTP helpers -------------------------------------------------------------------------------


async def http(
    port: int, request: bytes, *, timeout: float = 5.0, read_after: float = 0.0
) -> tuple[int, bytes, bytes]:
    """Send raw bytes, read until the server closes: (status, head, body).

    ``read_after``: wait that long before reading, so that a server which closed with the
    request unread (a TCP reset, which discards the answer) is caught every time."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(request)
        await trio.sleep(read_after)
        data = bytearray()
        with trio.fail_after(timeout):
            while chunk := await stream.receive_some(65536):
                data += chunk
    finally:
        await trio.aclose_forcefully(stream)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, head, body


async def get(port: int, path: str) -> tuple[int, bytes, bytes]:
    return await http(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


async def scrape(port: int) -> Samples:
    status, head, body = await get(port, "/metrics")
    assert status == 200, body
    assert b"\r\ncontent-type: text/plain; version=" in head.lower()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@asynccontextmanager
async def recording_cp(
    url: str, cp_id: str, frames: list[tuple[str, str]], **options: Any
) -> AsyncIterator[ChargePoint]:
    def record(direction: str, text: str) -> None:
        frames.append((direction, text))

    async with connect(url, cp_id, on_frame=record, **options) as cp:
        yield cp


@pytest.fixture
async def metrics_gateway(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any, aws: Any
) -> RunningGateway:
    register("CP1", "CP16")
    aws[0].create_thing(
        thingName="CP2",
        attributePayload={
            "attributes": {
                "ocppPasswordHash": hash_password("correct-horse-battery-9", iterations=1000),
                "ocppSecurityProfile": "1",
            }
        },
    )
    return await nursery.start(run_gateway, gateway_config(fakeiot, metrics_port=0))  # type: ignore[no-any-return]


# -- the scripted session -----------------------------------------------------------------------


async def test_counters_move_by_what_a_scripted_session_did(
    metrics_gateway: RunningGateway,
) -> None:
    gateway = metrics_gateway
    port = gateway.metrics_port
    assert port is not None
    before = await scrape(port)
    frames: list[tuple[str, str]] = []
    async with recording_cp(gateway.url, "CP1", frames) as cp1:
        result = await cp1.call(
            *boot_notification("2.0.1", vendor="V", model="M", serial="S1", firmware="1")
        )
        assert result["status"] == "Accepted"
        for _ in range(2):
            assert "currentTime" in await cp1.call(*heartbeat())
        # A malformed CALL (a payload the schema refuses): the processor answers a CALLERROR.
        await cp1.send_text(json.dumps([2, "bad-1", "Heartbeat", {"unexpected": 1}]))
        answer = json.loads(await cp1.receive_text())
        assert answer[:2] == [4, "bad-1"]
        async with recording_cp(gateway.url, "CP16", frames, subprotocols=["ocpp1.6"]) as cp16:
            assert "currentTime" in await cp16.call(*heartbeat())
            during = await scrape(port)
            name = "ocpp_gateway_connected_charge_points"
            assert value(during, name, ocpp_version="ocpp2.0.1") == 1
            assert value(during, name, ocpp_version="ocpp1.6") == 1
    async with recording_cp(gateway.url, "CP1", frames) as again:  # a cache hit
        assert "currentTime" in await again.call(*heartbeat())
    async with connect(gateway.url, "NOPE") as unknown:
        assert (await closed_with(unknown.ws))[0] == 1008
    with pytest.raises(ConnectionRejected) as rejected:
        async with connect(gateway.url, "CP2", password="wrong-password-123"):
            pass
    assert rejected.value.status_code == 401
    await until(lambda: len(gateway.bridge.sessions) == 0, what="every CP released")
    gc.collect()  # a full collection in this process: the gateway's monitor times it
    after = await scrape(port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sent = [text for direction, text in frames if direction == "sent"]
    received = [text for direction, text in frames if direction == "received"]
    assert len(sent) == len(received) == 6
    assert moved("ocpp_gateway_admissions_total") == 3
    assert (
        moved("ocpp_gateway_refusals_total", close_code="1008", cause="unknown_charge_point") == 1
    )
    assert sum(v for (n, _), v in after.items() if n == "ocpp_gateway_refusals_total") == 1
    assert moved("ocpp_gateway_auth_failures_total", result="failed") == 1
    assert moved("ocpp_gateway_auth_failures_total", result="blocked") == 0
    assert moved("ocpp_gateway_password_hashes_total") == 1
    assert moved("ocpp_gateway_frames_total", direction="cp_to_mqtt") == len(sent)
    assert moved("ocpp_gateway_frames_total", direction="mqtt_to_cp") == len(received)
    assert moved("ocpp_gateway_payload_bytes_total", direction="cp_to_mqtt") == sum(
        len(t.encode()) for t in sent
    )
    assert moved("ocpp_gateway_payload_bytes_total", direction="mqtt_to_cp") == sum(
        len(t.encode()) for t in received
    )
    # Every CALL was answered: six round trips, none unanswered, none waiting.
    assert moved("ocpp_gateway_call_round_trip_seconds_count") == 6
    assert moved("ocpp_gateway_call_round_trip_seconds_bucket", le="+Inf") == 6
    assert moved("ocpp_gateway_call_round_trip_seconds_sum") > 0
    assert moved("ocpp_gateway_calls_unanswered_total") == 0
    assert value(after, "ocpp_gateway_calls_waiting") == 0
    # CP1, CP16, NOPE and CP2 looked up once each; CP1's second connection from the cache.
    assert moved("ocpp_gateway_registry_lookups_total") == 4
    assert moved("ocpp_gateway_registry_cache_hits_total") == 1
    assert moved("ocpp_gateway_registry_errors_total") == 0
    assert moved("ocpp_gateway_mqtt_connect_seconds_count") == 3
    assert moved("ocpp_gateway_mqtt_connect_failures_total") == 0
    assert value(after, "ocpp_gateway_mqtt_connections") == 0
    assert value(after, "ocpp_gateway_connected_charge_points", ocpp_version="ocpp2.0.1") == 0
    assert value(after, "ocpp_gateway_event_loop_lag_seconds_count") > 0
    assert ("ocpp_gateway_gc_pause_seconds_count", frozenset({("generation", "2")})) in after
    # The longest pause and lag since start: within the histograms' bounds, the full GC's seen.
    longest_gc = value(after, "ocpp_gateway_gc_pause_max_seconds", generation="2")
    assert 0 < longest_gc <= value(after, "ocpp_gateway_gc_pause_seconds_sum", generation="2")
    longest_lag = value(after, "ocpp_gateway_event_loop_lag_max_seconds")
    assert 0 <= longest_lag <= value(after, "ocpp_gateway_event_loop_lag_seconds_sum")
    stalls = gateway.loop.stalls  # one more between the scrape and here would be a 250 ms stall
    assert value(after, "ocpp_gateway_event_loop_stalls_total") in (stalls, stalls - 1)
    assert value(after, "ocpp_gateway_draining") == 0
    status, _, body = await get(port, "/healthz")
    assert (status, body) == (200, b"ok\n")


async def test_another_error_in_a_call_is_counted_as_unanswered(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    register("CP1")
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, processor=False, call_timeout=0.3, metrics_port=0)
    )
    assert gateway.metrics_port is not None
    async with connect(gateway.url, "CP1") as cp:
        with pytest.raises(CallErrorReceived):
            await cp.call(*heartbeat(), timeout=5)
    after = await scrape(gateway.metrics_port)
    assert value(after, "ocpp_gateway_calls_unanswered_total") == 1
    assert value(after, "ocpp_gateway_call_round_trip_seconds_count") == 0


async def test_the_benchmarks_scraper_reads_a_live_gateways_figures(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any
) -> None:
    """scripts/bench.py reads our gateway's figures from /metrics (scripts/bench_scrape.py)."""
    bench_scrape = load_script("bench_scrape")
    register("CP1")
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, metrics_port=0)
    )
    port = gateway.metrics_port
    assert port is not None
    scraper = bench_scrape.Scraper(port, interval=0.05)
    scraper.__enter__()
    try:
        async with connect(gateway.url, "CP1") as cp:
            for _ in range(3):
                assert "currentTime" in await cp.call(*heartbeat())
            await trio.sleep(0.2)  # a few scrapes while connected
        await until(lambda: len(gateway.bridge.sessions) == 0, what="CP1 released")
        gc.collect()
    finally:
        final = await trio.to_thread.run_sync(scraper.stop)
    assert final is not None and scraper.scrapes >= 2 and scraper.errors == []
    # The direct cost of a scrape (this process holds the gateway: its CPU time is the gateway's).
    per_scrape = await trio.to_thread.run_sync(
        lambda: bench_scrape.scrape_cpu_ms(port, time.process_time, 5)
    )
    assert 0 <= per_scrape < 500
    counts = bench_scrape.gateway_counts(final)
    assert counts["frames_cp_to_mqtt"] == counts["frames_mqtt_to_cp"] == 3
    assert (counts["admissions"], counts["refusals"], counts["calls_unanswered"]) == (1, 0, 0)
    assert counts["cpu_seconds"] > 0 and counts["rss_mib"] > 10
    loop = bench_scrape.loop_figures(final)
    summary = gateway.loop.summary()
    assert loop["full_gcs"] == summary["gc"]["gen2"]["count"] >= 1
    assert loop["full_gc_max_ms"] == pytest.approx(summary["gc"]["gen2"]["max_ms"])
    assert 0 <= loop["lag_mean_ms"] <= loop["lag_max_ms"] <= summary["lag_max_ms"]


# -- readiness --------------------------------------------------------------------------------


async def ready(port: int) -> tuple[int, bytes]:
    status, _, body = await get(port, "/readyz")
    return status, body


async def wait_ready(port: int, *, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while (await ready(port))[0] != 200:
            await trio.sleep(0.05)


async def test_readyz_turns_503_at_once_when_draining(
    metrics_gateway: RunningGateway, nursery: trio.Nursery
) -> None:
    gateway = metrics_gateway
    port = gateway.metrics_port
    assert port is not None
    await wait_ready(port)
    assert await ready(port) == (200, b"ready\n")
    async with connect(gateway.url, "CP1") as cp:
        nursery.start_soon(gateway.bridge.drain)  # runs as soon as this task waits for the probe
        assert await ready(port) == (503, b"not ready: draining\n")
        assert (await closed_with(cp.ws))[0] == 1001
    samples = await scrape(port)
    assert value(samples, "ocpp_gateway_draining") == 1
    assert (await get(port, "/healthz"))[0] == 200  # alive while draining


class CuttableProxy:
    """A TCP proxy to the broker that can be cut (every connection closed, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut = False
        self._scopes: set[trio.CancelScope] = set()

    async def handle(self, client: trio.SocketStream) -> None:
        if self.cut:
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._copy, client, upstream, nursery)
                    nursery.start_soon(self._copy, upstream, client, nursery)
            finally:
                self._scopes.discard(scope)

    async def _copy(
        self, source: trio.SocketStream, sink: trio.SocketStream, nursery: trio.Nursery
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        nursery.cancel_scope.cancel()

    def cut_now(self) -> None:
        self.cut = True
        for scope in list(self._scopes):
            scope.cancel()


async def test_readyz_turns_503_when_the_broker_goes_away_and_back(
    fakeiot: FakeIot, nursery: trio.Nursery
) -> None:
    proxy = CuttableProxy(fakeiot.mqtt_port)
    listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
    proxy_port = listeners[0].socket.getsockname()[1]
    gateway: RunningGateway = await nursery.start(
        run_gateway,
        gateway_config(fakeiot, mqtt_port=proxy_port, processor=False, metrics_port=0),
    )
    port = gateway.metrics_port
    assert port is not None
    await wait_ready(port)
    proxy.cut_now()
    with trio.fail_after(5):
        while (await ready(port))[0] == 200:
            await trio.sleep(0.02)
    assert await ready(port) == (503, b"not ready: MQTT broker unreachable\n")
    assert value(await scrape(port), "ocpp_gateway_registry_events_connected") == 0
    proxy.cut = False  # the broker is back: the events connection retries with backoff
    await wait_ready(port, timeout=15)


async def test_readyz_turns_503_when_the_registry_fails_and_probes_it_back(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "PROBE_INTERVAL", 0.2)
    register("CP1")
    api_port = int(fakeiot.api_url.rsplit(":", 1)[1])
    proxy = CuttableProxy(api_port)
    listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
    proxy_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    gateway: RunningGateway = await nursery.start(
        run_gateway,
        gateway_config(fakeiot, iot_api_url=proxy_url, processor=False, metrics_port=0),
    )
    port = gateway.metrics_port
    assert port is not None
    await wait_ready(port)
    proxy.cut_now()
    async with connect(gateway.url, "CP1") as cp:
        assert (await closed_with(cp.ws, timeout=15))[0] == 1013
    assert await ready(port) == (503, b"not ready: Thing registry unreachable\n")
    samples = await scrape(port)
    assert value(samples, "ocpp_gateway_registry_errors_total") == 1
    assert (
        value(
            samples, "ocpp_gateway_refusals_total", close_code="1013", cause="registry_unavailable"
        )
        == 1
    )
    proxy.cut = False  # no CP comes: /readyz asks the registry itself
    await wait_ready(port)
    assert value(await scrape(port), "ocpp_gateway_registry_lookups_total") == 2


# -- hostile HTTP clients ---------------------------------------------------------------------


async def test_hostile_http_clients_get_4xx_or_a_close_and_cps_carry_on(
    fakeiot: FakeIot, nursery: trio.Nursery, register: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "REQUEST_TIMEOUT", 0.5)
    register("CP1")
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, metrics_port=0)
    )
    port = gateway.metrics_port
    assert port is not None
    async with connect(gateway.url, "CP1") as cp:
        assert (await http(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n"))[0] == 400
        huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
        assert (await http(port, huge))[0] == 431
        assert (await get(port, "/nope"))[0] == 404
        assert (await get(port, "/metrics/../etc"))[0] == 404
        status, head, _ = await http(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 405 and b"allow: get, head" in head.lower()
        status, head, body = await http(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, body) == (200, b"")
        # Slowloris: half a request, then nothing: 408 once the read time-out passes.
        assert (await http(port, b"GET /metrics HTTP/1.1\r\nHo"))[0] == 408
        # Idle connections beyond the limit: the next one is answered 503 at once.
        held = [
            await trio.open_tcp_stream("127.0.0.1", port) for _ in range(health.MAX_CONNECTIONS)
        ]
        try:  # accepted in order: the held ones take every slot first
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            for _ in range(3):  # the request is read before the close: the 503 always arrives
                assert (await http(port, request, read_after=0.3))[0] == 503
            assert "currentTime" in await cp.call(*heartbeat())  # the CP did not notice
        finally:
            for stream in held:
                await trio.aclose_forcefully(stream)
        assert "currentTime" in await cp.call(*heartbeat())
    await until(lambda: gateway.bridge.sessions.get("CP1") is None, what="CP1 released")
    assert (await get(port, "/healthz"))[0] == 200


async def test_a_metrics_port_taken_is_a_one_line_start_up_error() -> None:
    async def never(request: Any, body: bytes) -> http_server.Response:
        raise AssertionError("not reached")

    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics: cannot listen on 127.0.0.1:{port}"):
            await http_server.serve_http(never, host="127.0.0.1", port=port, name="metrics")
