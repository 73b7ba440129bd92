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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_doc import markdown  # noqa: E402
from bench_figures import OURS, OURS_NO_METRICS, OURS_TLS, medians, merge_results  # noqa: E402
from bench_legacy import throughput_runs  # noqa: E402
from bench_peer import PeerError, parse_peer  # noqa: E402
from bench_plan import CONNECT_RATE, PREFIX, Plan, Variant  # noqa: E402
from bench_runs import run_plan  # noqa: E402
from bench_stack import MOSQUITTO, Stack  # noqa: E402


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
