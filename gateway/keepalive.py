"""WebSocket keepalive pings for every bridged charge point, from one task per process.

Each connected CP is pinged every ``ping_interval`` seconds; one that does
not answer within ``pong_timeout`` is closed (1011, :func:`.pumps.ping`).
Rather than a sleeping task per CP, :class:`Keepalive` keeps the sessions in
one queue ordered by when their next ping is due (all share the interval,
so arrival order is due order) and starts a short-lived task per ping, which
lives only until the pong arrives.
"""

from __future__ import annotations

from collections import deque

import trio

from .local_sessions import ChargePointSession
from .pumps import ping


class Keepalive:
    """Pings every session :meth:`add`-ed to it, until the session has ended."""

    def __init__(self, interval: float, pong_timeout: float) -> None:
        self.interval = interval
        self.pong_timeout = pong_timeout
        self._queue: deque[ChargePointSession] = deque()

    def add(self, session: ChargePointSession) -> None:
        """Ping ``session`` every ``interval`` from now on (while ``session.ws`` is set)."""
        if self.interval > 0:
            session.ping_due = trio.current_time() + self.interval
            self._queue.append(session)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            if self.interval <= 0:
                return
            tick = min(1.0, self.interval / 4)
            queue = self._queue
            while True:
                await trio.sleep(tick)
                now = trio.current_time()
                while queue and queue[0].ping_due <= now:
                    session = queue.popleft()
                    ws = session.ws
                    if ws is None or session.ending.code is not None:
                        continue  # it has ended: dropped from the queue
                    nursery.start_soon(ping, ws, session, self.pong_timeout, name="ws ping")
                    session.ping_due = now + self.interval
                    queue.append(session)
