"""Repeated log lines are rate-limited per kind, with a count of what was suppressed."""

from __future__ import annotations

import io
import logging

from gateway.logthrottle import RepeatFilter


def _logger() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RepeatFilter(burst=3, window=10.0))
    logger = logging.getLogger("test.logthrottle")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def _emit(logger: logging.Logger, created: float, msg: str, *args: object) -> None:
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, msg, args, None)
    record.created = created
    logger.handle(record)


def test_a_flood_of_one_kind_is_cut_to_the_burst_and_counted() -> None:
    logger, out = _logger()
    for n in range(400):
        _emit(logger, 1000.0 + n / 400, "refused %s: %d %s", f"/ghost-{n}", 1008, "not registered")
    _emit(logger, 1000.5, "a different line %s", "x")  # other kinds are not affected
    _emit(logger, 1011.0, "refused %s: %d %s", "/ghost-x", 1008, "not registered")
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "refused /ghost-0: 1008 not registered",
        "refused /ghost-1: 1008 not registered",
        "refused /ghost-2: 1008 not registered",
    ]
    assert lines[3] == "a different line x"
    assert (
        lines[4]
        == "refused /ghost-x: 1008 not registered [397 similar line(s) suppressed in the last 10 s]"
    )
    assert len(lines) == 5
