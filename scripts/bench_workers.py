#!/usr/bin/env python3
"""Throughput of ``python -m gateway --workers N``: 1 against 2 (or more) workers, same load.

    python scripts/bench_workers.py --workers 1,2 --cps 500 --load 4000 --duration 20 --repeat 2

The stack is scripts/bench.py's (fakeiot for the registry, Mosquitto as the broker, the
message processor in its own process); the load is scripts/loadtest.py, closed loop: each CP
sends its next message once the last is answered, at most one per ``cps / load`` seconds.
The runs alternate (1, 2, 1, 2...) so that the machine's other load falls on both alike.
Printed per run: messages per second each way, round trips, and the gateway's CPU (the
supervisor and all its workers) in µs per forwarded message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_legacy import _busy_since, _cpu_times  # noqa: E402
from bench_stack import Stack, run_loadtest, stop  # noqa: E402
from cost_per_cp import free_port, start  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of its live children (the workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def one_run(stack: Stack, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    proc = start(
        [
            sys.executable,
            "-m",
            "gateway",
            "--workers",
            str(workers),
            "--port",
            str(port),
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(stack.mqtt_port),
            "--iot-api-url",
            stack.api_url,
            "--no-processor",
            "--log-level",
            "WARNING",
            "--mqtt-connect-rate",
            "500",
            "--mqtt-connect-burst",
            "500",
            "--max-message-rate",
            "0",
        ],
        "listening on",
    )
    try:
        time.sleep(1.0)
        cpu0, machine0 = cpu_seconds(proc.pid), _cpu_times()
        figures = run_loadtest(
            [
                "--url",
                f"ws://127.0.0.1:{port}",
                "--cps",
                str(args.cps),
                "--prefix",
                "LT",
                "--rate",
                "500",
                "--interval",
                f"{args.cps / args.load:g}",
                "--duration",
                str(args.duration + args.cps / 500),
                "--processes",
                str(args.generator_processes),
            ]
        )
        gateway_cpu = cpu_seconds(proc.pid) - cpu0
        busy = _busy_since(machine0)
    finally:
        stop(proc)
    messages = figures["sent"] + figures["answered"]
    return {
        "workers": workers,
        "cp_to_cpo_per_s": round(figures["msgs_per_s_cp_to_cpo"], 1),
        "cpo_to_cp_per_s": round(figures["msgs_per_s_cpo_to_cp"], 1),
        "rtt_p50_ms": figures["steady_after_boot_rtt_ms"].get("p50"),
        "rtt_p99_ms": figures["steady_after_boot_rtt_ms"].get("p99"),
        "gateway_cpu_s": round(gateway_cpu, 1),
        "gateway_cpu_us_per_msg": round(1e6 * gateway_cpu / messages, 1) if messages else None,
        "machine_busy_percent": round(busy),
        "refused": figures["refused"],
        "dropped": figures["dropped"],
        "unanswered": figures["unanswered"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2")
    parser.add_argument("--cps", type=int, default=500)
    parser.add_argument("--load", type=int, default=4000, help="messages per second offered")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--generator-processes", type=int, default=1)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp, Stack("mosquitto", Path(tmp)) as stack:
        stack.register("LT", args.cps)
        for _ in range(args.repeat):
            for workers in counts:
                result = one_run(stack, workers, args)
                print(json.dumps(result), flush=True)
                results.append(result)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
