#!/usr/bin/env python3
"""Benchmarks of the gateway beside peer gateways, and docs/benchmarks.md regenerated from them.

    python scripts/bench.py --peer aws-sample='CMD {port} {mqtt_host} {mqtt_port} {ids_file}' \\
        --broker-tls --markdown docs/benchmarks.md                  # the full plan (the estimate is printed)
    python scripts/bench.py --quick --peer ... --markdown /tmp/quick.md   # a few minutes, small sizes
    python scripts/bench.py --render docs/benchmarks.json --markdown docs/benchmarks.md

Starts, on free 127.0.0.1 ports: fakeiot (registry and shadows), Mosquitto (``set_tcp_nodelay true``;
with ``--broker-tls`` also a TLS listener with fakeiot's development certificates), the message
processor, and ONE gateway process per run: ours, or a peer (``--peer NAME=COMMAND``, see
scripts/bench_peer.py).  The load comes from ``scripts/loadtest.py`` (a separate process), the same
for every gateway: each CP waits ``--boot-delay`` s after its WebSocket opens before booting.

The plan, every gateway in turn (ours, peer, ours, peer ...) ``--repeat`` times, medians reported:

1. scale: N CPs held (``--scale``), booted, heartbeating every 30 s: idle RSS, RSS max and per CP,
   threads, CPU after all booted, heartbeat round trips after all booted;
2. storm: ``--storm`` CPs connecting at once: all booted after, boot round trips, unanswered boots;
3. throughput: ``--throughput-cps`` CPs at each offered load (``--loads`` msgs/s): gateway CPU µs per
   forwarded message in a measured window, achieved rates and round trips; then a second group of
   CPs connects at 500/s while the first keeps loading the gateway (the connect rate while loaded);
4. metrics: ours with and without ``--metrics-port`` (scraped every 5 s), ``--metrics-pairs`` pairs
   alternating which goes first, at ``--metrics-load`` msgs/s, a load the machine carries: the
   metrics endpoint's cost in CPU per message (issue 16's target: under 5 %).

``--only PARTS --update`` reruns some parts and keeps the other parts' figures from the
benchmarks.json beside ``--markdown`` (the document says which part ran when).

``--broker-tls`` adds our gateway over TLS to the broker to the scale and throughput plans (peers
keep the plain listener).  ``--baseline`` adds the bare-MQTT baseline (``--brokers`` mosquitto, amqtt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_doc import markdown  # noqa: E402
from bench_figures import (  # noqa: E402
    OURS,
    OURS_NO_METRICS,
    OURS_TLS,
    medians,
    scale_figures,
    storm_figures,
    throughput_figures,
)
from bench_legacy import throughput_runs  # noqa: E402
from bench_peer import PeerError, parse_peer, run_peer  # noqa: E402
from bench_plan import CONNECT_RATE, PREFIX, SCRAPE_INTERVAL, Plan, Variant  # noqa: E402
from bench_scrape import Samples, Scraper, gateway_counts, scrape_cpu_ms  # noqa: E402
from bench_scrape import loop_figures as scraped_loop  # noqa: E402
from bench_stack import MOSQUITTO, Stack, run_loadtest  # noqa: E402
from bench_stack import loop_figures as log_loop_figures  # noqa: E402
from cost_per_cp import free_port, proc_stats  # noqa: E402


@contextmanager
def serve(
    variant: Variant, stack: Stack, ids_file: Path, output: list[str], metrics_port: int | None
) -> Iterator[tuple[str, int]]:
    """The variant's gateway, ready and idle for 1 s: yields (url, pid)."""
    if variant.peer is None:
        with stack.gateway(output, tls=variant.tls, metrics_port=metrics_port) as served:
            yield served
        return
    port = free_port()
    with run_peer(
        variant.peer,
        port=port,
        mqtt_host="127.0.0.1",
        mqtt_port=stack.mqtt_port,
        ids_file=ids_file,
        output=output,
    ) as pid:
        time.sleep(1.0)  # as for ours: idle figures after the same settling time
        yield f"ws://127.0.0.1:{port}", pid


def one_run(
    variant: Variant,
    stack: Stack,
    ids_file: Path,
    plan_name: str,
    size: int,
    loadtest_args: list[str],
) -> dict[str, Any]:
    output: list[str] = []
    print(f"== {plan_name} {size:,} · {variant.name}", flush=True)
    metrics_port = free_port() if variant.peer is None and variant.metrics else None
    scraped: Samples | None = None
    scraper = None
    with serve(variant, stack, ids_file, output, metrics_port) as (url, pid):
        idle = proc_stats(pid)
        per_scrape = None
        if metrics_port is not None and plan_name in ("throughput", "metrics"):
            per_scrape = scrape_cpu_ms(metrics_port, lambda: proc_stats(pid)[2])
        if metrics_port is not None:
            scraper = Scraper(metrics_port, SCRAPE_INTERVAL).__enter__()
        try:
            summary = run_loadtest(["--url", url, "--gateway-pid", str(pid), *loadtest_args])
        finally:
            if scraper is not None:
                scraped = scraper.stop()  # the last scrape, after the load test ended
    if plan_name == "scale":
        figures = scale_figures(summary, idle[0], idle[1])
    elif plan_name == "storm":
        figures = storm_figures(summary)
    else:
        figures = throughput_figures(summary)
    figures["idle_rss_mib"] = idle[0]
    if per_scrape is not None:
        figures["scrape_cpu_ms"] = per_scrape
    return {
        "plan": plan_name,
        "size": size,
        "gateway": variant.name,
        "tls": variant.tls,
        "figures": figures,
        # Ours: read from /metrics (the stop summary in its log where metrics are off).
        "loop": None
        if variant.peer is not None
        else (scraped_loop(scraped) if scraped is not None else log_loop_figures(output)),
        "gateway_counts": None if scraped is None else gateway_counts(scraped),
        "scrapes": None if scraper is None else scraper.summary(),
        "errors": summary.get("errors", {}),
        "loadtest": summary,
    }


def run_plan(
    plan: Plan,
    stack: Stack,
    ids_file: Path,
    variants: list[Variant],
    tls_variant: Variant | None,
    results: dict[str, Any],
    quiet_variant: Variant | None = None,
) -> None:
    """Every part of ``plan``; ``quiet_variant`` (ours without metrics) runs in the metrics part."""
    runs: list[dict[str, Any]] = results.setdefault("runs", [])
    common = ["--prefix", PREFIX, "--boot-delay", f"{plan.boot_delay:g}"]
    with_tls = variants + ([tls_variant] if tls_variant else [])

    def rotate(name: str, size: int, group: list[Variant], args: list[str]) -> None:
        for r in range(plan.repeat):
            for variant in group:
                run = one_run(variant, stack, ids_file, name, size, common + args)
                run["repeat"] = r
                runs.append(run)

    if "scale" in plan.parts:
        for n in plan.sizes:
            rotate(
                "scale",
                n,
                with_tls,
                [
                    "--cps",
                    str(n),
                    "--rate",
                    f"{plan.ramp:g}",
                    "--interval",
                    "30",
                    "--duration",
                    f"{plan.scale_seconds(n):g}",
                    "--connect-timeout",
                    "120",
                ],
            )
    if "storm" in plan.parts and plan.storm:
        rotate(
            "storm",
            plan.storm,
            variants,
            [
                "--cps",
                str(plan.storm),
                "--rate",
                "100000",
                "--interval",
                "30",
                "--duration",
                f"{plan.storm_hold:g}",
                "--connect-timeout",
                "120",
                "--call-timeout",
                "60",
            ],
        )
    if "throughput" in plan.parts:
        measure_from, late_at, duration = plan.throughput_timeline()
        for load in plan.loads:
            rotate(
                "throughput",
                load,
                with_tls,
                [
                    "--cps",
                    str(plan.throughput_cps),
                    "--rate",
                    f"{CONNECT_RATE:g}",
                    "--interval",
                    f"{plan.throughput_cps / load:g}",
                    "--duration",
                    f"{duration:g}",
                    "--measure-from",
                    f"{measure_from:g}",
                    "--measure-for",
                    f"{plan.window:g}",
                    "--late-cps",
                    str(plan.late_cps),
                    "--late-at",
                    f"{late_at:g}",
                ],
            )
    if "metrics" in plan.parts and quiet_variant is not None:
        measure_from, duration = plan.metrics_timeline()
        args = [
            "--cps",
            str(plan.metrics_cps),
            "--rate",
            f"{CONNECT_RATE:g}",
            "--interval",
            f"{plan.metrics_cps / plan.metrics_load:g}",
            "--duration",
            f"{duration:g}",
            "--measure-from",
            f"{measure_from:g}",
            "--measure-for",
            f"{plan.window:g}",
        ]
        on = next(v for v in variants if v.name == OURS)
        for pair in range(plan.metrics_pairs):
            # Which goes first alternates, so a drift of the machine over the part favours neither.
            for variant in (on, quiet_variant) if pair % 2 == 0 else (quiet_variant, on):
                run = one_run(variant, stack, ids_file, "metrics", plan.metrics_load, common + args)
                run["repeat"] = pair
                runs.append(run)


PART_KEYS = {  # the keys of results["plan"] that describe each part's runs
    "scale": ("scale", "hold_s", "ramp"),
    "storm": ("storm", "storm_hold_s"),
    "throughput": ("throughput_cps", "loads", "window_s", "late_cps"),
    "metrics": ("metrics_load", "metrics_cps", "metrics_pairs", "window_s"),
}


def _plan_keys(parts: set[str]) -> set[str]:
    return {key for part in parts for key in PART_KEYS.get(part, ())}


def merge_results(saved: dict[str, Any], new: dict[str, Any], parts: set[str]) -> dict[str, Any]:
    """``saved`` with its runs of ``parts`` replaced by ``new``'s (``--update``).

    The document keeps the saved run's command and date and lists each part rerun since, with its
    command and date (``reruns``); the gateways' descriptions and the plan's keys are merged.
    """
    if saved.get("format") != new.get("format"):
        return new  # figures of an older layout: nothing to keep
    merged = dict(saved)
    merged["runs"] = [r for r in saved.get("runs", []) if r["plan"] not in parts] + new.get(
        "runs", []
    )
    merged["gateways"] = saved.get("gateways", {}) | new.get("gateways", {})
    merged["plan"] = saved.get("plan", {}) | {
        k: v for k, v in new.get("plan", {}).items() if k in _plan_keys(parts)
    }
    kept = [r for r in saved.get("reruns", []) if not set(r["parts"]) <= parts]
    merged["reruns"] = kept + [
        {
            "parts": sorted(parts),
            "command": new["command"],
            "generated_at": new["generated_at"],
            "duration_s": new["duration_s"],
        }
    ]
    return merged


def main() -> int:
    p = argparse.ArgumentParser(
        prog="scripts/bench.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    p.add_argument(
        "--quick", action="store_true", help="small sizes and short holds (a few minutes)"
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="a peer gateway run beside ours (repeatable); COMMAND may use {port} {mqtt_host} "
        "{mqtt_port} {ids_file}",
    )
    p.add_argument("--repeat", type=int, default=2, help="runs per gateway and size (medians)")
    p.add_argument("--scale", default="1000,3000,5000", help="CP counts held by one gateway")
    p.add_argument("--hold", type=float, default=60.0, help="seconds each scale run holds its CPs")
    p.add_argument(
        "--ramp",
        type=float,
        default=200.0,
        help="connects/s of the scale runs (a ramp faster than the machine sustains only queues connects)",
    )
    p.add_argument("--storm", type=int, default=2000, help="CPs in the reconnect storm (0: skip)")
    p.add_argument("--storm-hold", type=float, default=30.0, help="seconds a storm run lasts")
    p.add_argument("--throughput-cps", type=int, default=500)
    p.add_argument("--loads", default="1000,2500", help="offered OCPP messages per second")
    p.add_argument(
        "--throughput-duration",
        type=float,
        default=30.0,
        help="seconds of the measured window of each throughput run",
    )
    p.add_argument(
        "--late-cps",
        type=int,
        default=500,
        help="CPs connecting at 500/s after the measured window, while the load goes on",
    )
    p.add_argument(
        "--boot-delay",
        type=float,
        default=0.5,
        help="seconds each CP waits after its WebSocket opens before booting (every gateway alike)",
    )
    p.add_argument(
        "--broker-tls",
        action="store_true",
        help="also run our gateway over TLS to the broker (scale and throughput)",
    )
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also the bare-MQTT baseline against our gateway on --brokers (the older document part)",
    )
    p.add_argument(
        "--brokers", default="mosquitto", help="brokers for --baseline (mosquitto,amqtt)"
    )
    p.add_argument(
        "--no-metrics-overhead",
        action="store_true",
        help="skip the metrics part (our gateway with its metrics endpoint on and off)",
    )
    p.add_argument(
        "--metrics-load",
        type=int,
        default=500,
        help="offered msgs/s of the metrics part (a load this machine carries: not saturated)",
    )
    p.add_argument("--metrics-cps", type=int, default=250, help="CPs of the metrics part")
    p.add_argument(
        "--metrics-pairs",
        type=int,
        default=4,
        help="runs with metrics and without, each, in the metrics part (alternating)",
    )
    p.add_argument(
        "--only", default="scale,storm,throughput,metrics", help="parts of the plan to run"
    )
    p.add_argument("--markdown", help="write the document here (and benchmarks.json beside it)")
    p.add_argument(
        "--update",
        action="store_true",
        help="keep the figures of the parts not in --only from the benchmarks.json beside --markdown",
    )
    p.add_argument(
        "--render",
        metavar="JSON",
        help="only rewrite --markdown from figures saved by an earlier run",
    )
    args = p.parse_args()
    if args.render:
        if not args.markdown:
            p.error("--render needs --markdown")
        saved = json.loads(Path(args.render).read_text())
        Path(args.markdown).write_text(
            markdown(saved, saved.get("command", "python scripts/bench.py"))
        )
        print(f"wrote {args.markdown} from {args.render}")
        return 0
    try:
        peers = [parse_peer(text) for text in args.peer]
    except PeerError as exc:
        p.error(str(exc))
    if len({peer.name for peer in peers}) != len(peers):
        p.error("--peer names must differ")
    if not MOSQUITTO:
        p.error("mosquitto is not installed (the scale, storm and throughput plans run on it)")
    if args.quick:
        args.scale, args.hold, args.storm, args.storm_hold = "200,500", 35.0, 500, 25.0
        args.loads, args.throughput_duration, args.throughput_cps = "500,1000", 10.0, 200
        args.late_cps, args.repeat = 200, 1
        args.metrics_load, args.metrics_cps, args.metrics_pairs = 200, 100, 1
    try:
        plan = Plan(
            sizes=[int(x) for x in args.scale.split(",")],
            hold=args.hold,
            ramp=args.ramp,
            storm=args.storm,
            storm_hold=args.storm_hold,
            throughput_cps=args.throughput_cps,
            loads=[int(x) for x in args.loads.split(",")],
            window=args.throughput_duration,
            late_cps=args.late_cps,
            boot_delay=args.boot_delay,
            repeat=args.repeat,
            parts=set(args.only.split(",")),
            metrics_load=args.metrics_load,
            metrics_cps=args.metrics_cps,
            metrics_pairs=args.metrics_pairs,
        )
    except ValueError as exc:
        p.error(f"--scale and --loads take comma-separated integers: {exc}")
    if (
        min([plan.repeat, plan.metrics_load, plan.metrics_cps, plan.metrics_pairs]) < 1
        or min(plan.sizes + plan.loads) < 1
        or plan.window <= 0
    ):
        p.error(
            "--repeat, --scale, --loads, --throughput-duration and --metrics-* must be positive"
        )
    if args.update and not args.markdown:
        p.error("--update needs --markdown (its benchmarks.json holds the figures kept)")
    if unknown := plan.parts - {"scale", "storm", "throughput", "metrics"}:
        p.error(f"--only: unknown parts {', '.join(sorted(unknown))}")
    largest = max(plan.sizes + [plan.storm, plan.throughput_cps + plan.late_cps, plan.metrics_cps])
    if 2 * largest + 100 > fd_limit:
        print(
            f"warning: the open files limit ({fd_limit}) is below two sockets per CP for {largest:,} CPs",
            flush=True,
        )
    variants = [Variant(OURS)] + [Variant(peer.name, peer=peer) for peer in peers]
    tls_variant = Variant(OURS_TLS, tls=True) if args.broker_tls else None
    quiet = None if args.no_metrics_overhead else Variant(OURS_NO_METRICS, metrics=False)
    estimate = plan.estimate_s(len(variants) + bool(tls_variant), len(variants), bool(quiet))
    print(
        f"plan: {', '.join(v.name for v in variants + ([tls_variant] if tls_variant else []))}; "
        f"estimated {estimate / 60:.0f} min"
        + (" (plus the --baseline runs)" if args.baseline else ""),
        flush=True,
    )
    results: dict[str, Any] = {
        "format": 2,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, open files limit {fd_limit}",
        "gateways": {OURS: "this repository's gateway (plain TCP to the broker)"}
        | (
            {OURS_TLS: "this repository's gateway, TLS 1.2 to the broker with a client certificate"}
            if tls_variant
            else {}
        )
        | (
            {
                OURS_NO_METRICS: "this repository's gateway without --metrics-port "
                "(the metrics part only: the metrics' cost)"
            }
            if quiet
            else {}
        )
        | {peer.name: peer.command for peer in peers},
        "plan": {
            "scale": plan.sizes,
            "hold_s": plan.hold,
            "ramp": plan.ramp,
            "storm": plan.storm,
            "storm_hold_s": plan.storm_hold,
            "throughput_cps": plan.throughput_cps,
            "loads": plan.loads,
            "window_s": plan.window,
            "late_cps": plan.late_cps,
            "connect_rate": CONNECT_RATE,
            "boot_delay_s": plan.boot_delay,
            "repeat": plan.repeat,
            "metrics_load": plan.metrics_load,
            "metrics_cps": plan.metrics_cps,
            "metrics_pairs": plan.metrics_pairs,
        },
    }
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with Stack("mosquitto", Path(tmp), tls=bool(tls_variant)) as stack:
                count = largest
                stack.register(PREFIX, count)
                ids_file = Path(tmp) / "ids.txt"
                ids_file.write_text("".join(f"{PREFIX}{i}\n" for i in range(count)))
                run_plan(plan, stack, ids_file, variants, tls_variant, results, quiet)
                if args.baseline and "mosquitto" in args.brokers.split(","):
                    throughput_runs(stack, plan.throughput_cps, plan.loads, plan.window, results)
            results["processor_loop"] = {"mosquitto": stack.processor_loop}
            if args.baseline and "amqtt" in args.brokers.split(","):
                with Stack("amqtt", Path(tmp)) as amqtt:
                    amqtt.register(PREFIX, plan.throughput_cps)
                    throughput_runs(amqtt, plan.throughput_cps, plan.loads, plan.window, results)
                results["processor_loop"]["amqtt"] = amqtt.processor_loop
    except PeerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results["duration_s"] = duration = time.monotonic() - started
    command = ("python scripts/bench.py " + shlex.join(sys.argv[1:])).strip()
    results["command"] = command
    results["generated_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.update:
        saved_file = Path(args.markdown).with_name("benchmarks.json")
        if saved_file.exists():
            results = merge_results(json.loads(saved_file.read_text()), results, plan.parts)
    results["medians"] = medians(results.get("runs", []))
    print(f"done in {duration / 60:.1f} min (estimated {estimate / 60:.0f})")
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, results["command"]))
        Path(args.markdown).with_name("benchmarks.json").write_text(
            json.dumps(results, indent=1) + "\n"
        )
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
