"""Helpers for tests that run the real command-line programs."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


class Program:
    """A running program whose output is read line by line, with deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._selector = selectors.DefaultSelector()
        assert proc.stdout is not None
        self._selector.register(proc.stdout, selectors.EVENT_READ)

    def wait_for_line(self, fragment: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if fragment in line:
                return line
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            if not self._selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if fragment in line:
                return line
        raise AssertionError(f"no line containing {fragment!r}; output so far:\n{''.join(self.lines)}")

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def program(*args: str, python: bool = True) -> Iterator[Program]:
    command = [sys.executable, *args] if python else list(args)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    running = Program(proc)
    try:
        yield running
    finally:
        running.stop()
        assert proc.stdout is not None
        proc.stdout.close()
