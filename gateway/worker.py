"""``python -m gateway.worker``: one worker of ``python -m gateway --workers N``.

Started by gateway/supervisor.py only, never by hand.  A worker is a whole
gateway (:func:`gateway.__main__._main`): its own Trio run, MQTT connections
and registry cache, listening on the shared port with SO_REUSEPORT.  Its pipes:

* stdin: the :class:`~gateway.worker_pipes.Assignment` (pickled: it comes from the parent process
  that wrote it, and carries secrets that must not travel in argv), then
  nothing; it stays open while the supervisor lives.  End-of-file means the
  supervisor is gone: the worker drains and exits, as on SIGTERM.
* stdout: one JSON object a line for the supervisor (gateway/worker_pipes.py):
  ``{"ready": url}`` once serving, ``{"error": text}`` for each start-up
  error (then exit 2), ``{"stopped": summary}`` once stopped.
* stderr: the log, every line tagged ``worker i/N``.
"""

from __future__ import annotations

import pickle
import sys
from typing import IO, TYPE_CHECKING, Any

import trio

from .__main__ import _main, startup_errors
from .logthrottle import configure_logging
from .worker_pipes import Assignment, encode

if TYPE_CHECKING:
    from .app import RunningGateway


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
    configure_logging(
        config.runtime.log_level, worker=assignment.label, log_format=config.runtime.log_format
    )

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
