"""``python -m gateway.worker``: one worker of ``python -m gateway --workers N``.

Started by gateway/supervisor.py only, never by hand.  A worker is a whole
gateway (:func:`gateway.__main__._main`): its own Trio run, MQTT connections
and registry cache, listening on the shared port with SO_REUSEPORT.  Its pipes:

* stdin: the :class:`Assignment` (pickled: it comes from the parent process
  that wrote it, and carries secrets that must not travel in argv), then
  nothing; it stays open while the supervisor lives.  End-of-file means the
  supervisor is gone: the worker drains and exits, as on SIGTERM.
* stdout: one JSON object a line for the supervisor (:func:`encode`):
  ``{"ready": url}`` once serving, ``{"error": text}`` for each start-up
  error (then exit 2), ``{"stopped": summary}`` once stopped.
* stderr: the log, every line tagged ``worker i/N``.
"""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import trio

from .__main__ import _main, startup_errors
from .config import GatewayConfig
from .logthrottle import configure_logging

if TYPE_CHECKING:
    from .app import RunningGateway


@dataclass(frozen=True)
class Assignment:
    """What the supervisor tells a worker: its configuration (the port already chosen)."""

    config: GatewayConfig
    number: int  # 1-based
    total: int

    @property
    def label(self) -> str:
        return f"worker {self.number}/{self.total}"


def encode(**message: str) -> bytes:
    """One line of the worker -> supervisor protocol."""
    return json.dumps(message).encode() + b"\n"


def decode(line: bytes) -> dict[str, str]:
    """A line of the protocol -> its message; a line that is not one -> ``{"output": line}``."""
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict) or not all(isinstance(v, str) for v in message.values()):
        return {"output": line.decode(errors="replace")}
    return message


class _Channel:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def send(self, **message: str) -> None:
        self._out.write(encode(**message))
        self._out.flush()


def main() -> int:
    assignment: Any = pickle.load(sys.stdin.buffer)
    if not isinstance(assignment, Assignment):
        print("gateway.worker is started by python -m gateway --workers N", file=sys.stderr)
        return 2
    config = assignment.config
    channel = _Channel(sys.stdout.buffer)
    configure_logging(config.runtime.log_level, worker=assignment.label)

    def announce(running: RunningGateway, stack: Any) -> None:
        channel.send(ready=running.url)

    def summary(running: RunningGateway) -> None:
        channel.send(stopped=running.loop.describe())

    try:
        trio.run(
            lambda: _main(
                config, None, announce=announce, summary=summary, lifeline=sys.stdin.fileno()
            )
        )
    except BaseException as exc:  # noqa: BLE001 - sorted below, re-raised unless it is a known start-up error
        messages = startup_errors(exc, config)
        if messages is None:
            raise
        for message in messages:
            channel.send(error=message)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
