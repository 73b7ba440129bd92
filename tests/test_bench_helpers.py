"""scripts/bench.py's pure helpers: peer command placeholders, medians, ratios and the targets table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_doc import markdown  # noqa: E402
from bench_figures import medians, merge_results, metrics_overhead, ratio, targets  # noqa: E402
from bench_peer import PeerError, parse_peer  # noqa: E402


def test_peer_command_placeholders_are_filled_per_argument() -> None:
    spec = parse_peer(
        "sample=/venv/bin/python 'run peer.py' --port {port} --broker={mqtt_host}:{mqtt_port} --ids {ids_file}"
    )
    assert spec.name == "sample"
    argv = spec.argv(port=9080, mqtt_host="127.0.0.1", mqtt_port=1883, ids_file=Path("/t/ids.txt"))
    assert argv == [
        "/venv/bin/python",
        "run peer.py",
        "--port",
        "9080",
        "--broker=127.0.0.1:1883",
        "--ids",
        "/t/ids.txt",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-command", "expected NAME="),
        ("x=", "expected NAME="),
        ("ours=cmd", "not 'ours'"),
        ("bad name=cmd", "peer name"),
        ("x=cmd --port {prot}", "unknown placeholder {prot}"),
        ("x=cmd 'unclosed", "No closing quotation"),
    ],
)
def test_bad_peer_specs_get_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(PeerError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_peer(text)


def _run(plan: str, size: int, gateway: str, **figures: Any) -> dict[str, Any]:
    base = {"refused": 0, "dropped": 0, "unanswered": 0}
    return {"plan": plan, "size": size, "gateway": gateway, "figures": base | figures}


def test_medians_over_repeats_and_summed_losses() -> None:
    table = medians(
        [
            _run("scale", 5000, "ours", rss_per_cp_kib=10.0, dropped=1),
            _run("scale", 5000, "ours", rss_per_cp_kib=14.0),
            _run("scale", 5000, "ours", rss_per_cp_kib=30.0, dropped=2),
        ]
    )
    cell = table["scale"]["5000"]["ours"]
    assert cell["rss_per_cp_kib"] == 14.0
    assert cell["dropped"] == 3
    assert cell["repeats"] == 3


def test_metrics_overhead_compares_ours_with_and_without_metrics_per_load() -> None:
    runs = [
        _run(
            "throughput",
            1000,
            "ours",
            cpu_us_per_msg=103.0,
            msgs_per_s_cp_to_cpo=990.0,
            scrape_cpu_ms=5.0,
            cpu_percent=50.0,
        ),
        _run(
            "throughput", 1000, "ours-no-metrics", cpu_us_per_msg=100.0, msgs_per_s_cp_to_cpo=1000.0
        ),
        _run("throughput", 2500, "ours", cpu_us_per_msg=110.0, msgs_per_s_cp_to_cpo=2400.0),
        _run(
            "throughput", 2500, "ours-no-metrics", cpu_us_per_msg=100.0, msgs_per_s_cp_to_cpo=2400.0
        ),
        _run("throughput", 5000, "ours", cpu_us_per_msg=100.0),  # no run without metrics: no row
    ]
    rows = metrics_overhead(medians(runs))
    assert [row["load"] for row in rows] == ["1000", "2500"]
    assert rows[0]["cpu_cost"] == pytest.approx(0.03) and rows[0]["rate_cost"] == pytest.approx(
        0.01
    )
    assert rows[0]["met"] is True
    assert rows[0]["scrape_share"] == pytest.approx(0.002)  # 5 ms every 5 s of a half-busy core
    assert rows[1]["cpu_cost"] == pytest.approx(0.10) and rows[1]["met"] is False
    document = markdown(
        {
            "format": 2,
            "machine": "m",
            "runs": runs,
            "gateways": {"ours": "x", "ours-no-metrics": "y"},
        },
        "python scripts/bench.py",
    )
    section = document.split("## The metrics endpoint's cost", 1)[1]
    assert (
        "| 1,000 | 103.0 / 100.0 | +3.0% | +3.0% | 990 / 1,000 | +1.0% | - / - | 5.00 (0.20%) | met |"
        in (section)
    )
    assert "**missed**" in section.split("| 2,500 |", 1)[1].split("\n", 1)[0]
    assert "Targets against ours-no-metrics" not in document  # not a peer


def test_the_metrics_part_is_compared_pair_by_pair_and_preferred_to_the_throughput_runs() -> None:
    runs = [
        _run("throughput", 1000, "ours", cpu_us_per_msg=130.0, msgs_per_s_cp_to_cpo=900.0),
        _run("throughput", 1000, "ours-no-metrics", cpu_us_per_msg=100.0, msgs_per_s_cp_to_cpo=1e3),
    ]
    for repeat, (on, off) in enumerate([(102.0, 100.0), (96.0, 100.0), (104.0, 100.0)]):
        runs += [
            _run("metrics", 500, "ours", cpu_us_per_msg=on, msgs_per_s_cp_to_cpo=500.0),
            _run("metrics", 500, "ours-no-metrics", cpu_us_per_msg=off, msgs_per_s_cp_to_cpo=500.0),
        ]
        runs[-1]["repeat"] = runs[-2]["repeat"] = repeat
    rows = metrics_overhead(medians(runs), runs)
    assert [(row["plan"], row["load"]) for row in rows] == [("metrics", "500")]
    assert rows[0]["cpu_cost"] == pytest.approx(0.02) and rows[0]["rate_cost"] == 0
    assert rows[0]["paired"] == pytest.approx([0.02, -0.04, 0.04])
    assert rows[0]["met"] is True
    document = markdown(
        {
            "format": 2,
            "machine": "m",
            "runs": runs,
            "plan": {"metrics_cps": 250, "metrics_pairs": 3, "window_s": 30.0},
            "gateways": {"ours": "x", "ours-no-metrics": "y"},
        },
        "python scripts/bench.py",
    )
    section = document.split("## The metrics endpoint's cost", 1)[1]
    assert "in the metrics part: 250 CPs" in section and "3 runs of each" in section
    assert "| 500 | 102.0 / 100.0 | +2.0% | +2.0%, -4.0%, +4.0% | 500 / 500 | +0.0% |" in section
    assert "| 1,000 |" not in section  # the saturated throughput runs are not the comparison


def test_update_keeps_the_parts_not_rerun_and_says_what_was_rerun() -> None:
    saved = {
        "format": 2,
        "command": "python scripts/bench.py --markdown d.md",
        "generated_at": "2026-12-01 10:00 UTC",
        "duration_s": 3000.0,
        "gateways": {"ours": "x", "aws-sample": "cmd"},
        "plan": {"scale": [1000], "window_s": 30.0, "metrics_load": 1000},
        "runs": [_run("scale", 1000, "ours"), _run("throughput", 1000, "ours-no-metrics")],
    }
    new = {
        "format": 2,
        "command": "python scripts/bench.py --only metrics --update --markdown d.md",
        "generated_at": "2026-12-03 19:00 UTC",
        "duration_s": 600.0,
        "gateways": {"ours": "x", "ours-no-metrics": "y"},
        "plan": {"scale": [5], "window_s": 20.0, "metrics_load": 500, "metrics_pairs": 4},
        "runs": [_run("metrics", 500, "ours"), _run("metrics", 500, "ours-no-metrics")],
    }
    merged = merge_results(saved, new, {"metrics"})
    assert [r["plan"] for r in merged["runs"]] == ["scale", "throughput", "metrics", "metrics"]
    assert merged["plan"] == {
        "scale": [1000],  # not a key of the metrics part: the saved run's
        "window_s": 20.0,
        "metrics_load": 500,
        "metrics_pairs": 4,
    }
    assert set(merged["gateways"]) == {"ours", "aws-sample", "ours-no-metrics"}
    assert merged["command"] == saved["command"]
    document = markdown(merged | {"machine": "m"}, merged["command"])
    assert (
        "Generated by `python scripts/bench.py --markdown d.md` on 2026-12-01 10:00 UTC" in document
    )
    assert (
        "Rerun since, with its figures replacing that run's: metrics by "
        "`python scripts/bench.py --only metrics --update --markdown d.md` on 2026-12-03 19:00 UTC"
    ) in document
    again = merge_results(merged, new | {"generated_at": "2026-12-04 08:00 UTC"}, {"metrics"})
    assert [r["generated_at"] for r in again["reruns"]] == ["2026-12-04 08:00 UTC"]
    assert [r["plan"] for r in again["runs"]] == ["scale", "throughput", "metrics", "metrics"]


def test_ratio_is_none_without_both_figures() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0) is None


def test_targets_compute_ratios_and_verdicts() -> None:
    runs = [
        _run("scale", 1000, "ours", rss_per_cp_kib=30.0, idle_rss_mib=40.0, hb_p99_ms=9.0),
        _run("scale", 1000, "peer", rss_per_cp_kib=40.0, idle_rss_mib=50.0, hb_p99_ms=500.0),
        _run("scale", 5000, "ours", rss_per_cp_kib=19.0, idle_rss_mib=42.0, hb_p99_ms=10.0),
        _run("scale", 5000, "peer", rss_per_cp_kib=40.0, idle_rss_mib=50.0, hb_p99_ms=700.0),
        _run(
            "throughput",
            1000,
            "ours",
            cpu_us_per_msg=70.0,
            rtt_p50_ms=5.0,
            connect_rate_loaded=460.0,
        ),
        _run(
            "throughput",
            1000,
            "peer",
            cpu_us_per_msg=100.0,
            rtt_p50_ms=9.0,
            connect_rate_loaded=450.0,
        ),
        _run(
            "throughput",
            2500,
            "ours",
            cpu_us_per_msg=50.0,
            rtt_p50_ms=8.0,
            connect_rate_loaded=300.0,
            unanswered=2,
        ),
        _run(
            "throughput",
            2500,
            "peer",
            cpu_us_per_msg=100.0,
            rtt_p50_ms=9.0,
            connect_rate_loaded=450.0,
        ),
    ]
    rows = {row["target"]: row for row in targets(medians(runs), "peer")}
    rss = rows["RSS per CP at 5,000 CPs ≤ 0.5× peer (KiB)"]
    assert rss["ratio"] == pytest.approx(0.475) and rss["met"] is True
    idle = rows["idle RSS before any CP ≤ peer (MiB)"]
    assert idle["ours"] == 41.0 and idle["met"] is True
    assert rows["CPU µs per forwarded message at 1,000 msgs/s ≤ 0.6× peer"]["met"] is False
    assert rows["CPU µs per forwarded message at 2,500 msgs/s ≤ 0.6× peer"]["ratio"] == 0.5
    assert rows["RTT p50 at 2,500 msgs/s ≤ peer (ms)"]["met"] is True
    assert rows["ours: zero refused, dropped or unanswered (all runs)"]["ours"] == 2
    assert rows["ours: zero refused, dropped or unanswered (all runs)"]["met"] is False
    assert rows["ours: connect rate while loaded at 1,000 msgs/s ≥ 0.9 × 500/s"]["met"] is True
    assert rows["ours: connect rate while loaded at 2,500 msgs/s ≥ 0.9 × 500/s"]["met"] is False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LISTENER = (
    "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
    "print('up', flush=True); time.sleep(60)"
)


def test_run_peer_waits_for_its_port_and_stops_its_process_group(tmp_path: Path) -> None:
    import os

    from bench_peer import run_peer

    spec = parse_peer(f'p={sys.executable} -c "{LISTENER}" {{ids_file}}')
    output: list[str] = []
    port = _free_port()
    with run_peer(
        spec,
        port=port,
        mqtt_host="127.0.0.1",
        mqtt_port=1,
        ids_file=tmp_path / "ids",
        output=output,
    ) as pid:
        os.kill(pid, 0)  # running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert output == ["up\n"]


def test_a_peer_that_exits_before_listening_is_a_clear_error(tmp_path: Path) -> None:
    from bench_peer import run_peer

    spec = parse_peer(f"p={sys.executable} -c \"print('no broker'); raise SystemExit(3)\"")
    with pytest.raises(PeerError, match="exited with status 3 before listening(.|\n)*no broker"):
        with run_peer(
            spec, port=_free_port(), mqtt_host="h", mqtt_port=1, ids_file=tmp_path / "ids"
        ):
            pass


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize(
    "script",
    sorted(p.name for p in SCRIPTS.glob("*.py") if '__name__ == "__main__"' in p.read_text()),
)
def test_every_script_starts_and_explains_itself(script: str) -> None:
    # Catches a script left behind by a refactoring (an import that moved) without running it.
    import subprocess

    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SCRIPTS.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
