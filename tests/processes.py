"""Helpers for tests that run the real command-line programs."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port free at this moment, for a program that must be told its port before it starts.

    Racy (another program may take it before ours binds it): only for programs that cannot report
    the port they bound (HAProxy, Mosquitto), whose start-up the caller retries on a bind failure.
    Everything else binds port 0 and reports its port: see :func:`gateway_url`, :func:`fakeiot_urls`.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens, for as long as the ``with`` block runs.

    A socket bound there that never listens: every connection to it is refused, and no other
    program can take the port meanwhile (a port merely found free by :func:`free_port` could be).
    """
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield int(closed.getsockname()[1])


def gateway_url(gateway: Program) -> str:
    """The ws(s):// base URL that ``python -m gateway`` reports once it serves (``--port 0`` too)."""
    line = gateway.wait_for_line("OCPP gateway listening on")
    found = re.search(r"listening on (wss?://\S+)/<charge-point-id>", line)
    assert found, line
    return found.group(1)


def gateway_port(gateway: Program) -> int:
    return int(gateway_url(gateway).rsplit(":", 1)[1].split("/", 1)[0])


def embedded_fakeiot_api_url(gateway: Program) -> str:
    """The API URL of the fakeiot embedded in ``python -m gateway`` (``--fakeiot-api-port 0`` too)."""
    line = gateway.wait_for_line("development stack: embedded fakeiot MQTT")
    found = re.search(r", API (http://\S+), data in ", line)
    assert found, line
    return found.group(1)


def fakeiot_urls(fakeiot: Program) -> tuple[int, str]:
    """(MQTT port, API URL) that ``python -m fakeiot`` reports once it serves (ports 0 too)."""
    line = fakeiot.wait_for_line("fakeiot: MQTT mqtt://")
    found = re.search(r"MQTT mqtt://[^:\s]+:(\d+).*, API (http://\S+), data in ", line)
    assert found, line
    return int(found.group(1)), found.group(2)


def run(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = None if env is None else {**os.environ, **env}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


class Program:
    """A running program whose output is read line by line, with deadlines.

    A thread reads the output into a queue (a select() on the pipe would
    miss lines already sitting in Python's read buffer); it ends with the
    program's output and is joined by :meth:`stop`.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"output-{proc.pid}")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, fragment: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if fragment in line:
                return line
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if fragment in line:
                return line
        if self.proc.poll() is None:
            # PYTHONFAULTHANDLER=1 makes the program print every thread's stack on SIGABRT.
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(timeout=5)
            self._reader.join(timeout=5)
            while not self._queue.empty():
                self.lines.append(self._queue.get() or "")
        raise AssertionError(
            f"no line containing {fragment!r}; output so far:\n{''.join(self.lines)}"
        )

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=10)


@contextmanager
def program(*args: str, python: bool = True) -> Iterator[Program]:
    command = [sys.executable, *args] if python else list(args)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    running = Program(proc)
    try:
        yield running
    finally:
        running.stop()
        assert proc.stdout is not None
        proc.stdout.close()
