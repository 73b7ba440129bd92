"""``python -m gateway --workers N``: worker processes sharing one port, as an operator runs them.

The options' checks are unit-tested; the rest runs the real program against the fakeiot fixture:
one port for all workers, the health check, a worker killed and started again, the duplicate-
connection take-over between two workers (through the broker, as between two gateways), the
drain on SIGTERM, and a worker that cannot start stopping the whole gateway.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from fakeiot.policy import GATEWAY_USERNAME
from gateway.chargepoint import connect
from gateway.config import ConfigError, parse_config
from gateway.config_options import cores
from gateway.local_sessions import REPLACED_REASON

from .processes import ROOT, run
from .test_gateway_loop import closed_with
from .test_metrics import get
from .waiting import until

# Each attempt lands the second connection on the other worker with probability 1/2.
TAKE_OVER_ATTEMPTS = 12
BROKER = ["--mqtt-host", "127.0.0.1"]


def test_workers_option() -> None:
    assert parse_config([*BROKER], {}).runtime.workers == 1
    assert parse_config([*BROKER, "--workers", "auto"], {}).runtime.workers == cores()
    assert parse_config(BROKER, {"GATEWAY_WORKERS": "3"}).runtime.workers == 3
    for argv, message in (
        (["--workers", "0", *BROKER], "--workers must be between 1 and 1024"),
        (["--workers", "many", *BROKER], "--workers: expected a number or auto, not 'many'"),
        (["--workers", "2"], "--workers 2 needs a broker: the development stack"),
        (["--workers", "2", *BROKER, "--processor"], "run python -m gateway.processor on its own"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config(argv, {})


class Output:
    """A program's output lines, read by a task; waited for without sleeping."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = trio.Event()

    async def read(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        async for chunk in stream:
            *lines, buffer = (buffer + chunk).split(b"\n")
            self.lines += [line.decode(errors="replace") for line in lines]
            self._changed.set()
            self._changed = trio.Event()

    def matching(self, fragment: str) -> list[str]:
        return [line for line in self.lines if fragment in line]

    async def wait_for(self, fragment: str, timeout: float = 20) -> str:
        with trio.move_on_after(timeout):
            while not self.matching(fragment):
                await self._changed.wait()
            return self.matching(fragment)[0]
        raise AssertionError(f"no line with {fragment!r}; output:\n" + "\n".join(self.lines))


@asynccontextmanager
async def workers_gateway(
    fakeiot: FakeIot, *extra: str
) -> AsyncIterator[tuple[trio.Process, Output]]:
    """``python -m gateway --workers 2 --port 0`` on the fakeiot fixture; killed if still running."""
    argv = [sys.executable, "-m", "gateway", "--workers", "2", "--port", "0", *BROKER]
    argv += ["--mqtt-port", str(fakeiot.mqtt_port), "--iot-api-url", fakeiot.api_url]
    argv += ["--mqtt-username", GATEWAY_USERNAME, "--registry-negative-ttl", "0", *extra]
    env = dict(os.environ, GATEWAY_MQTT_PASSWORD=fakeiot.gateway_password, PYTHONUNBUFFERED="1")
    process = await trio.lowlevel.open_process(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    output = Output()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.read, process.stdout)
            yield process, output
            with trio.move_on_after(15):
                await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()  # its workers see their stdin end and drain
                await process.wait()
            await process.stdout.aclose()


def connected(broker: Any, cp_id: str) -> bool:
    return cp_id in broker.connected_client_ids()


async def worker_of(output: Output, cp_id: str, ws: Any) -> str:
    """Which worker logged the connection from this client's port.

    Waits for the line: a worker's output reaches the test through the supervisor's pipe, which
    can be behind what the test has already seen happen on the sockets."""
    line = await output.wait_for(f"{cp_id}: connected from 127.0.0.1:{ws.local.port} ")
    found = re.search(r" (worker \d/2) ", line)
    assert found, line
    return found.group(1)


async def test_two_workers_share_a_port_take_over_across_workers_and_drain(
    fakeiot: FakeIot, register: Any
) -> None:
    cp_ids = [f"CP{n}" for n in range(TAKE_OVER_ATTEMPTS)]
    register(*cp_ids)
    extra = ["--cp-reconnect-rate", "0", "--drain-timeout", "3", "--metrics-port", "0"]
    broker = fakeiot.broker
    assert broker is not None
    async with workers_gateway(fakeiot, *extra) as (process, output):
        line = await output.wait_for("OCPP gateway listening on")
        found = re.search(
            r"listening on (ws://127\.0\.0\.1:(\d+))/<charge-point-id> \(2 workers\)", line
        )
        assert found, line
        url, port = found.group(1), found.group(2)
        assert len(output.matching("listening on")) == 1
        assert len(output.matching("worker 1/2 gateway.app: gateway: serving OCPP-J")) == 1
        assert len(output.matching("worker 2/2 gateway.app: gateway: serving OCPP-J")) == 1

        health = await trio.run_process(
            [sys.executable, "-m", "gateway.healthcheck", "--port", port],
            cwd=ROOT,
            capture_stdout=True,
            check=False,
        )
        assert (health.returncode, health.stdout.strip()) == (0, b"healthy")

        # Each worker serves its own metrics (--metrics-port 0: each on a free port it logs).
        metrics_ports = set()
        for n in (1, 2):
            served = await output.wait_for(f"worker {n}/2 gateway.health: metrics on")
            found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", served)
            assert found, served
            metrics_ports.add(int(found.group(1)))
            status, _, body = await get(int(found.group(1)), "/metrics")
            assert status == 200 and b"ocpp_gateway_admissions_total 0.0" in body
        assert len(metrics_ports) == 2

        # A worker that dies is logged with how it ended and started again.
        pid = int(re.findall(r"worker 1/2 serving \(pid (\d+)\)", "\n".join(output.lines))[0])
        os.kill(pid, signal.SIGKILL)
        await output.wait_for(
            "worker 1/2 exited unexpectedly (killed by SIGKILL): starting it again"
        )
        await output.wait_for("worker 1/2 serving again")

        # The same CP id twice, until the two connections land on different workers: the newer
        # one's MQTT CONNECT takes the client id over at the broker, and the older is closed 1000.
        for cp_id in cp_ids:
            async with connect(url, cp_id) as older:
                await until(partial(connected, broker, cp_id), what=f"{cp_id} bridged")
                takeovers = broker.takeovers
                async with connect(url, cp_id) as newer:
                    code, reason = await closed_with(older.ws)
                    if reason == REPLACED_REASON:
                        continue  # both on one worker: the local take-over (tested elsewhere)
                    assert code == 1000 and reason.startswith("MQTT session ended"), reason
                    assert broker.takeovers > takeovers
                    older_worker = await worker_of(output, cp_id, older.ws)
                    assert older_worker != await worker_of(output, cp_id, newer.ws)
                    # SIGTERM to the supervisor drains every worker: the newer connection gets 1001.
                    process.send_signal(signal.SIGTERM)
                    assert (await closed_with(newer.ws, timeout=10))[0] == 1001
                    break
        else:
            raise AssertionError(f"{TAKE_OVER_ATTEMPTS} tries all landed on one worker")
        with trio.fail_after(15):
            assert await process.wait() == 0
        await output.wait_for("gateway stopped: worker 1/2: ")
        await output.wait_for("gateway stopped: worker 2/2: ")


def test_a_worker_that_cannot_start_stops_the_gateway(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-certificate.pem"
    bogus.write_text("not a certificate\n")
    failed = run(
        "-m",
        "gateway",
        "--workers",
        "2",
        "--port",
        "0",
        *BROKER,
        "--certfile",
        str(bogus),
        "--keyfile",
        str(bogus),
        timeout=60,
    )
    assert failed.returncode == 2, failed.stderr
    assert re.search(r"error: worker [12]/2: cannot load --certfile/--keyfile", failed.stderr)
    assert "starting it again" not in failed.stderr and "Traceback" not in failed.stderr
