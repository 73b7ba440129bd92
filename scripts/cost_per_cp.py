#!/usr/bin/env python3
"""What one connected charge point costs the gateway process: memory, threads, CPU.

    python scripts/cost_per_cp.py --cps 1000 [--broker mosquitto|amqtt]

Starts, on free 127.0.0.1 ports: fakeiot (registry + shadows; also the
MQTT broker with --broker amqtt), Mosquitto (--broker mosquitto, the
default when installed), the message processor, and ONE gateway process.
Registers N Things, then connects N simulated charge points from this
process; each sends a BootNotification and, once all are connected, one
Heartbeat.  Prints the gateway's RSS and thread count before and after,
the cost per CP, the boot and heartbeat round trips, and the gateway's CPU
while the N connections sit idle.  Figures come from /proc (Linux only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from gateway.aws import AwsSettings, make_clients  # noqa: E402
from gateway.chargepoint import boot_notification, connect, heartbeat  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    args: list[str], ready: str, env: dict[str, str] | None = None, keep: list[str] | None = None
) -> subprocess.Popen[str]:
    """Start a process and wait for ``ready`` in its output; later output lines go to ``keep`` if given."""
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if ready in line:
            # Keep reading so a chatty process never blocks on a full pipe.
            threading.Thread(
                target=_drain, args=(proc.stdout, keep), name=f"drain-{proc.pid}", daemon=True
            ).start()
            return proc
    proc.kill()
    raise SystemExit(f"{args[:3]} did not start (waited for {ready!r})")


def _drain(stream: Any, keep: list[str] | None) -> None:
    for line in stream:
        if keep is not None:
            keep.append(line)


def proc_stats(pid: int) -> tuple[float, int, float]:
    """(RSS MiB, threads, CPU seconds) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(
        next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]
    )
    threads = int(
        next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1]
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss_kib / 1024, threads, cpu


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def drive(url: str, n: int, rate: float, idle: float, gateway_pid: int) -> dict[str, object]:
    boot_rtt: list[float] = []
    beat_rtt: list[float] = []
    failures: list[str] = []
    all_booted = trio.Event()
    beat_now = trio.Event()
    done = trio.Event()
    booted = 0
    beaten = 0

    async def one(i: int) -> None:
        nonlocal booted, beaten
        try:
            async with connect(url, f"LOAD{i:06d}") as cp:
                t0 = time.perf_counter()
                await cp.call(
                    *boot_notification(
                        "2.0.1", vendor="V", model="M", serial=f"S{i}", firmware="1"
                    ),
                    timeout=120,
                )
                boot_rtt.append(time.perf_counter() - t0)
                booted += 1
                if booted == n:
                    all_booted.set()
                await beat_now.wait()
                t0 = time.perf_counter()
                await cp.call(*heartbeat(), timeout=60)
                beat_rtt.append(time.perf_counter() - t0)
                beaten += 1
                if beaten == n:
                    done.set()
                await trio.sleep_forever()
        except Exception as exc:  # noqa: BLE001 - a load tool counts failures instead of stopping
            failures.append(f"{type(exc).__name__}: {exc}")
            if len(failures) + booted >= n:
                all_booted.set()
                done.set()

    result: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        t_start = time.perf_counter()
        for i in range(n):
            nursery.start_soon(one, i)
            await trio.sleep(1 / rate)
        with trio.move_on_after(300):
            await all_booted.wait()
        result["connect_s"] = time.perf_counter() - t_start
        result["after_boot"] = proc_stats(gateway_pid)
        beat_now.set()
        with trio.move_on_after(120):
            await done.wait()
        cpu0 = proc_stats(gateway_pid)[2]
        await trio.sleep(idle)
        result["idle_cpu_pct"] = 100 * (proc_stats(gateway_pid)[2] - cpu0) / idle
        result["after_idle"] = proc_stats(gateway_pid)
        nursery.cancel_scope.cancel()
    result.update(boot_rtt=boot_rtt, beat_rtt=beat_rtt, failures=failures)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cps", type=int, default=1000, help="charge points to connect")
    parser.add_argument(
        "--broker",
        choices=["mosquitto", "amqtt"],
        default="mosquitto"
        if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()
        else "amqtt",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="connects per second")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to measure idle CPU")
    args = parser.parse_args()

    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            api_port, amqtt_port = free_port(), free_port()
            procs.append(
                start(
                    [
                        sys.executable,
                        "-m",
                        "fakeiot",
                        "--mqtt-port",
                        str(amqtt_port),
                        "--api-port",
                        str(api_port),
                        "--data-dir",
                        tmp,
                    ],
                    "fakeiot: MQTT",
                )
            )
            mqtt_port = amqtt_port
            # fakeiot's broker admits the processor with its backend role and each CP's connection with the
            # gateway's credential (both passwords made in the data directory on first start); Mosquitto here: none.
            processor_credentials = [
                "--mqtt-username",
                "fakeiot-backend",
                "--mqtt-password-file",
                f"{tmp}/backend-password",
            ]
            gateway_credentials = [
                "--mqtt-username",
                "fakeiot-gateway",
                "--mqtt-password-file",
                f"{tmp}/gateway-password",
            ]
            if args.broker == "mosquitto":
                processor_credentials = gateway_credentials = []
                mqtt_port = free_port()
                conf = Path(tmp) / "mosquitto.conf"
                conf.write_text(
                    f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\nlog_dest stderr\n"
                )
                mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
                procs.append(start([mosquitto, "-c", str(conf)], "running"))
            api_url = f"http://127.0.0.1:{api_port}"
            iot, _ = make_clients(AwsSettings(iot_endpoint_url=api_url))
            print(f"registering {args.cps} Things ...", flush=True)
            for i in range(args.cps):
                iot.create_thing(thingName=f"LOAD{i:06d}")
            procs.append(
                start(
                    [
                        sys.executable,
                        "-m",
                        "gateway.processor",
                        "--mqtt-port",
                        str(mqtt_port),
                        "--iot-api-url",
                        api_url,
                        "--log-level",
                        "WARNING",
                        *processor_credentials,
                    ],
                    "processor: answering",
                )
            )
            ws_port = free_port()
            gateway = start(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "--port",
                    str(ws_port),
                    "--mqtt-host",
                    "127.0.0.1",
                    "--mqtt-port",
                    str(mqtt_port),
                    "--iot-api-url",
                    api_url,
                    "--no-processor",
                    "--log-level",
                    "WARNING",
                    *gateway_credentials,
                ],
                "listening on",
            )
            procs.append(gateway)
            time.sleep(1.0)
            before = proc_stats(gateway.pid)
            print(
                f"connecting {args.cps} charge points at {args.rate:g}/s over {args.broker} ...",
                flush=True,
            )
            r = trio.run(
                drive, f"ws://127.0.0.1:{ws_port}", args.cps, args.rate, args.idle, gateway.pid
            )
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    after = r["after_idle"]
    boot, beat = r["boot_rtt"], r["beat_rtt"]
    n_ok = len(boot)  # type: ignore[arg-type]
    print()
    print(
        f"broker: {args.broker}; charge points: {args.cps}; booted: {n_ok}; heartbeats answered: {len(beat)}; failures: {len(r['failures'])}"
    )  # type: ignore[arg-type]
    for failure in sorted(set(r["failures"]))[:5]:  # type: ignore[call-overload]
        print(f"  failure: {failure}")
    print(f"time to connect and boot all: {r['connect_s']:.1f} s")
    print("| gateway process | RSS MiB | threads |")
    print("|---|---|---|")
    print(f"| no CP connected | {before[0]:.1f} | {before[1]} |")
    print(f"| {n_ok} CPs connected, booted | {r['after_boot'][0]:.1f} | {r['after_boot'][1]} |")  # type: ignore[index]
    print(f"| same, after {args.idle:g} s idle | {after[0]:.1f} | {after[1]} |")  # type: ignore[index]
    if n_ok:
        print(f"RSS per connected CP: {(after[0] - before[0]) * 1024 / n_ok:.1f} KiB")  # type: ignore[index]
        print(f"gateway CPU while {n_ok} CPs sit idle: {r['idle_cpu_pct']:.1f} % of one core")
        print(
            f"BootNotification round trip: p50 {1000 * statistics.median(boot):.1f} ms, p99 {1000 * pct(boot, 99):.1f} ms"
        )  # type: ignore[arg-type]
    if beat:
        print(
            f"Heartbeat round trip (all CPs at once): p50 {1000 * statistics.median(beat):.1f} ms, p99 {1000 * pct(beat, 99):.1f} ms, max {1000 * max(beat):.1f} ms"
        )  # type: ignore[arg-type]
    return 0 if n_ok == args.cps and len(beat) == args.cps else 1  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
