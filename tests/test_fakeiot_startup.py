"""Starting and stopping fakeiot as a user does: its data directory, ports, help and Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakeiot import DataDirError, DataDirLocked, FakeIot, FakeIotConfig, running_fakeiot

from .processes import ROOT, program, run
from .test_fakeiot_limits import connect_packet


def _config(data_dir: Path) -> FakeIotConfig:
    return FakeIotConfig(mqtt_port=0, api_port=0, data_dir=data_dir)


async def test_a_second_fakeiot_on_the_same_data_dir_fails_at_once_naming_the_holder(
    tmp_path: Path,
) -> None:
    async with running_fakeiot(_config(tmp_path)):
        second = FakeIot(_config(tmp_path))
        started = time.monotonic()
        with pytest.raises(
            DataDirLocked, match=f"in use by another fakeiot \\(pid {os.getpid()}\\)"
        ):
            second.start()
        assert time.monotonic() - started < 2
        assert second.store is None and second.broker is None  # nothing of it started
    # Released on stop: the same directory serves again.
    async with running_fakeiot(_config(tmp_path)) as again:
        assert again.mqtt_port > 0


def test_a_second_fakeiot_process_on_the_same_data_dir_gets_one_line_naming_the_pid(
    tmp_path: Path,
) -> None:
    with program(
        "-m", "fakeiot", "--mqtt-port", "0", "--api-port", "0", "--data-dir", str(tmp_path)
    ) as first:
        first.wait_for_line("fakeiot: MQTT")
        second = run(
            "-m", "fakeiot", "--mqtt-port", "0", "--api-port", "0", "--data-dir", str(tmp_path)
        )
        assert second.returncode == 2
        assert second.stderr.splitlines() == [
            f"error: data directory {tmp_path} is in use by another fakeiot (pid {first.proc.pid}); "
            "stop it or choose another --data-dir"
        ]
        assert first.stop() == 0
    # The lock went with the process.
    with program(
        "-m", "fakeiot", "--mqtt-port", "0", "--api-port", "0", "--data-dir", str(tmp_path)
    ) as third:
        third.wait_for_line("fakeiot: MQTT")


async def test_data_dir_problems_are_named(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(DataDirError, match="is not a directory \\(a file is in the way\\)"):
        FakeIot(_config(a_file)).start()
    with pytest.raises(DataDirError, match=f"cannot create data directory .*: {a_file} is a file"):
        FakeIot(_config(a_file / "sub")).start()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
async def test_an_unwritable_data_dir_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(DataDirError, match="is not writable"):
        FakeIot(_config(locked)).start()


def test_data_dir_and_port_errors_on_the_command_line_are_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    bad_dir = run("-m", "fakeiot", "--mqtt-port", "0", "--api-port", "0", "--data-dir", str(a_file))
    assert bad_dir.returncode == 2
    assert bad_dir.stderr.splitlines() == [
        f"error: data directory {a_file} is not a directory (a file is in the way): "
        "remove it or choose another --data-dir"
    ]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        clash = run(
            "-m",
            "fakeiot",
            "--mqtt-port",
            str(port),
            "--api-port",
            "0",
            "--data-dir",
            str(tmp_path),
        )
        api_clash = run(
            "-m",
            "fakeiot",
            "--mqtt-port",
            "0",
            "--api-port",
            str(port),
            "--data-dir",
            str(tmp_path),
        )
    assert clash.returncode == 2
    assert clash.stderr.splitlines() == [
        f"error: fakeiot MQTT broker cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert api_clash.returncode == 2
    assert api_clash.stderr.splitlines() == [
        f"error: fakeiot HTTP API cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_help_shows_the_server_options_with_each_default_once() -> None:
    result = run("-m", "fakeiot", "--help")
    assert result.returncode == 0
    text = result.stdout
    for option in ("serve", "--host", "--mqtt-port", "--api-port", "--data-dir", "--tls-port"):
        assert option in text
    assert "FAKEIOT_" in text
    serve_text = run("-m", "fakeiot", "serve", "--help").stdout
    for help_text in (text, serve_text):
        entries = help_text.split("\n  --")[1:]
        assert len(entries) >= 10
        for entry in entries:
            assert entry.count("default") <= 1, entry
            assert "(default: None)" not in entry and "(default: False)" not in entry, entry
        assert "(default: 1883)" in help_text


def test_ctrl_c_stops_quietly_and_a_dropped_api_connection_is_one_debug_line(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakeiot", "--mqtt-port", "0", "--api-port", "0"]
        + ["--data-dir", str(tmp_path), "--log-level", "DEBUG"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        assert proc.stdout is not None
        line = ""
        while "fakeiot: MQTT mqtt://" not in line:
            line = proc.stdout.readline()
            assert line, "fakeiot ended before it was ready"
        found = re.search(r"MQTT mqtt://127\.0\.0\.1:(\d+), API http://127\.0\.0\.1:(\d+)", line)
        assert found, line
        mqtt_port, api = int(found.group(1)), int(found.group(2))
        password = (tmp_path / "backend-password").read_text().strip()
        with socket.create_connection(("127.0.0.1", mqtt_port), timeout=5) as client:
            client.sendall(connect_packet("test:connected", "fakeiot-backend", password))
            assert client.recv(4)[:1] == b"\x20"  # CONNACK: connected when Ctrl-C comes
            with socket.create_connection(("127.0.0.1", api), timeout=5) as reset:
                reset.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # then reset, mid-request
                reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in output
    assert "not broadcasted" not in output and "not delivered" not in output, output
    assert output.count("ended abruptly") == 1, output
