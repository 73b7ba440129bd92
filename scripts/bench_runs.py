"""scripts/bench.py's runs: one gateway per run (ours or a peer), the load test against it, and
the whole plan in turn (:func:`run_plan`); each run's figures as a dict for benchmarks.json."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_figures import OURS, scale_figures, storm_figures, throughput_figures
from bench_peer import run_peer
from bench_plan import CONNECT_RATE, PREFIX, SCRAPE_INTERVAL, Plan, Variant
from bench_scrape import Samples, Scraper, gateway_counts, scrape_cpu_ms
from bench_scrape import loop_figures as scraped_loop
from bench_stack import Stack, run_loadtest
from bench_stack import loop_figures as log_loop_figures
from cost_per_cp import free_port, proc_stats


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
