"""Listening sockets that the worker processes of one gateway share (``--workers N``).

Every worker opens its own listening socket on the same address and port with
``SO_REUSEPORT``: Linux then spreads new connections over the listening
sockets of that group by a hash of each connection's addresses and ports, and
a worker that exits takes only its own queue of not-yet-accepted connections
with it.  The sockets of one group must all set the option before binding and
belong to the same user.

The supervisor binds one socket of the group first, without listening on it
(:func:`reserve_port`): that picks the port when ``--port 0`` is given, reports
a port that another program holds before any worker starts, and keeps the port
while workers restart.  A socket that does not listen receives no connection.

trio's ``open_tcp_listeners`` has no way to set the option, so the sockets are
built here as it builds them (``SO_REUSEADDR``, ``IPV6_V6ONLY``, one socket per
address the host name resolves to) and wrapped in :class:`trio.SocketListener`.
"""

from __future__ import annotations

import socket
import ssl

import trio

from .accept import BatchListener

# As trio's open_tcp_listeners: the kernel caps it at net.core.somaxconn.
BACKLOG = 0xFFFF

Address = tuple[int, int, tuple[object, ...]]  # family, protocol, socket address


def addresses(host: str, port: int) -> list[Address]:
    """Where to bind ``host:port`` (an empty host or 0.0.0.0/:: : every address of that kind)."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    unique: list[Address] = []
    for family, _, proto, _, sockaddr in found:
        entry = (int(family), proto, tuple(sockaddr))
        if entry not in unique:
            unique.append(entry)
    return unique


def bound_socket(address: Address, port: int, *, reuse_port: bool = True) -> socket.socket:
    """A TCP socket bound to ``address`` at ``port``; in the port's SO_REUSEPORT group with ``reuse_port``."""
    family, proto, sockaddr = address
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((sockaddr[0], port, *sockaddr[2:]))
    except BaseException:
        sock.close()
        raise
    return sock


def reserve_port(host: str, port: int) -> list[socket.socket]:
    """Bind (without listening) one socket per address of ``host``; all at one port.

    With ``port`` 0 the first address's socket picks the port and the others take the same.
    The caller closes the sockets; :func:`port_of` reads the port back.
    """
    sockets: list[socket.socket] = []
    try:
        for address in addresses(host, port):
            sockets.append(bound_socket(address, port_of(sockets) if sockets else port))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def port_of(sockets: list[socket.socket]) -> int:
    return int(sockets[0].getsockname()[1])


def open_listeners(
    host: str, port: int, ssl_context: ssl.SSLContext | None, *, reuse_port: bool = True
) -> list[BatchListener] | list[trio.SSLListener[trio.SocketStream]]:
    """Listeners on ``host:port`` (``wss://`` with ``ssl_context``), in its SO_REUSEPORT group with ``reuse_port``.

    One per address of ``host``, all on one port (with ``port`` 0, the one the first picks).
    Each accepts what is waiting in batches (:mod:`.accept`).
    """
    plain: list[BatchListener] = []
    bound: list[socket.socket] = []
    try:
        for address in addresses(host, port):
            sock = bound_socket(address, port_of(bound) if bound else port, reuse_port=reuse_port)
            bound.append(sock)
            sock.listen(BACKLOG)
            plain.append(BatchListener(sock))
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    if ssl_context is None:
        return plain
    return [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in plain]
