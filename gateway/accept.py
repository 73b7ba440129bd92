"""Accepting connections in batches, so that new charge points get in while others load the loop.

trio's :class:`trio.SocketListener` accepts one connection per call, and
each call is a checkpoint: ``trio.serve_listeners`` then takes one new
connection per pass of the scheduler.  While connected CPs keep the event
loop busy, a pass takes milliseconds, and new CPs wait in the kernel's
backlog (``scripts/bench.py``'s connect rate while loaded; asyncio's
selector loop, the AWS sample's, accepts up to 100 connections per
wake-up).

:class:`BatchListener` does what asyncio does: once :meth:`~BatchListener.accept`
has waited for a connection, it takes up to :data:`ACCEPT_BATCH` more that
are already waiting (non-blocking ``accept()``, no wait), and hands them out
on the next calls without waiting again.  What the gateway admits stays
bounded where it was: ``--max-connections``, the pending bound of admission
and the MQTT connect rate.
"""

from __future__ import annotations

import socket
from collections import deque

import trio

ACCEPT_BATCH = (
    64  # connections taken per wake-up beyond the first (asyncio: its listen backlog, 100)
)


class BatchListener(trio.abc.Listener[trio.SocketStream]):
    """trio's :class:`trio.SocketListener` on a listening stdlib socket, taking what waits at once."""

    def __init__(self, sock: socket.socket) -> None:
        self._listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self._listening = sock  # the same socket, non-blocking (from_stdlib_socket made it so)
        self._taken: deque[socket.socket] = deque()

    @property
    def socket(self) -> trio.socket.SocketType:
        """The listening socket, as :attr:`trio.SocketListener.socket`."""
        return self._listener.socket

    async def accept(self) -> trio.SocketStream:
        """The next connection: one already taken, else the next to arrive (and those behind it)."""
        if self._taken:
            return trio.SocketStream(trio.socket.from_stdlib_socket(self._taken.popleft()))
        stream = await self._listener.accept()
        self._take_waiting()
        return stream

    def _take_waiting(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._listening.accept()
            except OSError:
                # Nothing waiting (BlockingIOError), or an error that trio's accept, which handles
                # and reports each kind, meets again on the next call.
                return
            self._taken.append(conn)

    async def aclose(self) -> None:
        """Close the listening socket and the connections taken and not handed out yet."""
        while self._taken:
            self._taken.popleft().close()
        await self._listener.aclose()

    @property
    def taken(self) -> int:
        """Connections accepted from the kernel and not handed out yet (at most ACCEPT_BATCH)."""
        return len(self._taken)
