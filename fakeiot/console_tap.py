"""The console's live feed: a bounded, non-blocking tap on every message fakeiot's broker delivers.

The broker calls :meth:`ConsoleTap.offer` on its event loop for each message it
broadcasts (client publishes, API publishes, presence events, rule republishes).
``offer`` never waits: under one short lock it appends the frame to the queue of
each viewer whose filters match.  A viewer's queue holds at most ``queue_size``
frames, each cut to its first :data:`MAX_PAYLOAD_KEPT` bytes (all the live view
shows of it); when full, the oldest frame is dropped and counted (the viewer is
told how many it missed), so a slow or absent browser costs bounded memory (in
bytes: 500 frames of 16 KiB, whatever the payloads' size) and never slows the
broker.  At most ``max_viewers`` viewers exist at once (each is one
HTTP thread of the API server streaming Server-Sent Events); one more is refused
with :class:`TooManyViewers`.

Presence events (``$aws/events/presence/...``) are also kept, the last
``presence_history`` of them, for the console's "Clients" page.

Pure threading, no I/O: the HTTP side lives in :mod:`fakeiot.console`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from .rules.sql import RuleSqlError, topic_matches, validate_topic_filter

PRESENCE_PREFIX = "$aws/events/presence/"
MAX_FILTERS = 8  # per viewer
MAX_FILTER_BYTES = 256  # AWS IoT's topic filter quota
# Bytes of a payload a frame keeps: the live view shows 4096 characters, at most 4 bytes each.
MAX_PAYLOAD_KEPT = 16 * 1024


class TooManyViewers(Exception):
    """Every live-feed slot is taken."""


class InvalidFilter(ValueError):
    """A topic filter one cannot subscribe to."""


@dataclass(frozen=True)
class Frame:
    """One message as the broker delivered it."""

    seq: int
    timestamp: float  # seconds since the epoch
    topic: str
    payload: bytes  # at most MAX_PAYLOAD_KEPT bytes of it
    size: int | None = None  # the whole payload's size in bytes, when ``payload`` was cut


def check_filters(filters: Sequence[str]) -> list[str]:
    """The filters, validated as MQTT topic filters; raises :class:`InvalidFilter`."""
    if not filters:
        raise InvalidFilter("give at least one topic filter, e.g. +/in or #")
    if len(filters) > MAX_FILTERS:
        raise InvalidFilter(f"at most {MAX_FILTERS} topic filters per view")
    checked = []
    for topic_filter in filters:
        if len(topic_filter.encode("utf-8", "surrogatepass")) > MAX_FILTER_BYTES:
            raise InvalidFilter(f"a topic filter is at most {MAX_FILTER_BYTES} bytes")
        if "\x00" in topic_filter:
            raise InvalidFilter("a topic filter cannot contain NUL")
        try:
            validate_topic_filter(topic_filter)
        except RuleSqlError as exc:
            raise InvalidFilter(str(exc).replace("FROM needs", "needs")) from None
        checked.append(topic_filter)
    return checked


class Viewer:
    """One browser's subscription: a bounded queue of matching frames."""

    def __init__(self, filters: Sequence[str], queue_size: int, lock: threading.Lock) -> None:
        self.filters = tuple(filters)
        self.dropped = 0  # frames dropped (queue full) and not yet reported
        self.dropped_total = 0
        self._frames: deque[Frame] = deque()
        self._queue_size = queue_size
        self._ready = threading.Condition(lock)
        self.closed = False

    def matches(self, topic: str) -> bool:
        return any(topic_matches(f, topic) for f in self.filters)

    def push(self, frame: Frame) -> None:
        """Called with the tap's lock held."""
        if len(self._frames) >= self._queue_size:
            self._frames.popleft()
            self.dropped += 1
            self.dropped_total += 1
        self._frames.append(frame)
        self._ready.notify()

    def take(self, timeout: float) -> tuple[list[Frame], int]:
        """Wait up to ``timeout`` seconds for frames; returns them and how many were dropped
        since the last call (both may be empty/0: time out, or the tap closed)."""
        with self._ready:
            if not self._frames and not self.closed:
                self._ready.wait(timeout)
            frames = list(self._frames)
            self._frames.clear()
            dropped, self.dropped = self.dropped, 0
        return frames, dropped


class ConsoleTap:
    """Fan-out of delivered messages to at most ``max_viewers`` bounded viewer queues."""

    def __init__(
        self, *, max_viewers: int = 4, queue_size: int = 500, presence_history: int = 200
    ) -> None:
        if max_viewers < 1 or queue_size < 1 or presence_history < 1:
            raise ValueError("the console tap's bounds must be positive")
        self.max_viewers = max_viewers
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._viewers: list[Viewer] = []
        self._presence: deque[Frame] = deque(maxlen=presence_history)
        self._seq = itertools.count(1)
        self.offered = 0
        self.dropped = 0  # over all viewers, since start
        self.refused_viewers = 0
        self.closed = False

    def offer(self, topic: str | None, payload: bytes | bytearray | None) -> None:
        """A message the broker delivers (called on its loop; never blocks beyond a short lock)."""
        if not topic:
            return
        presence = topic.startswith(PRESENCE_PREFIX)
        viewers = self._viewers  # copy-on-write: read without the lock
        if not viewers and not presence:
            return
        targets = [v for v in viewers if v.matches(topic)]
        if not targets and not presence:
            return
        whole = payload or b""
        kept = bytes(whole[:MAX_PAYLOAD_KEPT])  # copies only what is kept
        size = len(whole) if len(whole) > len(kept) else None
        frame = Frame(next(self._seq), time.time(), topic, kept, size)
        with self._lock:
            self.offered += 1
            if presence:
                self._presence.append(frame)
            for viewer in targets:
                before = viewer.dropped_total
                viewer.push(frame)
                self.dropped += viewer.dropped_total - before

    def presence_events(self) -> list[Frame]:
        """The last presence events, oldest first."""
        with self._lock:
            return list(self._presence)

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    @contextmanager
    def viewer(self, filters: Sequence[str]) -> Iterator[Viewer]:
        """A viewer for the block; raises :class:`TooManyViewers` when every slot is taken,
        :class:`InvalidFilter` for a bad filter."""
        checked = check_filters(filters)
        with self._lock:
            if self.closed or len(self._viewers) >= self.max_viewers:
                self.refused_viewers += 1
                raise TooManyViewers(
                    f"{len(self._viewers)} live views are open, the most fakeiot serves at once"
                )
            viewer = Viewer(checked, self.queue_size, self._lock)
            self._viewers = [*self._viewers, viewer]
        try:
            yield viewer
        finally:
            with self._lock:
                self._viewers = [v for v in self._viewers if v is not viewer]

    def close(self) -> None:
        """Wake and end every viewer (at shutdown: their HTTP threads then finish)."""
        with self._lock:
            self.closed = True
            for viewer in self._viewers:
                viewer.closed = True
                viewer._ready.notify_all()
