"""Pure arithmetic for scripts/bench.py: each run's figures, medians over repeats, the targets table.

No I/O here: the functions take the load test's JSON summaries (scripts/loadtest.py) and return dicts,
so tests can feed them numbers directly.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

OURS = "ours"
OURS_TLS = "ours-tls"
OURS_NO_METRICS = "ours-no-metrics"  # throughput runs with the metrics endpoint off
CONFIGURED_CONNECT_RATE = 500.0


def _get(d: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def scale_figures(
    summary: dict[str, Any], idle_rss_mib: float, idle_threads: int
) -> dict[str, Any]:
    """One scale run: memory, threads, CPU and heartbeat round trips after all booted."""
    rss_max = _get(summary, "gateway", "rss_mib_max")
    booted = summary["booted"]
    return {
        "cps": summary["cps"],
        "idle_rss_mib": idle_rss_mib,
        "idle_threads": idle_threads,
        "rss_max_mib": rss_max,
        "rss_per_cp_kib": None
        if rss_max is None
        else (rss_max - idle_rss_mib) * 1024 / max(1, booted),
        "threads_max": _get(summary, "gateway", "threads_max"),
        "cpu_percent_after_boot": _get(summary, "gateway", "cpu_percent_after_boot"),
        "hb_p50_ms": _get(summary, "steady_after_boot_rtt_ms", "p50"),
        "hb_p99_ms": _get(summary, "steady_after_boot_rtt_ms", "p99"),
        "all_booted_after_s": summary.get("all_booted_after_s"),
        "booted": booted,
        "refused": summary["refused"],
        "dropped": summary["dropped"],
        "unanswered": summary["unanswered"],
    }


def throughput_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """One closed-loop run: CPU per forwarded message in the measured window, and the late group's rate."""
    window = summary.get("window") or {}
    late = summary.get("late") or {}
    return {
        "cpu_us_per_msg": window.get("cpu_us_per_msg"),
        "cpu_percent": window.get("gateway_cpu_percent"),
        "msgs_per_s_cp_to_cpo": window.get("msgs_per_s_cp_to_cpo"),
        "msgs_per_s_cpo_to_cp": window.get("msgs_per_s_cpo_to_cp"),
        "rtt_p50_ms": _get(window, "rtt_ms", "p50"),
        "rtt_p99_ms": _get(window, "rtt_ms", "p99"),
        "rss_max_mib": _get(summary, "gateway", "rss_mib_max"),
        "connect_rate_loaded": late.get("boot_rate_per_s"),
        "late_booted": late.get("booted"),
        "late_cps": late.get("cps"),
        "booted": summary["booted"],
        "refused": summary["refused"],
        "dropped": summary["dropped"],
        "unanswered": summary["unanswered"],
    }


def storm_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """One storm: every CP connecting at once."""
    return {
        "cps": summary["cps"],
        "all_booted_after_s": summary.get("all_booted_after_s"),
        "boot_p50_ms": _get(summary, "boot_rtt_ms", "p50"),
        "boot_p99_ms": _get(summary, "boot_rtt_ms", "p99"),
        "boot_unanswered": summary.get("boot_unanswered", 0),
        "booted": summary["booted"],
        "refused": summary["refused"],
        "dropped": summary["dropped"],
        "unanswered": summary["unanswered"],
    }


def median_of(values: Iterable[Any]) -> Any:
    """The median of the numbers among ``values`` (None when there are none)."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return statistics.median(numbers) if numbers else None


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """{plan: {size: {gateway: {figure: median over the repeats}}}}; counts of failures are summed."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["plan"], str(run["size"]), run["gateway"]), []).append(
            run["figures"]
        )
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for (plan, size, gateway), figures in grouped.items():
        keys = dict.fromkeys(k for f in figures for k in f)
        merged = {
            k: (
                sum(f.get(k) or 0 for f in figures)
                if k in ("refused", "dropped", "unanswered", "boot_unanswered")
                else median_of(f.get(k) for f in figures)
            )
            for k in keys
        }
        merged["repeats"] = len(figures)
        out.setdefault(plan, {}).setdefault(size, {})[gateway] = merged
    return out


def ratio(ours: Any, peer: Any) -> float | None:
    """ours / peer, None when either is missing or the peer's is zero."""
    if not isinstance(ours, int | float) or not isinstance(peer, int | float) or not peer:
        return None
    return float(ours) / float(peer)


def _sizes(table: dict[str, Any], plan: str) -> list[str]:
    return sorted(table.get(plan, {}), key=float)


def targets(
    table: dict[str, dict[str, dict[str, dict[str, Any]]]], peer: str
) -> list[dict[str, Any]]:
    """The issue's targets, ours against ``peer``: each row has the figures, the ratio and met/missed.

    A row is {"target", "ours", "peer", "ratio", "limit", "met"}; ``limit`` bounds the ratio (ratio rows)
    or is None (rows judged on ours alone); ``met`` is None when a figure is missing."""
    rows: list[dict[str, Any]] = []

    def compare(target: str, plan: str, size: str, key: str, limit: float) -> None:
        cell = table.get(plan, {}).get(size, {})
        ours, theirs = _get(cell, OURS, key), _get(cell, peer, key)
        r = ratio(ours, theirs)
        rows.append(
            {
                "target": target,
                "ours": ours,
                "peer": theirs,
                "ratio": r,
                "limit": limit,
                "met": None if r is None else r <= limit,
            }
        )

    scale = _sizes(table, "scale")
    if scale:
        largest = scale[-1]
        compare(
            f"RSS per CP at {int(largest):,} CPs ≤ 0.5× peer (KiB)",
            "scale",
            largest,
            "rss_per_cp_kib",
            0.5,
        )
        idle = {
            g: median_of(_get(table["scale"][s], g, "idle_rss_mib") for s in scale)
            for g in (OURS, peer)
        }
        r = ratio(idle[OURS], idle[peer])
        rows.append(
            {
                "target": "idle RSS before any CP ≤ peer (MiB)",
                "ours": idle[OURS],
                "peer": idle[peer],
                "ratio": r,
                "limit": 1.0,
                "met": None if r is None else r <= 1.0,
            }
        )
        compare(
            f"heartbeat p99 at {int(largest):,} CPs after all booted ≤ peer (ms)",
            "scale",
            largest,
            "hb_p99_ms",
            1.0,
        )
    loads = _sizes(table, "throughput")
    for load in loads:
        compare(
            f"CPU µs per forwarded message at {int(load):,} msgs/s ≤ 0.6× peer",
            "throughput",
            load,
            "cpu_us_per_msg",
            0.6,
        )
    if loads:
        compare(
            f"RTT p50 at {int(loads[-1]):,} msgs/s ≤ peer (ms)",
            "throughput",
            loads[-1],
            "rtt_p50_ms",
            1.0,
        )
    for size in _sizes(table, "storm"):
        compare(
            f"storm ({int(size):,} CPs at once): all booted after ≤ peer (s)",
            "storm",
            size,
            "all_booted_after_s",
            1.0,
        )
    lost = [cell[OURS] for plan in table.values() for cell in plan.values() if OURS in cell]
    if lost:
        total = sum(
            (f.get("refused") or 0) + (f.get("dropped") or 0) + (f.get("unanswered") or 0)
            for f in lost
        )
        rows.append(
            {
                "target": "ours: zero refused, dropped or unanswered (all runs)",
                "ours": total,
                "peer": None,
                "ratio": None,
                "limit": None,
                "met": total == 0,
            }
        )
    for load in loads:
        rate = _get(table["throughput"][load], OURS, "connect_rate_loaded")
        floor = 0.9 * CONFIGURED_CONNECT_RATE
        rows.append(
            {
                "target": f"ours: connect rate while loaded at {int(load):,} msgs/s ≥ 0.9 × {CONFIGURED_CONNECT_RATE:.0f}/s",
                "ours": rate,
                "peer": _get(table["throughput"][load], peer, "connect_rate_loaded"),
                "ratio": None,
                "limit": None,
                "met": None if rate is None else rate >= floor,
            }
        )
    return rows


METRICS_OVERHEAD_LIMIT = 0.05  # issue 16: the metrics endpoint costs under 5 %


def metrics_overhead(
    table: dict[str, dict[str, dict[str, dict[str, Any]]]],
    runs: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per offered load: ours with metrics (scraped) against ours without, from the medians.

    The metrics part's runs where there are any (a load the machine carries), else the throughput
    runs (figures saved before that part existed).  ``cpu_cost`` = CPU per message on / off − 1;
    ``rate_cost`` = 1 − achieved CP→CPO rate on / off (positive: the metrics cost that much);
    ``met`` when both are under the limit.  With ``runs``, ``paired`` holds each pair's CPU cost
    (a run with metrics against the run without it beside it), whose spread shows the noise."""
    plan = "metrics" if "metrics" in table else "throughput"
    rows = []
    for load in _sizes(table, plan):
        cell = table[plan][load]
        if OURS not in cell or OURS_NO_METRICS not in cell:
            continue
        on, off = cell[OURS], cell[OURS_NO_METRICS]
        cpu = ratio(on.get("cpu_us_per_msg"), off.get("cpu_us_per_msg"))
        rate = ratio(on.get("msgs_per_s_cp_to_cpo"), off.get("msgs_per_s_cp_to_cpo"))
        cpu_cost = None if cpu is None else cpu - 1
        rate_cost = None if rate is None else 1 - rate
        rows.append(
            {
                "plan": plan,
                "load": load,
                "cpu_on": on.get("cpu_us_per_msg"),
                "cpu_off": off.get("cpu_us_per_msg"),
                "cpu_cost": cpu_cost,
                "rate_on": on.get("msgs_per_s_cp_to_cpo"),
                "rate_off": off.get("msgs_per_s_cp_to_cpo"),
                "rate_cost": rate_cost,
                "rtt_on": on.get("rtt_p50_ms"),
                # The scrapes' own share of the gateway's CPU in the window (a scrape every 5 s).
                "scrape_cpu_ms": on.get("scrape_cpu_ms"),
                "scrape_share": None
                if not on.get("scrape_cpu_ms") or not on.get("cpu_percent")
                else on["scrape_cpu_ms"] / 1000 / 5.0 / (on["cpu_percent"] / 100),
                "rtt_off": off.get("rtt_p50_ms"),
                "paired": _paired_costs(runs or [], plan, load),
                "met": None
                if cpu_cost is None or rate_cost is None
                else cpu_cost < METRICS_OVERHEAD_LIMIT and rate_cost < METRICS_OVERHEAD_LIMIT,
            }
        )
    return rows


def _paired_costs(runs: list[dict[str, Any]], plan: str, load: str) -> list[float]:
    """CPU per message on / off − 1 of each repeat that has both runs, in repeat order."""
    by_repeat: dict[int, dict[str, float]] = {}
    for run in runs:
        value = run["figures"].get("cpu_us_per_msg")
        if run["plan"] == plan and str(run["size"]) == load and isinstance(value, int | float):
            by_repeat.setdefault(run.get("repeat", 0), {})[run["gateway"]] = float(value)
    return [
        pair[OURS] / pair[OURS_NO_METRICS] - 1
        for _, pair in sorted(by_repeat.items())
        if pair.get(OURS_NO_METRICS) and OURS in pair
    ]


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
