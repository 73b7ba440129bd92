"""Helpers for tests that run the real command-line programs."""

from __future__ import annotations

import os
import queue
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
