"""Peer gateways for scripts/bench.py: any gateway command run beside ours on the same broker and load.

A peer is given as ``NAME=COMMAND``; COMMAND is split like a shell line (``shlex.split``, no shell runs)
and each argument may use the placeholders {port} {mqtt_host} {mqtt_port} {ids_file}.  The command must
exec the gateway itself (its pid is the one whose RSS and CPU are measured), serve plain ``ws://`` on
127.0.0.1:{port}, talk MQTT to {mqtt_host}:{mqtt_port} (plain TCP) with the topics ``<cp-id>/in`` and
``<cp-id>/out``, and accept the CP ids listed in {ids_file} (one per line, written before it starts).

Readiness is generic: the port accepts a TCP connection (at most ``READY_TIMEOUT`` s).  A peer is
stopped with SIGTERM to its whole process group, then SIGKILL after ``STOP_TIMEOUT`` s.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PLACEHOLDERS = ("port", "mqtt_host", "mqtt_port", "ids_file")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


class PeerError(Exception):
    """A --peer that is malformed, or a peer that did not start."""


@dataclass(frozen=True)
class PeerSpec:
    name: str
    command: str

    def argv(self, *, port: int, mqtt_host: str, mqtt_port: int, ids_file: Path) -> list[str]:
        """The command's arguments with the placeholders filled in."""
        return expand(
            self.command,
            {"port": port, "mqtt_host": mqtt_host, "mqtt_port": mqtt_port, "ids_file": ids_file},
        )


def parse_peer(text: str) -> PeerSpec:
    """``NAME=COMMAND`` -> PeerSpec; a clear PeerError for anything else."""
    name, sep, command = text.partition("=")
    name = name.strip()
    if not sep or not command.strip():
        raise PeerError(f"--peer {text!r}: expected NAME='COMMAND ...'")
    if not _NAME.match(name) or name == "ours":
        raise PeerError(
            f"--peer name {name!r}: 1-40 letters, digits, '_', '.', '-' (and not 'ours')"
        )
    expand(command, dict.fromkeys(PLACEHOLDERS, "x"))  # placeholders and quoting checked now
    return PeerSpec(name, command.strip())


def expand(command: str, values: dict[str, object]) -> list[str]:
    """shlex.split ``command``, then str.format each argument with ``values``."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise PeerError(f"peer command {command!r}: {exc}") from None
    if not words:
        raise PeerError("peer command is empty")
    out = []
    for word in words:
        try:
            out.append(word.format(**values))
        except KeyError as exc:
            raise PeerError(
                f"peer command: unknown placeholder {{{exc.args[0]}}} "
                f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
            ) from None
        except (ValueError, IndexError) as exc:
            raise PeerError(f"peer command: bad placeholder in {word!r}: {exc}") from None
    return out


def wait_for_port(
    port: int, proc: subprocess.Popen[str], timeout: float = READY_TIMEOUT, host: str = "127.0.0.1"
) -> None:
    """Until ``host:port`` accepts a TCP connection; PeerError when the process exits or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise PeerError(f"not accepting TCP connections on {host}:{port} after {timeout:g} s")


def stop_group(proc: subprocess.Popen[str], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL it after ``timeout`` s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever the group still holds (children of a wrapper), also after a clean exit
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@contextmanager
def run_peer(
    spec: PeerSpec,
    *,
    port: int,
    mqtt_host: str,
    mqtt_port: int,
    ids_file: Path,
    output: list[str] | None = None,
) -> Iterator[int]:
    """Start the peer in its own process group, wait until its port accepts; yields its pid."""
    argv = spec.argv(port=port, mqtt_host=mqtt_host, mqtt_port=mqtt_port, ids_file=ids_file)
    print("+ peer " + spec.name + ": " + shlex.join(argv), flush=True)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    except OSError as exc:
        raise PeerError(f"peer {spec.name}: cannot run {argv[0]!r}: {exc}") from None
    assert proc.stdout is not None
    lines: list[str] = output if output is not None else []
    drain = threading.Thread(
        target=_drain, args=(proc.stdout, lines), name=f"peer-{proc.pid}", daemon=True
    )
    drain.start()
    try:
        try:
            wait_for_port(port, proc)
        except PeerError as exc:
            tail = "".join(lines[-10:]).rstrip()
            raise PeerError(f"peer {spec.name}: {exc}" + (f"\n{tail}" if tail else "")) from None
        yield proc.pid
    finally:
        stop_group(proc)
        drain.join(timeout=2.0)
        proc.stdout.close()


def _drain(stream: IO[str], keep: list[str]) -> None:
    for line in stream:
        keep.append(line)
        del keep[:-200]  # the last lines are enough for an error message
