"""The container's HEALTHCHECK (python -m gateway.healthcheck) against real gateways.

It runs as the container runs it: a separate process configured by the same
GATEWAY_* variables as the gateway it checks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from fakeiot.certs import make_development_pki
from gateway.app import RunningGateway, run_gateway

from .conftest import gateway_config
from .processes import closed_port, run


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_development_pki(tmp_path_factory.mktemp("pki"))


async def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Variables the test runner may have set must not leak into the check.
    base = {"GATEWAY_CERTFILE": "", "GATEWAY_KEYFILE": "", "GATEWAY_BASE_PATH": ""}
    return await trio.to_thread.run_sync(
        lambda: run("-m", "gateway.healthcheck", env={**base, **env})
    )


async def test_a_serving_ws_gateway_is_healthy_and_a_dead_port_is_not(
    gateway: RunningGateway,
) -> None:
    healthy = await healthcheck({"GATEWAY_PORT": str(gateway.port)})
    assert (healthy.returncode, healthy.stdout.strip()) == (0, "healthy")
    with closed_port() as port:
        dead = await healthcheck({"GATEWAY_PORT": str(port)})
    assert dead.returncode == 1
    assert dead.stdout.strip() == f"unhealthy: no OCPP gateway answering on ws://127.0.0.1:{port}/"


async def test_with_a_metrics_port_it_asks_healthz(fakeiot: FakeIot, nursery: trio.Nursery) -> None:
    """As the container image runs it (GATEWAY_METRICS_PORT set): liveness from /healthz."""
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, metrics_port=0)
    )
    env = {"GATEWAY_PORT": str(gateway.port), "GATEWAY_METRICS_PORT": str(gateway.metrics_port)}
    healthy = await healthcheck(env)
    assert (healthy.returncode, healthy.stdout.strip()) == (0, "healthy")
    # A gateway whose WebSocket port answers but whose /healthz does not is not taken as alive.
    with closed_port() as port:
        dead = await healthcheck({**env, "GATEWAY_METRICS_PORT": str(port)})
    assert dead.returncode == 1
    assert dead.stdout.strip() == f"unhealthy: http://127.0.0.1:{port}/healthz did not answer 200"


async def test_a_serving_wss_gateway_is_healthy(
    fakeiot: FakeIot, nursery: trio.Nursery, pki: dict[str, Any]
) -> None:
    """Its certificate names localhost and is signed by a private CA: a liveness check of the
    local process must not verify it (it reported this gateway as unhealthy)."""
    cert, key = pki["server"].cert, pki["server"].key
    secure: RunningGateway = await nursery.start(
        run_gateway,
        gateway_config(fakeiot, certfile=cert, keyfile=key, base_path="/ocpp", processor=False),
    )
    env = {
        "GATEWAY_PORT": str(secure.port),
        "GATEWAY_CERTFILE": str(cert),
        "GATEWAY_KEYFILE": str(key),
        "GATEWAY_BASE_PATH": "/ocpp",
        "GATEWAY_HOST": "0.0.0.0",  # bound to every address: checked on loopback
    }
    healthy = await healthcheck(env)
    assert (healthy.returncode, healthy.stdout.strip()) == (0, "healthy"), healthy.stderr
    # The same port spoken to in plain ws:// does not pass for a gateway.
    plain = await healthcheck({"GATEWAY_PORT": str(secure.port)})
    assert plain.returncode == 1 and "unhealthy" in plain.stdout
    with closed_port() as port:
        dead = await healthcheck({**env, "GATEWAY_PORT": str(port)})
    assert dead.returncode == 1 and "unhealthy: no OCPP gateway answering on wss://" in dead.stdout


async def test_a_bad_configuration_is_unhealthy_with_the_reason(tmp_path: Path) -> None:
    bad = await healthcheck({"GATEWAY_PORT": "eighty"})
    assert bad.returncode == 1
    assert bad.stdout.strip() == (
        "unhealthy: bad configuration: GATEWAY_PORT: invalid int value: 'eighty'"
    )
    missing = await healthcheck(
        {"GATEWAY_CERTFILE": str(tmp_path / "none.pem"), "GATEWAY_KEYFILE": str(tmp_path)}
    )
    assert missing.returncode == 1 and "GATEWAY_CERTFILE names no such file" in missing.stdout
    assert "Traceback" not in bad.stderr + missing.stderr
