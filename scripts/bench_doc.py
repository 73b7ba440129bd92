"""docs/benchmarks.md from scripts/bench.py's figures: ours and each peer side by side, the targets table.

Every ratio and every met/missed comes from bench_figures; nothing here is typed by hand.
"""

from __future__ import annotations

from typing import Any

from bench_figures import (
    METRICS_OVERHEAD_LIMIT,
    OURS,
    OURS_NO_METRICS,
    OURS_TLS,
    median_of,
    medians,
    metrics_overhead,
    ratio,
    targets,
)
from bench_legacy import baseline_section, legacy_markdown


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pair(cell: dict[str, Any], a: str, b: str, digits: int = 1) -> str:
    return f"{_f(cell.get(a), digits)} / {_f(cell.get(b), digits)}"


def _lost(cell: dict[str, Any]) -> str:
    return f"{cell.get('refused', 0)} / {cell.get('dropped', 0)} / {cell.get('unanswered', 0)}"


def _gateways(results: dict[str, Any]) -> list[str]:
    return list(results.get("gateways", {}))


def _peers(results: dict[str, Any]) -> list[str]:
    return [g for g in _gateways(results) if g not in (OURS, OURS_TLS, OURS_NO_METRICS)]


def _section(
    title: str,
    intro: list[str],
    header: list[str],
    table: dict[str, dict[str, Any]],
    order: list[str],
    peers: list[str],
    row: Any,
    ratio_keys: list[str | None],
) -> list[str]:
    """One plan: per size, a row per gateway and a row of ratios ours / each peer."""
    lines = [f"## {title}", "", *intro, ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for size in sorted(table, key=float):
        cells = table[size]
        for gateway in order:
            if gateway in cells:
                lines.append(
                    "| "
                    + " | ".join(
                        [_f(int(size)), f"{gateway} ({cells[gateway]['repeats']}×)"]
                        + row(cells[gateway])
                    )
                    + " |"
                )
        for peer in peers:
            if OURS in cells and peer in cells:
                ratios = [
                    "" if key is None else _r(ratio(cells[OURS].get(key), cells[peer].get(key)))
                    for key in ratio_keys
                ]
                lines.append("| " + " | ".join([_f(int(size)), f"*ours / {peer}*"] + ratios) + " |")
    return lines + [""]


def _tls_section(table: dict[str, Any], peers: list[str]) -> list[str]:
    rows: list[tuple[str, dict[str, Any], str]] = []
    for size in sorted(table.get("scale", {}), key=float):
        rows.append((f"RSS per CP KiB, {int(size):,} CPs", table["scale"][size], "rss_per_cp_kib"))
    for load in sorted(table.get("throughput", {}), key=float):
        rows.append(
            (
                f"CPU µs per message, {int(load):,} msgs/s",
                table["throughput"][load],
                "cpu_us_per_msg",
            )
        )
        rows.append((f"RTT p50 ms, {int(load):,} msgs/s", table["throughput"][load], "rtt_p50_ms"))
    if not any(OURS_TLS in cells for _, cells, _ in rows):
        return []
    header = ["figure", "ours, plain TCP", "ours, TLS", "TLS / plain"]
    for peer in peers:
        header += [f"{peer} (plain TCP)", f"ours TLS / {peer}"]
    lines = [
        "## TLS to the broker",
        "",
        "Our gateway over TLS 1.2 to Mosquitto's TLS listener (fakeiot's development CA and server "
        "certificate, `require_certificate true`, the gateway presenting its client certificate: "
        "`--iot-endpoint 127.0.0.1:PORT --ca-file --cert-file --key-file`), as to AWS IoT Core. "
        "The peers run plain TCP in these runs: the AWS sample's runner (`run_peer.py`) forces plain TCP "
        "to the broker, so its figures here are its plain-TCP ones, which favours it.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, cells, key in rows:
        plain, tls = cells.get(OURS, {}).get(key), cells.get(OURS_TLS, {}).get(key)
        values = [name, _f(plain), _f(tls), _r(ratio(tls, plain))]
        for peer in peers:
            theirs = cells.get(peer, {}).get(key)
            values += [_f(theirs), _r(ratio(tls, theirs))]
        lines.append("| " + " | ".join(values) + " |")
    return lines + [""]


def _overhead_section(table: dict[str, Any], results: dict[str, Any]) -> list[str]:
    rows = metrics_overhead(table, results.get("runs", []))
    if not rows:
        return []
    plan = results.get("plan", {})
    if rows[0]["plan"] == "metrics":
        how = (
            f"in the metrics part: {_f(plan.get('metrics_cps'))} CPs at a load this machine carries "
            f"(offered msgs/s below), {_f(plan.get('metrics_pairs'))} runs of each, alternating which goes "
            f"first, measured in a window of {_f(plan.get('window_s'))} s after all booted. Below saturation "
            "both forward what is offered, so CPU per message is the figure that can differ"
        )
    else:
        how = "alternating, in the throughput runs (figures saved before the metrics part existed)"
    lines = [
        "## The metrics endpoint's cost",
        "",
        f"Our gateway runs with `--metrics-port` (**{OURS}**), `/metrics` scraped every 5 s during "
        f"the run, and without it (**{OURS_NO_METRICS}**), {how}. Our gateway's loop figures and "
        "counts above come from that endpoint. Target: the metrics cost under "
        f"{METRICS_OVERHEAD_LIMIT:.0%} of CPU per message and of achieved throughput.",
        "",
        "Each pair's CPU cost (a run with metrics against the run without them beside it) shows the "
        "noise of comparing two runs. The scrape's own cost is also measured directly (20 scrapes "
        "of the idle gateway, its CPU time before and after): CPU per scrape, and its share of the "
        "gateway's CPU in the window at one scrape every 5 s.",
        "",
        "| offered msgs/s | CPU µs per msg on / off | CPU cost | each pair's CPU cost "
        "| achieved CP→CPO msgs/s on / off | throughput cost | RTT p50 ms on / off "
        "| CPU ms per scrape (share) | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = "-" if row["met"] is None else ("met" if row["met"] else "**missed**")
        paired = ", ".join(_pct(c) for c in row["paired"]) or "-"
        lines.append(
            f"| {_f(int(row['load']))} | {_f(row['cpu_on'])} / {_f(row['cpu_off'])} "
            f"| {_pct(row['cpu_cost'])} | {paired} "
            f"| {_f(row['rate_on'], 0)} / {_f(row['rate_off'], 0)} "
            f"| {_pct(row['rate_cost'])} | {_f(row['rtt_on'])} / {_f(row['rtt_off'])} "
            f"| {_f(row.get('scrape_cpu_ms'), 2)} ({_share(row.get('scrape_share'))}) | {met} |"
        )
    return lines + [""]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def markdown(results: dict[str, Any], command: str) -> str:
    """The document; figures saved before peers were compared render as they used to."""
    if results.get("format") != 2:
        return legacy_markdown(results, command)
    table = medians(results.get("runs", []))
    plan = results.get("plan", {})
    peers = _peers(results)
    order = [OURS, OURS_TLS, OURS_NO_METRICS] + peers
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {results.get('generated_at', '-')} "
        f"in {_f((results.get('duration_s') or 0) / 60)} min — do not edit by hand.",
        f"Machine: {results['machine']}. Load generator, broker, processor and gateways all on it.",
        "",
    ]
    for rerun in results.get("reruns", []):
        lines += [
            f"Rerun since, with its figures replacing that run's: {', '.join(rerun['parts'])} by "
            f"`{rerun['command']}` on {rerun['generated_at']} in {_f(rerun['duration_s'] / 60)} min.",
            "",
        ]
    lines += [
        "Gateways:",
        "",
    ]
    for name, what in results.get("gateways", {}).items():
        lines.append(f"- **{name}**: `{what}`" if name in peers else f"- **{name}**: {what}")
    lines += [
        "",
        "Every gateway runs on the same Mosquitto (`set_tcp_nodelay true`), the same message processor and the "
        f"same load (`scripts/loadtest.py`): each CP waits {_f(plan.get('boot_delay_s'))} s after its WebSocket "
        "opens before its BootNotification (the AWS sample can lose the answer to a BootNotification sent the "
        "instant its WebSocket opens), for every gateway alike. Runs alternate between the gateways "
        f"(ours, peer, ours, peer ...), {plan.get('repeat', 1)} of each; the tables give medians, and counts "
        "of refused, dropped and unanswered summed over the repeats. Our gateway runs with "
        "`--mqtt-connect-rate 500 --mqtt-connect-burst 500 --max-message-rate 0 --registry-prefetch` (the Things are registered before it starts); a peer as its command says. "
        "Our gateway forwards with MQTT QoS 1 both ways; a peer with what it uses (the AWS sample: QoS 0).",
        "",
    ]
    for peer in peers:
        lines += [
            f"## Targets against {peer}",
            "",
            "Ratios are ours / peer, computed by `scripts/bench_figures.py` from the medians below.",
            "",
            "| target | ours | " + peer + " | ours / peer | |",
            "|---|---|---|---|---|",
        ]
        for row in targets(table, peer):
            met = "-" if row["met"] is None else ("met" if row["met"] else "**missed**")
            lines.append(
                f"| {row['target']} | {_f(row['ours'])} | {_f(row['peer'])} | {_r(row['ratio'])} | {met} |"
            )
        lines.append("")
    if not peers and table:
        lines += ["No peer in this run (`--peer NAME=COMMAND`): no targets table.", ""]
    if "scale" in table:
        lines += _section(
            "Charge points held by one gateway process",
            [
                f"Each CP connects (ramp {_f(plan.get('ramp'))}/s), boots, then sends a Heartbeat every 30 s for "
                f"{_f(plan.get('hold_s'))} s. Idle RSS: before any CP. RSS per CP: (max − idle) / CPs booted. CPU % "
                "of one core and heartbeat round trips: after all booted.",
            ],
            [
                "CPs",
                "gateway",
                "idle RSS MiB",
                "RSS max MiB",
                "RSS per CP KiB",
                "threads max",
                "CPU % after all booted",
                "HB RTT ms p50 / p99",
                "all booted after s",
                "refused / dropped / unanswered",
            ],
            table["scale"],
            order,
            peers,
            lambda c: [
                _f(c.get("idle_rss_mib")),
                _f(c.get("rss_max_mib")),
                _f(c.get("rss_per_cp_kib")),
                _f(c.get("threads_max"), 0),
                _f(c.get("cpu_percent_after_boot")),
                _pair(c, "hb_p50_ms", "hb_p99_ms"),
                _f(c.get("all_booted_after_s")),
                _lost(c),
            ],
            [
                "idle_rss_mib",
                "rss_max_mib",
                "rss_per_cp_kib",
                "threads_max",
                "cpu_percent_after_boot",
                "hb_p99_ms",
                "all_booted_after_s",
                None,
            ],
        )
    if "storm" in table:
        lines += _section(
            "Reconnect storm",
            [
                "Every CP connecting at once, as after a gateway restart. An unanswered boot: no answer within 60 s."
            ],
            [
                "CPs",
                "gateway",
                "all booted after s",
                "boot RTT ms p50 / p99",
                "unanswered boots",
                "refused / dropped / unanswered",
            ],
            table["storm"],
            order,
            peers,
            lambda c: [
                _f(c.get("all_booted_after_s")),
                _pair(c, "boot_p50_ms", "boot_p99_ms"),
                _f(c.get("boot_unanswered")),
                _lost(c),
            ],
            ["all_booted_after_s", "boot_p99_ms", None, None],
        )
    if "throughput" in table:
        lines += _section(
            "Throughput: CPU per forwarded message",
            [
                f"{_f(plan.get('throughput_cps'))} CPs, each sending its next CALL on a fixed schedule "
                "(offered msgs/s in total), ramped at 500/s. Measured in a window of "
                f"{_f(plan.get('window_s'))} s after all booted: **CPU µs per forwarded message** = gateway CPU "
                "seconds in the window / messages it forwarded both ways (CALLs CP→MQTT plus answers MQTT→CP); "
                "achieved msgs/s each way and round trips of the CALLs answered in the window. Then "
                f"{_f(plan.get('late_cps'))} more CPs connect at 500/s while the first keep loading the gateway: "
                "connect rate while loaded = (CPs booted − 1) / seconds from the first boot to the last.",
            ],
            [
                "offered msgs/s",
                "gateway",
                "CPU µs per msg",
                "CPU % of a core",
                "achieved CP→CPO / CPO→CP msgs/s",
                "RTT ms p50 / p99",
                "connect rate while loaded /s (booted)",
                "refused / dropped / unanswered",
            ],
            table["throughput"],
            order,
            peers,
            lambda c: [
                _f(c.get("cpu_us_per_msg")),
                _f(c.get("cpu_percent")),
                _pair(c, "msgs_per_s_cp_to_cpo", "msgs_per_s_cpo_to_cp", 0),
                _pair(c, "rtt_p50_ms", "rtt_p99_ms"),
                f"{_f(c.get('connect_rate_loaded'), 0)} ({_f(c.get('late_booted'), 0)} of {_f(c.get('late_cps'), 0)})",
                _lost(c),
            ],
            ["cpu_us_per_msg", "cpu_percent", None, "rtt_p50_ms", "connect_rate_loaded", None],
        )
    lines += _tls_section(table, peers)
    lines += _overhead_section(table, results)
    loops = [r for r in results.get("runs", []) if r.get("loop")]
    if loops:
        lag = median_of(r["loop"]["lag_max_ms"] for r in loops)
        gc = max(r["loop"]["full_gc_max_ms"] for r in loops)
        lines += [
            f"Our gateway's event loop (gateway/looplag.py): median of the runs' longest lag {_f(lag, 0)} ms; "
            f"longest full garbage collection {_f(gc, 0)} ms.",
            "",
        ]
    errors = sorted(
        {
            f"{r['gateway']} {r['plan']} {r['size']}: {k} ({v})"
            for r in results.get("runs", [])
            for k, v in r.get("errors", {}).items()
        }
    )
    lines += [f"Errors reported by the load test: {'; '.join(errors) if errors else 'none'}.", ""]
    if "throughput" in results:
        lines += baseline_section(results["throughput"])
    lines += ["Raw figures: `benchmarks.json` next to this file.", ""]
    return "\n".join(lines)
