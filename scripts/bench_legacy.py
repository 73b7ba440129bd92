"""The bare-MQTT baseline (``--baseline``) and the document of the runs without peers (old JSON).

The baseline runs the same CP ids and frames as bare MQTT clients (no gateway in between): the gap
between the two is the gateway's own cost.  ``legacy_markdown`` renders figures saved before peers
were compared (``--render`` of an old benchmarks.json); ``baseline_section`` is its throughput part,
reused in the new document when ``--baseline`` ran.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import trio
from bench_stack import Stack, loop_figures, run_loadtest
from loadtest import percentiles

from gateway.mqtt_link import MqttSettings, open_mqtt_driver


async def _baseline(
    port: int,
    prefix: str,
    cps: int,
    interval: float,
    duration: float,
    rate: float,
    username: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """CPs as bare MQTT clients (client id = CP id): publish CALLs to <id>/in, await <id>/out.

    ``username``/``password``: the device credential the broker wants (fakeiot: the gateway's)."""
    boot_rtt: list[float] = []
    steady: list[float] = []
    errors = 0
    sent = answered = 0
    settings = MqttSettings(
        port=port, connect_rate=0, keepalive=60, username=username, password=password
    )
    async with open_mqtt_driver(settings) as driver:
        start_at = trio.current_time() + 0.2
        end_at = start_at + duration

        async def one(i: int) -> None:
            nonlocal errors, sent, answered
            cp_id = f"{prefix}{i}"
            await trio.sleep_until(start_at + i / rate)
            try:
                async with driver.link(cp_id) as link:
                    await link.subscribe(f"{cp_id}/out", 1)
                    record = {"state": {"reported": {"ocppProtocol": "ocpp2.0.1"}}}
                    await link.publish(
                        f"$aws/things/{cp_id}/shadow/update", json.dumps(record).encode()
                    )

                    async def call(action: str, payload: dict[str, Any]) -> float:
                        nonlocal sent, answered
                        mid = str(uuid.uuid4())
                        t0 = trio.current_time()
                        sent += 1
                        await link.publish(
                            f"{cp_id}/in", json.dumps([2, mid, action, payload]).encode()
                        )
                        with trio.fail_after(30):
                            while True:
                                _, body = await link.receive()
                                if json.loads(body)[1] == mid:
                                    answered += 1
                                    return trio.current_time() - t0

                    boot = {
                        "chargingStation": {"vendorName": "LoadTest", "model": "LT-1"},
                        "reason": "PowerUp",
                    }
                    boot_rtt.append(await call("BootNotification", boot))
                    next_at = trio.current_time() + random.uniform(0, interval)
                    while next_at < end_at:
                        await trio.sleep_until(next_at)
                        steady.append(await call("Heartbeat", {}))
                        next_at += interval
            except Exception:  # noqa: BLE001 - counted
                errors += 1

        wall0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(cps):
                nursery.start_soon(one, i)
        wall = trio.current_time() - wall0
    return {
        "cps": cps,
        "boot_rtt_ms": percentiles(boot_rtt),
        "steady_rtt_ms": percentiles(steady),
        "sent": sent,
        "answered": answered,
        "errors": errors,
        "msgs_per_s_cp_to_cpo": sent / wall,
        "msgs_per_s_cpo_to_cp": answered / wall,
    }


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy_since(start: tuple[int, int]) -> float:
    busy, total = _cpu_times()
    return 100.0 * (busy - start[0]) / max(1, total - start[1])


def throughput_runs(
    stack: Stack, cps: int, loads: list[int], duration: float, results: dict[str, Any]
) -> None:
    for load in loads:
        interval = cps / load
        output: list[str] = []
        with stack.gateway(output) as (url, pid):
            cpu0 = _cpu_times()
            through = run_loadtest(
                [
                    "--url",
                    url,
                    "--cps",
                    str(cps),
                    "--prefix",
                    "LT",
                    "--rate",
                    "500",
                    "--interval",
                    f"{interval:g}",
                    "--duration",
                    str(duration + cps / 500),
                    "--gateway-pid",
                    str(pid),
                ]
            )
            through["machine_busy_percent"] = _busy_since(cpu0)
        through["gateway_loop"] = loop_figures(output)
        print(f"baseline: {cps} bare MQTT clients, {load} msgs/s offered ...", flush=True)
        cpu0 = _cpu_times()
        bare = trio.run(
            _baseline,
            stack.mqtt_port,
            "LT",
            cps,
            interval,
            duration + cps / 500,
            500.0,
            stack.device_username,
            stack.device_password,
        )
        bare["machine_busy_percent"] = _busy_since(cpu0)
        print(json.dumps({k: v for k, v in bare.items() if k != "cps"}), flush=True)
        results.setdefault("throughput", {}).setdefault(stack.broker, []).append(
            {"offered": load, "cps": cps, "gateway": through, "baseline": bare}
        )


# -- the document -------------------------------------------------------------------


def _ms(d: dict[str, Any], key: str = "p50") -> str:
    value = d.get(key)
    return "-" if value is None else f"{value:.1f}"


def _loop(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "-"
    return f"{figures['lag_max_ms']:.0f} / {figures['full_gcs']} ({figures['full_gc_max_ms']:.0f})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _busy(figures: dict[str, Any]) -> str:
    value = figures.get("machine_busy_percent")
    return "-" if value is None else f"{value:.0f}"


def legacy_targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets next to what this run measured (met / missed is computed, not typed)."""
    rows: list[tuple[str, str, bool | None]] = []
    if results.get("scale"):
        big = max(results["scale"], key=lambda r: r["cps"])
        after = big.get("steady_after_boot_rtt_ms", {})
        p99 = after.get("p99")
        asked = (
            ""
            if big["cps"] >= 10_000
            else " (10,000 asked; one gateway here is capped by the open files limit above)"
        )
        rows.append(
            (
                f"{big['cps']:,} CPs held by one gateway{asked}, none refused or dropped",
                f"established {big['established']:,}, refused {big['refused']}, dropped {big['dropped']}, booted {big['booted']:,}",
                big["refused"] == 0 and big["dropped"] == 0 and big["booted"] == big["cps"],
            )
        )
        rows.append(
            (
                "p99 heartbeat round trip < 100 ms at that size (after all booted)",
                f"p99 {_ms(after, 'p99')} ms (p50 {_ms(after)}, max {_ms(after, 'max')})",
                None if p99 is None else p99 < 100,
            )
        )
        gw, idle = big.get("gateway", {}), big["gateway_idle"]
        per_cp = (gw.get("rss_mib_max", 0) - idle["rss_mib"]) * 1024 / max(1, big["booted"])
        rows.append(
            (
                "at most 50 KB of gateway RSS per CP",
                f"{per_cp:.1f} KiB = {per_cp * 1.024:.1f} KB",
                per_cp * 1.024 <= 50,
            )
        )
        per_cp_rss, per_k_cpu = [], []
        for run in sorted(results["scale"], key=lambda r: r["cps"]):
            g, i = run.get("gateway", {}), run["gateway_idle"]
            per_cp_rss.append(
                (g.get("rss_mib_max", 0) - i["rss_mib"]) * 1024 / max(1, run["booted"])
            )
            if g.get("cpu_percent_after_boot") is not None:
                per_k_cpu.append(g["cpu_percent_after_boot"] * 1000 / run["cps"])
        sizes = " / ".join(
            f"{r['cps']:,}" for r in sorted(results["scale"], key=lambda r: r["cps"])
        )
        cpu_text = (
            (
                " / ".join(f"{c:.2f}" for c in per_k_cpu)
                + " % of a core per 1,000 CPs after all booted"
            )
            if per_k_cpu
            else "CPU not sampled"
        )
        # Linear or better: the cost per CP at the largest size is at most 1.5 times that at the smallest.
        flat = per_cp_rss[-1] <= 1.5 * per_cp_rss[0] and (
            not per_k_cpu or per_k_cpu[-1] <= 1.5 * per_k_cpu[0]
        )
        rows.append(
            (
                f"cost grows linearly ({sizes} CPs; met: per CP, the largest costs at most 1.5 times the smallest)",
                f"RSS per CP {' / '.join(f'{r:.1f}' for r in per_cp_rss)} KiB; {cpu_text}",
                flat,
            )
        )
        rows.append(
            (
                "threads bounded, not one per CP",
                f"{gw.get('threads_max', '-')} threads at most with {big['cps']:,} CPs",
                isinstance(gw.get("threads_max"), int) and gw["threads_max"] < 64,
            )
        )
    if "storm" in results:
        st = results["storm"]
        rows.append(
            (
                f"reconnect storm ({st['cps']:,} at once): all Accepted, no failures",
                f"booted {st['booted']:,}, refused {st['refused']}, dropped {st['dropped']}, errors {st['errors'] or 'none'}",
                st["booted"] == st["cps"] and not st["errors"],
            )
        )
    runs = results.get("throughput", {}).get("mosquitto", [])
    if runs:
        best = max(runs, key=lambda r: r["gateway"]["msgs_per_s_cpo_to_cp"])
        g, b = best["gateway"], best["baseline"]
        rate = min(g["msgs_per_s_cp_to_cpo"], g["msgs_per_s_cpo_to_cp"])
        rows.append(
            (
                "at least 5,000 OCPP messages/s each way through the gateway (Mosquitto)",
                f"{rate:,.0f}/s at {best['offered']:,} offered; bare MQTT, same offered load: "
                f"{min(b['msgs_per_s_cp_to_cpo'], b['msgs_per_s_cpo_to_cp']):,.0f}/s",
                rate >= 5000,
            )
        )
        half = [r for r in runs if r["offered"] == 2500]
        if half:
            g, b = half[0]["gateway"], half[0]["baseline"]
            added = (g["steady_rtt_ms"]["p50"] or 0) - (b["steady_rtt_ms"]["p50"] or 0)
            rows.append(
                (
                    "added latency over bare MQTT < 2 ms at p50, at half that load (2,500/s)",
                    f"{added:+.1f} ms (gateway p50 {_ms(g['steady_rtt_ms'])}, bare {_ms(b['steady_rtt_ms'])}; "
                    f"machine {_busy(g)} % busy)",
                    added < 2,
                )
            )
    if not rows:
        return []
    lines = ["## Against the targets", "", "| target | this run | |", "|---|---|---|"]
    for target, measured, met in rows:
        lines.append(
            f"| {target} | {measured} | {'-' if met is None else ('met' if met else '**missed**')} |"
        )
    return lines + [""]


def baseline_section(throughput: dict[str, Any]) -> list[str]:
    """Gateway against bare MQTT clients, per broker and offered load (``--baseline``)."""
    lines: list[str] = []
    lines += [
        "## Throughput and the bare-MQTT baseline",
        "",
        "The same CP ids and OCPP frames, the same broker and processor: through the gateway (WebSocket → MQTT) "
        "and as bare MQTT clients (the physical limit of the architecture).",
        "",
        "| broker | offered msgs/s | path | achieved CP→CPO / CPO→CP msgs/s | RTT ms p50 / p99 | CALLs unanswered | added p50 ms | ratio p50 | gateway CPU % / loop lag max ms | machine CPU busy % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for broker, runs in throughput.items():
        for run in runs:
            g, b = run["gateway"], run["baseline"]
            added = (g["steady_rtt_ms"]["p50"] or 0) - (b["steady_rtt_ms"]["p50"] or 0)
            ratio = (g["steady_rtt_ms"]["p50"] or 0) / (b["steady_rtt_ms"]["p50"] or 1)
            lines.append(
                f"| {broker} | {run['offered']} | gateway | {g['msgs_per_s_cp_to_cpo']:.0f} / {g['msgs_per_s_cpo_to_cp']:.0f} | "
                f"{_ms(g['steady_rtt_ms'])} / {_ms(g['steady_rtt_ms'], 'p99')} | {g['unanswered']} of {g['sent']} | {added:+.1f} | {ratio:.2f} | "
                f"{g.get('gateway', {}).get('cpu_percent_mean', 0):.0f} / "
                f"{(g.get('gateway_loop') or {}).get('lag_max_ms', 0):.0f} | {_busy(g)} |"
            )
            lines.append(
                f"| {broker} | {run['offered']} | bare MQTT | {b['msgs_per_s_cp_to_cpo']:.0f} / {b['msgs_per_s_cpo_to_cp']:.0f} | "
                f"{_ms(b['steady_rtt_ms'])} / {_ms(b['steady_rtt_ms'], 'p99')} | {b['sent'] - b['answered']} of {b['sent']} | | | | {_busy(b)} |"
            )
    lines += [
        "",
        "A CALL is unanswered when no answer came within 30 s. fakeiot (amqtt 0.12.1) keeps at most "
        "100 QoS 1 messages unacknowledged per client, as AWS IoT does, queues 1,000 more and drops beyond "
        "that (`fakeiot/limits.py`); once it is overloaded, CALLs go unanswered on both paths. "
        'Mosquitto, at higher rates, lost none. "Machine CPU busy" is both cores together (100 % = both busy): '
        "the load generator, broker, processor and gateway share them, so near 100 % every process waits "
        "for a core and round trips grow with the queue.",
        "",
    ]
    return lines


def legacy_markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {results.get('generated_at') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        "— do not edit by hand.",
        f"Machine: {results['machine']}. Load generator, broker, processor and gateway all on it.",
        "Gateway settings for these runs: `--mqtt-connect-rate 500 --mqtt-connect-burst 500 --max-message-rate 0` "
        "(and the defaults `--gc-full-interval 300`: one scheduled full garbage collection per 5 minutes, "
        "`--gc-young-interval 0.1`: young collections ten times a second).",
        '"Loop lag" is how late a process\'s event loop woke a task (gateway/looplag.py): a stall there delays every CP.',
        "",
    ]
    lines += legacy_targets(results)
    if "scale" in results:
        lines += [
            "## Charge points held by one gateway process (Mosquitto)",
            "",
            f"Each CP boots, then sends a Heartbeat every 30 s; connect ramp {results.get('ramp', 200):g}/s; "
            '"after all booted" leaves out the heartbeats sent during the ramp.',
            "",
            "| CPs | established / refused / dropped | booted | all booted after s | heartbeat RTT ms p50 / p99 / max (whole run) | same, after all booted | gateway RSS MiB idle → max | RSS per CP KiB | threads max | gateway CPU % of a core: whole run / after all booted | gateway loop lag max ms / full GCs (max ms) | generator loop lag max ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in results["scale"]:
            gw, idle = run.get("gateway", {}), run["gateway_idle"]
            per_cp = (gw.get("rss_mib_max", 0) - idle["rss_mib"]) * 1024 / max(1, run["booted"])
            after = run.get("steady_after_boot_rtt_ms", {})
            booted_after = run.get("all_booted_after_s")
            lines.append(
                f"| {run['cps']} | {run['established']} / {run['refused']} / {run['dropped']} | {run['booted']} | "
                f"{'-' if booted_after is None else format(booted_after, '.1f')} | "
                f"{_ms(run['steady_rtt_ms'])} / {_ms(run['steady_rtt_ms'], 'p99')} / {_ms(run['steady_rtt_ms'], 'max')} | "
                f"{_ms(after)} / {_ms(after, 'p99')} / {_ms(after, 'max')} | "
                f"{idle['rss_mib']:.1f} → {gw.get('rss_mib_max', 0):.1f} | {per_cp:.1f} | {gw.get('threads_max', '-')} | "
                f"{gw.get('cpu_percent_mean', 0):.1f} / {_pct(gw.get('cpu_percent_after_boot'))} | {_loop(run.get('gateway_loop'))} | "
                f"{run.get('generator', {}).get('loop_lag_max_ms', 0):.0f} |"
            )
        scale_errors = (
            "; ".join(f"{r['cps']} CPs: {r['errors']}" for r in results["scale"] if r["errors"])
            or "none"
        )
        lines += ["", f"Errors: {scale_errors}.", ""]
    if "storm" in results:
        s = results["storm"]
        lines += [
            "## Reconnect storm (Mosquitto)",
            "",
            f"{s['cps']} CPs connecting at once. Established {s['established']}, refused {s['refused']}, "
            f"dropped {s['dropped']}, booted {s['booted']}; all booted after "
            f"{'-' if s['all_booted_after_s'] is None else format(s['all_booted_after_s'], '.1f')} s; connect rate sustained "
            f"{'-' if s['connect_rate_per_s'] is None else format(s['connect_rate_per_s'], '.0f')}/s; BootNotification RTT ms "
            f"p50 {_ms(s['boot_rtt_ms'])}, p99 {_ms(s['boot_rtt_ms'], 'p99')}, max {_ms(s['boot_rtt_ms'], 'max')}. "
            f"Errors: {s['errors'] or 'none'}. Gateway loop lag max ms / full GCs (max ms): {_loop(s.get('gateway_loop'))}.",
            "",
        ]
    if "throughput" in results:
        lines += baseline_section(results["throughput"])
    lines += ["Raw figures: `benchmarks.json` next to this file.", ""]
    return "\n".join(lines)
