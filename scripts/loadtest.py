#!/usr/bin/env python3
"""Load generator: N simulated charge points against a gateway, with figures at the end.

    python scripts/loadtest.py --url ws://127.0.0.1:8080 --cps 1000 --rate 200 --interval 30 --duration 300 \\
        [--prefix LT] [--register --api-url http://127.0.0.1:8090] [--processes 2] \\
        [--mix heartbeat=1,status=1,meter=1] [--ocpp 2.0.1|1.6] [--ca-file ca.pem] \\
        [--gateway-pid PID] [--json results.json]

Each CP connects (the whole run ramps at ``--rate`` connects/s), sends a
BootNotification, then every ``--interval`` s one message drawn from
``--mix`` (Heartbeat, StatusNotification, MeterValues / TransactionEvent), until
``--duration`` s after the start; then it disconnects.  Every CALL's round
trip CP -> gateway -> broker -> processor -> broker -> gateway -> CP is timed.
``--processes N`` splits the CPs over N worker processes (more cores).  While
it runs, a status line shows live counters; at the end a table shows
connections attempted/established/refused/dropped, the connect rate
achieved, round trips p50/p95/p99/max for boot and for steady state, messages
per second each way and errors by kind; ``--json`` writes the same figures.
``--gateway-pid`` samples the gateway's RSS, threads and CPU (Linux /proc).
Exit status: 0 when every CP booted and every CALL was answered, else 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import ssl
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.chargepoint import CallErrorReceived, boot_notification, connect  # noqa: E402
from gateway.gcpolicy import GcPolicy  # noqa: E402
from gateway.looplag import LoopMonitor  # noqa: E402

MIX_NAMES = ("heartbeat", "status", "meter")


@dataclass
class Stats:
    attempted: int = 0
    established: int = 0
    refused: int = 0
    dropped: int = 0
    booted: int = 0
    sent: int = 0
    received: int = 0
    boot_rtt: list[float] = field(default_factory=list)
    steady_rtt: list[float] = field(default_factory=list)
    steady_at: list[float] = field(default_factory=list)  # wall clock of each steady-state answer
    steady_sent_at: list[float] = field(
        default_factory=list
    )  # wall clock of each steady-state CALL
    boot_unanswered: int = 0  # BootNotifications with no answer within --call-timeout
    # The --late-cps group (connecting while the first group loads the gateway): wall clock of its boots.
    late_boots: list[float] = field(default_factory=list)
    late_connects: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_connect: float = 0.0
    last_connect: float = 0.0
    last_boot: float = 0.0  # wall clock when the last CP's boot was answered
    # This generator's own event loop (per worker process): a stalled generator inflates round trips.
    loop_lag_max_ms: float = 0.0
    loop_stalls: int = 0
    gc_full_max_ms: float = 0.0
    gc_young_max_ms: float = 0.0

    def merge(self, other: dict[str, Any]) -> None:
        for name in (
            "attempted",
            "established",
            "refused",
            "dropped",
            "booted",
            "sent",
            "received",
            "boot_unanswered",
        ):
            setattr(self, name, getattr(self, name) + other[name])
        self.boot_rtt += other["boot_rtt"]
        self.steady_rtt += other["steady_rtt"]
        self.steady_at += other["steady_at"]
        self.steady_sent_at += other["steady_sent_at"]
        self.late_boots += other["late_boots"]
        self.late_connects += other["late_connects"]
        self.errors.update(other["errors"])
        firsts = [t for t in (self.first_connect, other["first_connect"]) if t]
        self.first_connect = min(firsts) if firsts else 0.0
        self.last_connect = max(self.last_connect, other["last_connect"])
        self.last_boot = max(self.last_boot, other["last_boot"])
        self.loop_lag_max_ms = max(self.loop_lag_max_ms, other["loop_lag_max_ms"])
        self.loop_stalls += other["loop_stalls"]
        self.gc_full_max_ms = max(self.gc_full_max_ms, other["gc_full_max_ms"])
        self.gc_young_max_ms = max(self.gc_young_max_ms, other["gc_young_max_ms"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "established": self.established,
            "refused": self.refused,
            "dropped": self.dropped,
            "booted": self.booted,
            "sent": self.sent,
            "received": self.received,
            "boot_rtt": self.boot_rtt,
            "steady_rtt": self.steady_rtt,
            "steady_at": self.steady_at,
            "steady_sent_at": self.steady_sent_at,
            "boot_unanswered": self.boot_unanswered,
            "late_boots": self.late_boots,
            "late_connects": self.late_connects,
            "errors": dict(self.errors),
            "first_connect": self.first_connect,
            "last_connect": self.last_connect,
            "last_boot": self.last_boot,
            "loop_lag_max_ms": self.loop_lag_max_ms,
            "loop_stalls": self.loop_stalls,
            "gc_full_max_ms": self.gc_full_max_ms,
            "gc_young_max_ms": self.gc_young_max_ms,
        }


def parse_mix(text: str) -> list[tuple[str, float]]:
    mix = []
    for item in text.split(","):
        name, _, weight = item.strip().partition("=")
        if name not in MIX_NAMES:
            raise argparse.ArgumentTypeError(
                f"unknown message {name!r} in --mix (known: {', '.join(MIX_NAMES)})"
            )
        mix.append((name, float(weight or 1)))
    return mix


def message(kind: str, version: str, tx: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if kind == "heartbeat":
        return "Heartbeat", {}
    if kind == "status":
        if version == "1.6":
            return "StatusNotification", {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": "Available",
            }
        return "StatusNotification", {
            "timestamp": now,
            "connectorStatus": "Available",
            "evseId": 1,
            "connectorId": 1,
        }
    tx["seq"] = tx.get("seq", 0) + 1
    value = {"value": float(tx["seq"])}
    if version == "1.6":
        return "MeterValues", {
            "connectorId": 1,
            "meterValue": [{"timestamp": now, "sampledValue": [{"value": str(tx["seq"])}]}],
        }
    return "TransactionEvent", {
        "eventType": "Updated",
        "timestamp": now,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": tx["seq"],
        "transactionInfo": {
            "transactionId": tx.setdefault("id", f"tx-{random.getrandbits(32):08x}")
        },
        "meterValue": [{"timestamp": now, "sampledValue": [value]}],
    }


async def one_cp(
    cp_id: str,
    args: argparse.Namespace,
    stats: Stats,
    start_at: float,
    end_at: float,
    ssl_context: ssl.SSLContext | None,
    mix: list[tuple[str, float]],
    *,
    late: bool = False,
) -> None:
    """One CP's run; a ``late`` CP (the --late-cps group) boots, then only holds its connection."""
    await trio.sleep_until(start_at)
    stats.attempted += 1
    version = args.ocpp
    subprotocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    kinds, weights = zip(*mix, strict=True)
    established = False
    finished = False  # the CP's run is over; only the closing handshake is left
    booting = False
    connection: Any = None
    try:
        async with connect(
            args.url,
            cp_id,
            subprotocols=[subprotocol],
            ssl_context=ssl_context,
            connect_timeout=args.connect_timeout,
        ) as cp:
            connection = cp.ws
            established = True
            stats.established += 1
            now = trio.current_time()
            if late:  # the late group's connects are counted apart
                stats.late_connects.append(time.time())
            else:
                stats.first_connect = stats.first_connect or time.time()
                stats.last_connect = time.time()
            if args.boot_delay > 0:  # both gateways alike: a CP that waits a moment before booting
                await trio.sleep(args.boot_delay)
            booting = True
            t0 = trio.current_time()
            stats.sent += 1
            result = await cp.call(
                *boot_notification(
                    version, vendor="LoadTest", model="LT-1", serial=cp_id, firmware="1.0"
                ),
                timeout=args.call_timeout,
            )
            stats.received += 1
            stats.boot_rtt.append(trio.current_time() - t0)
            if result.get("status") != "Accepted":
                stats.errors[f"boot {result.get('status')}"] += 1
                return
            booting = False
            if late:  # not in booted / last_boot: those are the first group's
                stats.late_boots.append(time.time())
                await trio.sleep_until(end_at)
                finished = True
                return
            stats.booted += 1
            stats.last_boot = time.time()
            tx: dict[str, Any] = {}
            # Spread the CPs' steady-state messages evenly over the interval.
            next_at = now + random.uniform(0, args.interval)
            while next_at < end_at:
                await trio.sleep_until(next_at)
                action, payload = message(random.choices(kinds, weights)[0], version, tx)
                t0 = trio.current_time()
                stats.sent += 1
                stats.steady_sent_at.append(time.time())
                try:
                    await cp.call(action, payload, timeout=args.call_timeout)
                except CallErrorReceived as exc:  # answered, with an error: count it and go on
                    stats.errors[f"{action}: CallError {_error_code(exc)}"] += 1
                stats.received += 1
                stats.steady_rtt.append(trio.current_time() - t0)
                stats.steady_at.append(time.time())
                next_at += args.interval
            finished = True
    except CallErrorReceived as exc:
        stats.received += 1
        stats.errors[f"BootNotification: CallError {_error_code(exc)}"] += 1
    except trio.TooSlowError:
        if booting:
            stats.boot_unanswered += 1
        stats.errors["call timeout" if established else "connect timeout"] += 1
    except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
        reason = getattr(exc, "reason", None) or getattr(connection, "closed", None)
        code = getattr(reason, "code", None)
        text = getattr(reason, "reason", None)
        kind = (
            f"closed {code} {text or ''}".strip()[:80] + f" ({type(exc).__name__})"
            if code
            else type(exc).__name__
        )
        if finished:
            # Not a dropped connection: every message was answered, closing it failed.
            stats.errors[f"while closing at the end: {kind}"] += 1
        elif established:
            stats.dropped += 1
            stats.errors[kind] += 1
        else:
            stats.refused += 1
            stats.errors[f"refused: {type(exc).__name__}"] += 1


def _error_code(exc: CallErrorReceived) -> str:
    return str(exc.code)


async def worker(
    args: argparse.Namespace, ids: list[str], index: int, workers: int, progress: bool
) -> Stats:
    stats = Stats()
    ssl_context = (
        ssl.create_default_context(cafile=args.ca_file) if args.url.startswith("wss") else None
    )
    mix = parse_mix(args.mix)
    start = trio.current_time() + 0.2
    end_at = start + args.duration
    # The whole run ramps at --rate; this worker's CPs are every workers-th one.
    monitor = LoopMonitor(warn_after=0.1, log_stalls=False)
    async with trio.open_nursery() as outer:
        await outer.start(monitor.run)
        # Full collections of the generator's own objects would stall every simulated CP at once and
        # show up as gateway latency: one per 10 minutes at most (the gateway's own policy, longer).
        await outer.start(GcPolicy(600.0).run)
        if progress:
            outer.start_soon(_progress, stats, start, args)
        async with trio.open_nursery() as nursery:
            for n, cp_id in enumerate(ids):
                position = n * workers + index
                nursery.start_soon(
                    one_cp,
                    cp_id,
                    args,
                    stats,
                    start + position / args.rate,
                    end_at,
                    ssl_context,
                    mix,
                )
            late_start = start + args.late_at
            for k in range(index, args.late_cps, workers):
                nursery.start_soon(
                    partial(
                        one_cp,
                        f"{args.prefix}{args.cps + k}",
                        args,
                        stats,
                        late_start + k / args.rate,
                        end_at,
                        ssl_context,
                        mix,
                        late=True,
                    )
                )
        outer.cancel_scope.cancel()
    loop = monitor.summary()
    stats.loop_lag_max_ms, stats.loop_stalls = loop["lag_max_ms"], loop["stalls"]
    stats.gc_full_max_ms = loop["gc"]["gen2"]["max_ms"]
    stats.gc_young_max_ms = max(loop["gc"]["gen0"]["max_ms"], loop["gc"]["gen1"]["max_ms"])
    return stats


async def _progress(stats: Stats, start: float, args: argparse.Namespace) -> None:
    while True:
        await trio.sleep(1.0)
        elapsed = trio.current_time() - start
        sys.stderr.write(
            f"\r[{elapsed:6.1f}/{args.duration:g} s] connected {stats.established}/{args.cps} booted {stats.booted} "
            f"sent {stats.sent} answered {stats.received} errors {sum(stats.errors.values())}   "
        )
        sys.stderr.flush()


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1] * 1000}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def span_rate(times: list[float]) -> float | None:
    """Events per second between the first and the last of ``times`` (None for fewer than two)."""
    if len(times) < 2 or max(times) <= min(times):
        return None
    return (len(times) - 1) / (max(times) - min(times))


Window = tuple[tuple[float, float], tuple[float, float]]


def window_figures(stats: Stats, window: Window | None) -> dict[str, Any] | None:
    """The measured window (--measure-from/--measure-for): gateway CPU per forwarded message.

    ``window`` is ((wall clock, gateway CPU s) at its start, the same at its end). A forwarded message
    is a CALL the gateway took from a CP to MQTT or an answer it took from MQTT to a CP."""
    if window is None:
        return None
    (w0, cpu0), (w1, cpu1) = window
    seconds = w1 - w0
    sent = sum(1 for at in stats.steady_sent_at if w0 <= at < w1)
    answered = [
        rtt for rtt, at in zip(stats.steady_rtt, stats.steady_at, strict=True) if w0 <= at < w1
    ]
    forwarded = sent + len(answered)
    cpu = cpu1 - cpu0
    return {
        "seconds": seconds,
        "gateway_cpu_s": cpu,
        "gateway_cpu_percent": 100.0 * cpu / seconds if seconds > 0 else None,
        "sent": sent,
        "answered": len(answered),
        "forwarded": forwarded,
        "cpu_us_per_msg": 1e6 * cpu / forwarded if forwarded else None,
        "msgs_per_s_cp_to_cpo": sent / seconds if seconds > 0 else 0.0,
        "msgs_per_s_cpo_to_cp": len(answered) / seconds if seconds > 0 else 0.0,
        "rtt_ms": percentiles(answered),
    }


class ProcSampler:
    """RSS, threads and CPU of a process from /proc (Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[dict[str, float]] = []
        self._last: tuple[float, float] | None = None

    def sample(self) -> dict[str, float] | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        rss_kib = int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        )
        threads = int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))
        )
        cpu_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        now = time.monotonic()
        cpu_percent = 0.0
        if self._last is not None and now > self._last[0]:
            cpu_percent = 100.0 * (cpu_s - self._last[1]) / (now - self._last[0])
        self._last = (now, cpu_s)
        sample = {
            "t": now,
            "rss_mib": rss_kib / 1024,
            "threads": threads,
            "cpu_percent": cpu_percent,
        }
        self.samples.append(sample)
        return sample


def register(args: argparse.Namespace, ids: list[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from gateway.aws import AwsSettings, make_clients
    from gateway.identity import thing_name_for

    iot, iot_data = make_clients(
        AwsSettings(iot_endpoint_url=args.api_url)
    )  # boto3 clients are thread-safe
    started = time.monotonic()

    def create(cp_id: str) -> None:
        try:
            iot.create_thing(thingName=thing_name_for(cp_id))
        except iot.exceptions.ResourceAlreadyExistsException:
            pass

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            for n, _ in enumerate(pool.map(create, ids)):
                if n % 1000 == 999:
                    sys.stderr.write(f"\rregistered {n + 1}/{len(ids)}")
    finally:  # the clients' pooled HTTP connections, also when a registration failed
        iot.close()
        iot_data.close()
    sys.stderr.write(f"\rregistered {len(ids)} Things in {time.monotonic() - started:.1f} s\n")


def summarize(
    stats: Stats,
    args: argparse.Namespace,
    wall: float,
    gateway: list[dict[str, float]],
    started: float,
    window: Window | None = None,
) -> dict[str, Any]:
    ramp = stats.last_connect - stats.first_connect if stats.established > 1 else 0.0
    summary: dict[str, Any] = {
        "cps": args.cps,
        "duration_s": args.duration,
        "interval_s": args.interval,
        "mix": args.mix,
        "url": args.url,
        "attempted": stats.attempted,
        "established": stats.established,
        "refused": stats.refused,
        "dropped": stats.dropped,
        "booted": stats.booted,
        "boot_unanswered": stats.boot_unanswered,
        "boot_delay_s": args.boot_delay,
        "connect_rate_per_s": (stats.established - 1) / ramp if ramp > 0 else None,
        "all_booted_after_s": stats.last_boot - started if stats.booted == args.cps else None,
        "boot_rtt_ms": percentiles(stats.boot_rtt),
        "steady_rtt_ms": percentiles(stats.steady_rtt),
        # Steady state proper: answers after the last CP booted (the connect ramp excluded).
        "steady_after_boot_rtt_ms": percentiles(
            [
                rtt
                for rtt, at in zip(stats.steady_rtt, stats.steady_at, strict=True)
                if at > stats.last_boot
            ]
        )
        if stats.booted == args.cps
        else percentiles([]),
        "sent": stats.sent,
        "answered": stats.received,
        "unanswered": stats.sent - stats.received,
        "msgs_per_s_cp_to_cpo": stats.sent / wall if wall else 0.0,
        "msgs_per_s_cpo_to_cp": stats.received / wall if wall else 0.0,
        "errors": dict(stats.errors),
        "wall_s": wall,
        "window": window_figures(stats, window),
        "late": {
            "cps": args.late_cps,
            "at_s": args.late_at,
            "configured_rate_per_s": args.rate,
            "established": len(stats.late_connects),
            "booted": len(stats.late_boots),
            # CPs connected (booted) per second, first to last, while the first group loads the gateway.
            "connect_rate_per_s": span_rate(stats.late_connects),
            "boot_rate_per_s": span_rate(stats.late_boots),
        }
        if args.late_cps
        else None,
        "generator": {
            "loop_lag_max_ms": stats.loop_lag_max_ms,
            "loop_stalls_over_100ms": stats.loop_stalls,
            "gc_full_max_ms": stats.gc_full_max_ms,
            "gc_young_max_ms": stats.gc_young_max_ms,
        },
    }
    if gateway:
        summary["gateway"] = {
            "rss_mib_max": max(s["rss_mib"] for s in gateway),
            "rss_mib_last": gateway[-1]["rss_mib"],
            "threads_max": max(s["threads"] for s in gateway),
            "threads_last": gateway[-1]["threads"],
            "cpu_percent_mean": sum(s["cpu_percent"] for s in gateway[1:])
            / max(1, len(gateway) - 1),
        }
        # Samples are on the monotonic clock, boots on the wall clock (merged across worker processes).
        wall_offset = time.time() - time.monotonic()
        after = [s["cpu_percent"] for s in gateway[1:] if s["t"] + wall_offset > stats.last_boot]
        if stats.booted == args.cps and after:
            summary["gateway"]["cpu_percent_after_boot"] = sum(after) / len(after)
    return summary


def render(summary: dict[str, Any]) -> str:
    def ms(d: dict[str, float | None]) -> str:
        return " / ".join(
            "-" if d[k] is None else f"{d[k]:.1f}" for k in ("p50", "p95", "p99", "max")
        )

    rate = summary["connect_rate_per_s"]
    extra: list[tuple[str, str]] = []
    if summary.get("window"):
        w = summary["window"]
        cpu = w["cpu_us_per_msg"]
        extra.append(
            (
                "measured window: gateway CPU us per forwarded msg",
                f"{'-' if cpu is None else format(cpu, '.1f')} ({w['forwarded']} msgs in {w['seconds']:.1f} s)",
            )
        )
    if summary.get("late"):
        late = summary["late"]
        extra.append(
            (
                "late group booted / boots per s / connects per s",
                f"{late['booted']} of {late['cps']} / "
                + " / ".join(
                    "-" if r is None else f"{r:.0f}"
                    for r in (late["boot_rate_per_s"], late["connect_rate_per_s"])
                ),
            )
        )
    rows = [
        (
            "connections attempted / established",
            f"{summary['attempted']} / {summary['established']}",
        ),
        ("refused / dropped", f"{summary['refused']} / {summary['dropped']}"),
        ("booted (Accepted)", str(summary["booted"])),
        ("connect rate achieved", "-" if rate is None else f"{rate:.0f}/s"),
        (
            "all booted after",
            "-"
            if summary["all_booted_after_s"] is None
            else f"{summary['all_booted_after_s']:.1f} s",
        ),
        ("boot RTT ms p50 / p95 / p99 / max", ms(summary["boot_rtt_ms"])),
        ("steady RTT ms p50 / p95 / p99 / max", ms(summary["steady_rtt_ms"])),
        ("  after all booted", ms(summary["steady_after_boot_rtt_ms"])),
        ("CALLs sent / answered", f"{summary['sent']} / {summary['answered']}"),
        (
            "msgs/s CP->CPO / CPO->CP",
            f"{summary['msgs_per_s_cp_to_cpo']:.1f} / {summary['msgs_per_s_cpo_to_cp']:.1f}",
        ),
        ("errors", ", ".join(f"{k}: {v}" for k, v in summary["errors"].items()) or "none"),
        (
            "generator loop lag max / stalls >100 ms / full, young GC max",
            "{loop_lag_max_ms:.0f} ms / {loop_stalls_over_100ms} / {gc_full_max_ms:.0f}, {gc_young_max_ms:.0f} ms".format(
                **summary["generator"]
            ),
        ),
    ]
    if "gateway" in summary:
        g = summary["gateway"]
        rows += [
            ("gateway RSS MiB max / last", f"{g['rss_mib_max']:.1f} / {g['rss_mib_last']:.1f}"),
            ("gateway threads max / last", f"{g['threads_max']} / {g['threads_last']}"),
            (
                "gateway CPU % of one core (mean)",
                f"{g['cpu_percent_mean']:.1f}"
                + (
                    f" (after all booted: {g['cpu_percent_after_boot']:.1f})"
                    if "cpu_percent_after_boot" in g
                    else ""
                ),
            ),
        ]
    rows += extra
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


async def run_all(
    args: argparse.Namespace, ids: list[str]
) -> tuple[Stats, float, list[dict[str, float]], Window | None]:
    sampler = ProcSampler(args.gateway_pid) if args.gateway_pid else None
    stats = Stats()
    started = time.monotonic()
    origin = trio.current_time() + 0.2  # the workers' start, as they compute it
    edges: list[tuple[float, float]] = []
    async with trio.open_nursery() as nursery:
        if args.gateway_pid and args.measure_for > 0:

            async def measure() -> None:
                for at in (args.measure_from, args.measure_from + args.measure_for):
                    await trio.sleep_until(origin + at)
                    cpu = cpu_seconds(args.gateway_pid)
                    if cpu is None:
                        return
                    edges.append((time.time(), cpu))

            nursery.start_soon(measure)
        if sampler is not None:

            async def sample() -> None:
                while True:
                    sampler.sample()
                    await trio.sleep(1.0)

            nursery.start_soon(sample)
        if args.processes <= 1:
            stats = await worker(args, ids, 0, 1, progress=not args.quiet)
        else:
            results = await _run_workers(args, ids)
            for result in results:
                stats.merge(result)
        nursery.cancel_scope.cancel()
    if not args.quiet:
        sys.stderr.write("\n")
    window = (edges[0], edges[1]) if len(edges) == 2 else None
    return stats, time.monotonic() - started, sampler.samples if sampler else [], window


async def _run_workers(args: argparse.Namespace, ids: list[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []

    async def one(index: int) -> None:
        command = [
            sys.executable,
            __file__,
            *sys.argv[1:],
            "--worker",
            f"{index}/{args.processes}",
            "--quiet",
        ]
        done = await trio.run_process(command, capture_stdout=True, check=False)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"worker {index} failed with status {done.returncode}")
        results.append(json.loads(done.stdout))

    async with trio.open_nursery() as nursery:
        for index in range(args.processes):
            nursery.start_soon(one, index)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/loadtest.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--url", required=True, help="gateway URL, ws:// or wss://")
    p.add_argument("--cps", type=int, required=True, help="number of simulated charge points")
    p.add_argument("--prefix", default="LT", help="charge point ids are <prefix><n>")
    p.add_argument(
        "--register",
        action="store_true",
        help="create the Things first through --api-url (fakeiot)",
    )
    p.add_argument("--api-url", default="http://127.0.0.1:8090", help="fakeiot API for --register")
    p.add_argument("--processes", type=int, default=1, help="worker processes (use more cores)")
    p.add_argument(
        "--rate", type=float, default=200.0, help="connects per second for the whole run"
    )
    p.add_argument(
        "--interval", type=float, default=30.0, help="seconds between a CP's messages after boot"
    )
    p.add_argument(
        "--duration", type=float, default=60.0, help="seconds from start until the CPs disconnect"
    )
    p.add_argument(
        "--mix", default="heartbeat", help="message mix, e.g. heartbeat=2,status=1,meter=1"
    )
    p.add_argument("--ocpp", choices=["2.0.1", "1.6"], default="2.0.1")
    p.add_argument("--ca-file", help="CA bundle for wss://")
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--call-timeout", type=float, default=30.0)
    p.add_argument(
        "--boot-delay",
        type=float,
        default=0.0,
        help="seconds each CP waits after its WebSocket opens before its BootNotification",
    )
    p.add_argument(
        "--late-cps",
        type=int,
        default=0,
        help="a second group of CPs (ids after the first --cps) that connect at --rate from --late-at "
        "s, boot and hold: the connect rate while the first group loads the gateway",
    )
    p.add_argument("--late-at", type=float, default=0.0, help="seconds after the start")
    p.add_argument(
        "--measure-from",
        type=float,
        default=0.0,
        help="start of the measured window (s after the start): gateway CPU per forwarded message",
    )
    p.add_argument(
        "--measure-for",
        type=float,
        default=0.0,
        help="length of the measured window in s (0: none; needs --gateway-pid)",
    )
    p.add_argument("--gateway-pid", type=int, help="sample this process's RSS, threads and CPU")
    p.add_argument("--json", help="write the figures to this file ('-': stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (
        args.cps < 1
        or args.rate <= 0
        or args.interval <= 0
        or args.duration <= 0
        or args.processes < 1
    ):
        p.error("--cps, --rate, --interval, --duration and --processes must be positive")
    if args.boot_delay < 0 or args.late_cps < 0 or args.late_at < 0:
        p.error("--boot-delay, --late-cps and --late-at must not be negative")
    if args.measure_from < 0 or args.measure_for < 0:
        p.error("--measure-from and --measure-for must not be negative")
    try:
        parse_mix(args.mix)
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    ids = [f"{args.prefix}{n}" for n in range(args.cps)]

    if args.worker:  # a worker process: its share of the CPs, raw figures as JSON on stdout
        index, workers = (int(x) for x in args.worker.split("/"))
        stats = trio.run(worker, args, ids[index::workers], index, workers, False)
        json.dump(stats.as_dict(), sys.stdout)
        return 0

    if args.register:
        register(args, ids + [f"{args.prefix}{args.cps + k}" for k in range(args.late_cps)])
    started = time.time()
    stats, wall, gateway, window = trio.run(run_all, args, ids)
    summary = summarize(stats, args, wall, gateway, started, window)
    print(render(summary))
    if args.json:
        text = json.dumps(summary, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    late_ok = not args.late_cps or summary["late"]["booted"] == args.late_cps
    ok = (
        late_ok
        and summary["booted"] == args.cps
        and summary["unanswered"] == 0
        and not summary["errors"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except subprocess.SubprocessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
