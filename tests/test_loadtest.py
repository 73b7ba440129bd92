"""A small run of scripts/loadtest.py in the suite: every CP boots, every CALL is answered.

No timing assertions (the machines are shared); the figures are for docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from fakeiot import FakeIot
from gateway.app import RunningGateway

from .processes import run


async def test_loadtest_smoke_200_cps(
    gateway: RunningGateway, fakeiot: FakeIot, tmp_path: Path
) -> None:
    out = tmp_path / "figures.json"
    result = await trio.to_thread.run_sync(
        lambda: run(
            "scripts/loadtest.py",
            "--url",
            gateway.url,
            "--cps",
            "200",
            "--prefix",
            "SMOKE",
            "--register",
            "--api-url",
            fakeiot.api_url,
            "--rate",
            "100",
            "--interval",
            "2",
            "--duration",
            "10",
            "--mix",
            "heartbeat=2,status=1,meter=1",
            "--json",
            str(out),
            "--quiet",
            timeout=120,
        )
    )
    figures: dict[str, Any] = json.loads(out.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert figures["established"] == figures["booted"] == 200
    assert figures["refused"] == figures["dropped"] == 0
    assert (
        figures["sent"] == figures["answered"] > 200
    )  # boots + steady-state messages, all answered
    assert figures["errors"] == {}
    assert "boot RTT ms p50" in result.stdout  # the table a user reads


def test_loadtest_rejects_bad_options() -> None:
    bad = run("scripts/loadtest.py", "--url", "ws://x", "--cps", "10", "--mix", "coffee=1")
    assert bad.returncode == 2 and "unknown message 'coffee'" in bad.stderr
