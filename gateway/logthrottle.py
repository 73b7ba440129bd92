"""Repeated log lines, rate-limited: a flood of refusals must not become a flood of log lines.

A refusal, an authentication failure or a dropped frame is logged once per
event, which is what an operator wants until someone sends 400 of them a
second.  :class:`RepeatFilter` lets through at most ``burst`` lines of the
same kind (same logger, level and message template, whatever the
arguments) per ``window`` seconds; the first line of the next window says
how many were suppressed.  Applied to the process's log handlers by
:func:`configure_logging`; the records themselves (and tests' captures) are
untouched.
"""

from __future__ import annotations

import logging


class RepeatFilter(logging.Filter):
    def __init__(self, *, burst: int = 5, window: float = 10.0, max_kinds: int = 10_000) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.max_kinds = max_kinds
        self._kinds: dict[
            tuple[str, int, str], list[float | int]
        ] = {}  # kind -> [window start, shown, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        state = self._kinds.get(kind)
        now = record.created
        if state is None or now - float(state[0]) >= self.window:
            suppressed = int(state[2]) if state is not None else 0
            if len(self._kinds) >= self.max_kinds:
                self._kinds.clear()
            self._kinds[kind] = [now, 1, 0]
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} similar line(s) suppressed in the last {self.window:g} s]"
            return True
        if int(state[1]) < self.burst:
            state[1] = int(state[1]) + 1
            return True
        state[2] = int(state[2]) + 1
        return False


def configure_logging(
    level: str | int, *, worker: str | None = None, log_format: str = "text"
) -> None:
    """``logging.basicConfig`` plus the repeat filter on every root handler; quiets chatty libraries.

    ``worker`` (e.g. ``"worker 2/4"``, with ``--workers``) starts every line after the level
    (``json``: a ``worker`` field, ``"2/4"``).  ``log_format`` ``json``: one JSON object a line
    (:mod:`.logformat`).
    """
    tag = f"{worker} " if worker else ""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")
    if log_format == "json":
        from .logformat import JsonFormatter

        label = worker.removeprefix("worker ") if worker else None
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter(worker=label))
        # A library's warning would otherwise be written to stderr as plain text, breaking the
        # one-object-a-line contract: it becomes a log record (logger "py.warnings") instead.
        logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
    for noisy in ("amqtt", "transitions", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
