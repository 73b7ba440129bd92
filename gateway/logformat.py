"""``--log-format json``: one JSON object per log line, with the CP id as a field of its own.

Every line is ``{"time", "level", "logger", "message"}`` (time in ISO 8601, UTC), plus
``cp_id`` when the line concerns one charge point, ``worker`` under ``--workers`` and ``exc``
(the traceback as text) for an exception.

How the CP id reaches a record, cheapest first:

* :data:`CURRENT_CP` (a :class:`contextvars.ContextVar`), set once where a connection's or a
  message's CP id is known (``session.py``, the processor's per-message task).  Trio gives each
  task its own context, copied from its parent's when it is spawned, so the id follows the
  connection's child tasks (its pumps) and never leaks to another CP's task;
  ``trio.to_thread.run_sync`` runs the thread in a copy of the caller's context too.
* ``extra={"cp_id": ...}`` on a single call, where no task is the CP's own.

Text logs are unchanged (the message itself starts with the CP id, as it always did).  Nothing
here adds to a message: what is logged, and so the rule that secrets never are, is the caller's.
"""

from __future__ import annotations

import datetime
import json
import logging
from contextvars import ContextVar
from typing import Any

CURRENT_CP: ContextVar[str | None] = ContextVar("cp_id", default=None)


def cp_id_of(record: logging.LogRecord) -> str | None:
    """The CP a record concerns: its ``extra`` ``cp_id``, else the emitting task's."""
    explicit = getattr(record, "cp_id", None)
    if isinstance(explicit, str):
        return explicit
    return CURRENT_CP.get()


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module docstring); ``worker``: e.g. ``"2/4"``."""

    def __init__(self, *, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        cp_id = cp_id_of(record)
        if cp_id is not None:
            doc["cp_id"] = cp_id
        if self.worker is not None:
            doc["worker"] = self.worker
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        # default=str: an argument that is no JSON type was already turned into text by
        # getMessage(); this only guards a non-str logger name or level.
        return json.dumps(doc, ensure_ascii=False, default=str)
