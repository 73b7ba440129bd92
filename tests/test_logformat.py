"""``--log-format json``: one JSON object a line, the CP id as a field, floods still rate-limited.

The formatter and the CP id's way through Trio tasks and threads are checked directly; then the
gateway's CLI runs as a subprocess (the development stack) and every line it writes to stderr
must parse, its refusals carrying ``cp_id``, and a flood of them cut to the repeat filter's burst.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected

from gateway.chargepoint import connect
from gateway.logformat import CURRENT_CP, JsonFormatter
from gateway.logthrottle import RepeatFilter

from .processes import ROOT, Program, run
from .test_gateway_loop import closed_with
from .test_metrics import scrape

LOGGER = "test.logformat"


@contextmanager
def json_logger(
    *, worker: str | None = None, burst: int = 5
) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(worker=worker))
    handler.addFilter(RepeatFilter(burst=burst, window=10.0))
    logger = logging.getLogger(LOGGER)
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, out
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_and_the_exception() -> None:
    with json_logger(worker="2/4") as (logger, out):
        logger.info("%s: connected from %s", "CP1", "10.0.0.1", extra={"cp_id": "CP1"})
        try:
            raise ValueError("boom \u00e9")
        except ValueError:
            logger.exception("it failed")
    first, second = lines(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"]), first
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": LOGGER,
        "message": "CP1: connected from 10.0.0.1",
        "cp_id": "CP1",
        "worker": "2/4",
    }
    assert second["level"] == "ERROR" and "cp_id" not in second
    assert second["exc"].startswith("Traceback (most recent call last):")
    assert second["exc"].endswith("ValueError: boom \u00e9")


async def test_the_cp_id_follows_each_trio_task_and_its_threads() -> None:
    with json_logger() as (logger, out):

        async def one_cp(cp_id: str, ready: trio.Event, go: trio.Event) -> None:
            CURRENT_CP.set(cp_id)
            ready.set()
            await go.wait()  # both tasks have set their id before either logs
            logger.info("in the task")
            await trio.to_thread.run_sync(lambda: logger.info("in a thread"))

        go = trio.Event()
        async with trio.open_nursery() as nursery:
            for cp_id in ("CP-A", "CP-B"):
                ready = trio.Event()
                nursery.start_soon(one_cp, cp_id, ready, go)
                await ready.wait()
            go.set()
        logger.info("not about a CP")
    records = lines(out)
    assert sorted((r["cp_id"], r["message"]) for r in records[:-1]) == [
        ("CP-A", "in a thread"),
        ("CP-A", "in the task"),
        ("CP-B", "in a thread"),
        ("CP-B", "in the task"),
    ]
    assert "cp_id" not in records[-1]  # the parent task's context was never changed


def test_a_flood_is_cut_to_the_burst_and_counted_in_json_too() -> None:
    with json_logger(burst=3) as (logger, out):
        for n in range(50):
            record = logger.makeRecord(
                LOGGER, logging.INFO, __file__, 1, "refused %s: %d", (f"/ghost-{n}", 1008), None
            )
            record.created = 1000.0 + n / 100
            logger.handle(record)
        record = logger.makeRecord(
            LOGGER, logging.INFO, __file__, 1, "refused %s: %d", ("/ghost-x", 1008), None
        )
        record.created = 1011.0
        logger.handle(record)
    records = lines(out)
    assert [r["message"] for r in records] == [
        "refused /ghost-0: 1008",
        "refused /ghost-1: 1008",
        "refused /ghost-2: 1008",
        "refused /ghost-x: 1008 [47 similar line(s) suppressed in the last 10 s]",
    ]


# -- the CLI ------------------------------------------------------------------------------------


@contextmanager
def gateway_cli(tmp_path: Path, *args: str) -> Iterator[tuple[Program, Path]]:
    """``python -m gateway`` (the development stack); stdout read as it comes, stderr to a file."""
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--port", "0", "--mqtt-port", "0",
             "--fakeiot-api-port", "0", "--data-dir", str(tmp_path / "data"), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )  # fmt: skip
        program = Program(proc)
        try:
            yield program, stderr
        finally:
            program.stop()
            assert proc.stdout is not None
            proc.stdout.close()


async def test_the_gateway_cli_logs_json_lines_with_the_cp_id(tmp_path: Path) -> None:
    with gateway_cli(tmp_path, "--log-format", "json", "--metrics-port", "0") as (gw, stderr):
        line = await trio.to_thread.run_sync(gw.wait_for_line, "OCPP gateway listening on")
        url = re.search(r"listening on (ws://\S+)/<charge-point-id>", line).group(1)  # type: ignore[union-attr]
        api = await trio.to_thread.run_sync(gw.wait_for_line, "development stack: embedded")
        api_url = re.search(r", API (http://\S+), data in ", api).group(1)  # type: ignore[union-attr]
        created = await trio.to_thread.run_sync(
            lambda: run("-m", "fakeiot", "thing", "create", "CP2", "--api-url", api_url,
                        "--password", "correct-horse-battery-9")
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        # A flood of refusals: unknown ids, each one line until the burst (5) is spent.
        for n in range(12):
            async with connect(url, f"GHOST{n}") as ghost:
                assert (await closed_with(ghost.ws))[0] in (1008, 1013)
        with pytest.raises(ConnectionRejected):
            async with connect(url, "CP2", password="wrong-password-123"):
                pass
        async with connect(url, "CP2", password="correct-horse-battery-9") as cp2:
            assert (await cp2.call("Heartbeat", {}))["currentTime"]
        port = int(_metrics_port(stderr))
        samples = await scrape(port)  # the embedded processor's figures are in the gateway's
        assert any(name.startswith("ocpp_processor_calls_total") for name, _ in samples)
    records = [json.loads(text) for text in stderr.read_text().splitlines()]  # every line
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    refusals = [r for r in records if r["message"].startswith("refused /GHOST")]
    # Rate-limited: 12 refusals, the burst of 5 shown (a 6th only if the 10 s window ran out,
    # carrying the count of those suppressed).
    assert 5 <= len(refusals) < 12, refusals
    assert len(refusals) == 5 or "suppressed" in refusals[5]["message"]
    assert all(r["cp_id"] == r["message"].split()[1][1:] for r in refusals)
    failed = [r for r in records if "HTTP Basic authentication failed" in r["message"]]
    assert [r["cp_id"] for r in failed] == ["CP2"]
    connected = [r for r in records if r["message"].startswith("CP2: connected from")]
    assert [r["cp_id"] for r in connected] == ["CP2"]
    text = stderr.read_text()
    secrets = [(tmp_path / "data" / name).read_text().strip() for name in
               ("backend-password", "gateway-password")]  # fmt: skip
    for secret in (*secrets, "correct-horse-battery-9", "wrong-password-123"):
        assert secret not in text


def _metrics_port(stderr: Path) -> str:
    found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", stderr.read_text())
    assert found, stderr.read_text()
    return found.group(1)


def test_the_processor_takes_log_format_too() -> None:
    bad = run("-m", "gateway.processor", "--log-format", "yaml")
    assert bad.returncode == 2 and "--log-format" in bad.stderr and "yaml" in bad.stderr


def test_configure_logging_json_tags_a_workers_lines_and_captures_warnings() -> None:
    """What gateway/worker.py sets up in each worker of --workers N (in a process of its own:
    configure_logging changes the root logger)."""
    code = (
        "import logging, warnings\n"
        "from gateway.logthrottle import configure_logging\n"
        "configure_logging('INFO', worker='worker 2/4', log_format='json')\n"
        "logging.getLogger('gateway.x').warning('%s: hello', 'CP9', extra={'cp_id': 'CP9'})\n"
        "warnings.warn('a library warning')\n"
    )
    done = run("-c", code)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stderr.splitlines())
    assert (first["message"], first["cp_id"], first["worker"]) == ("CP9: hello", "CP9", "2/4")
    assert second["logger"] == "py.warnings" and "a library warning" in second["message"]
