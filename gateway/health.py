"""``--metrics-port``: ``GET /metrics``, ``/healthz`` and ``/readyz`` on a port of their own.

Served in the gateway's nursery by the small bounded HTTP server (gateway/http_server.py):

* ``/metrics``: the Prometheus text exposition of the gateway's own registry (:mod:`.metrics`);
* ``/healthz``: 200 while the process serves (its event loop answers);
* ``/readyz``: 200 when the gateway should get new charge points, else 503 with the reason in
  one line of text: it is draining (at once: a balancer stops sending it CPs), the MQTT broker
  is not reachable (the registry-events connection is down), or the Thing registry is not
  (its latest DescribeThing failed).

Readiness must not wedge: a gateway reported not ready gets no CPs, so no look-ups, so nothing
would ever tell it the registry is back.  While the registry's latest answer is a failure,
``/readyz`` asks it again (one DescribeThing of a name no CP has, at most every
:data:`PROBE_INTERVAL` seconds).  Where the broker refused the registry-events subscription
(:mod:`.revocation`'s fallback), no connection is held to tell: ``/readyz`` opens one to the
broker, at most every :data:`PROBE_INTERVAL` seconds.

Anything else is 404 (405 for another method on these paths).  No authentication: bind it to
loopback (the default) or a network only Prometheus and the balancer reach.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import h11
import trio
from prometheus_client import CollectorRegistry

from .errors import MqttError
from .http_server import Response, serve_http
from .metrics import exposition
from .mqtt_link import MqttDriver
from .registry import Registry
from .revocation import RegistryWatch
from .session import Bridge

log = logging.getLogger(__name__)

PROBE_INTERVAL = 5.0  # seconds between two probes of the registry or the broker
PROBE_TIMEOUT = 3.0  # a probe that takes longer counts as a failure
PROBE_THING = (
    "ocpp-gateway-readiness-probe"  # a name no CP has (the answer "no such Thing" is fine)
)
MAX_CONNECTIONS = 16  # scrapes and probes served at once
REQUEST_TIMEOUT = 5.0
ROUTES = ("/metrics", "/healthz", "/readyz")
DRAINING = "draining"
BROKER_DOWN = "MQTT broker unreachable"
REGISTRY_DOWN = "Thing registry unreachable"


def not_ready_reason(*, draining: bool, broker_up: bool, registry_up: bool) -> str | None:
    """Why the gateway must not get new charge points, or None: it is ready."""
    if draining:
        return DRAINING
    if not broker_up:
        return BROKER_DOWN
    if not registry_up:
        return REGISTRY_DOWN
    return None


@dataclass
class _Probe:
    """The latest result of a probe, renewed at most every :data:`PROBE_INTERVAL` seconds."""

    ok: bool = True
    at: float = -math.inf
    lock: trio.Lock = field(default_factory=trio.Lock)


@dataclass
class Readiness:
    """Gathers the facts :func:`not_ready_reason` decides on (see the module docstring)."""

    bridge: Bridge
    watch: RegistryWatch
    events_driver: MqttDriver
    _registry_probe: _Probe = field(default_factory=_Probe)
    _broker_probe: _Probe = field(default_factory=_Probe)

    async def reason(self) -> str | None:
        if self.bridge.draining:  # before any probe: a draining gateway says so at once
            return DRAINING
        return not_ready_reason(
            draining=self.bridge.draining,
            broker_up=await self._broker_up(),
            registry_up=await self._registry_up(),
        )

    async def _broker_up(self) -> bool:
        if not self.watch.fallback:
            return self.watch.subscribed
        return await _renew(self._broker_probe, self._connect_to_broker)

    async def _connect_to_broker(self) -> bool:
        client_id = f"gateway:probe:{random.getrandbits(48):012x}"
        try:
            async with self.events_driver.link(client_id):
                return True
        except MqttError as exc:
            log.info("readiness: MQTT broker probe failed: %s", exc)
            return False

    async def _registry_up(self) -> bool:
        registry: Registry = self.bridge.registry
        if not registry.failing:
            return True
        if trio.current_time() - registry.last_attempt < PROBE_INTERVAL:
            return False
        return await _renew(self._registry_probe, partial(registry.probe, PROBE_THING))


async def _renew(probe: _Probe, check: Callable[[], Awaitable[bool]]) -> bool:
    """The probe's result, asking ``check()`` again if the last answer is older than the interval."""
    async with probe.lock:  # concurrent requests share one probe
        if trio.current_time() - probe.at >= PROBE_INTERVAL:
            ok = False
            with trio.move_on_after(PROBE_TIMEOUT):
                ok = await check()
            probe.ok, probe.at = ok, trio.current_time()
        return probe.ok


NotReadyReason = Callable[[], Awaitable[str | None]]


async def _answer(
    registry: CollectorRegistry, not_ready: NotReadyReason, request: h11.Request, body: bytes
) -> Response:
    path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
    if path not in ROUTES:
        return Response(404, f"not found; try {', '.join(ROUTES)}\n".encode())
    if request.method not in (b"GET", b"HEAD"):
        return Response(405, b"use GET\n", headers=(("allow", "GET, HEAD"),))
    if path == "/metrics":
        accept = dict(request.headers).get(b"accept", b"").decode("latin-1")
        return Response(200, *exposition(registry, accept))
    if path == "/healthz":
        return Response(200, b"ok\n")
    reason = await not_ready()
    if reason is None:
        return Response(200, b"ready\n")
    return Response(503, f"not ready: {reason}\n".encode())


async def serve_health(
    registry: CollectorRegistry,
    not_ready: NotReadyReason,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` until cancelled; ``started(port)``.

    ``not_ready()`` says why ``/readyz`` answers 503 (None: 200): the gateway's is
    :meth:`Readiness.reason`, the processor's its broker connection (gateway/processor/metrics.py).
    """
    async with trio.open_nursery() as nursery:
        bound: int = await nursery.start(
            partial(
                serve_http,
                partial(_answer, registry, not_ready),
                host=host,
                port=port,
                name="metrics",
                max_connections=MAX_CONNECTIONS,
                request_timeout=REQUEST_TIMEOUT,
            )
        )
        log.info("metrics on http://%s:%d/metrics (also /healthz, /readyz)", host, bound)
        task_status.started(bound)
