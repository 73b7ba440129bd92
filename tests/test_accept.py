"""The gateway's listener takes every connection waiting when it wakes up, not one per scheduler pass."""

from __future__ import annotations

import socket

import trio

from gateway.accept import ACCEPT_BATCH, BatchListener


def _listening() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    return sock, sock.getsockname()[1]


async def _clients(port: int, n: int) -> list[trio.SocketStream]:
    # A TCP connect completes once the kernel queues the connection: all n wait to be accepted.
    return [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(n)]


async def test_connections_waiting_together_are_taken_at_one_wake_up_each_to_its_own_stream() -> (
    None
):
    sock, port = _listening()
    listener = BatchListener(sock)
    clients = await _clients(port, 10)
    try:
        first = await listener.accept()
        assert listener.taken == 9  # the other nine, without waiting again
        streams = [first] + [await listener.accept() for _ in range(9)]
        assert listener.taken == 0
        for i, client in enumerate(clients):
            await client.send_all(bytes([i]))
        with trio.fail_after(5):
            got = sorted([(await stream.receive_some(1))[0] for stream in streams])
        assert got == list(range(10))
        for stream in streams:
            await stream.aclose()
    finally:
        await listener.aclose()
        for client in clients:
            await client.aclose()


async def test_one_wake_up_takes_at_most_a_batch() -> None:
    sock, port = _listening()
    listener = BatchListener(sock)
    clients = await _clients(port, ACCEPT_BATCH + 6)
    try:
        first = await listener.accept()
        assert listener.taken == ACCEPT_BATCH
        await first.aclose()
    finally:
        await listener.aclose()
        for client in clients:
            await client.aclose()


async def test_closing_the_listener_closes_what_it_took_and_did_not_hand_out() -> None:
    sock, port = _listening()
    listener = BatchListener(sock)
    clients = await _clients(port, 3)
    try:
        first = await listener.accept()
        assert listener.taken == 2
        await listener.aclose()
        with trio.fail_after(5):
            for client in clients[1:]:
                assert await client.receive_some(1) == b""  # closed by the gateway's side
        await first.send_all(b"x")  # the one handed out is the caller's, still open
        assert await clients[0].receive_some(1) == b"x"
        await first.aclose()
    finally:
        for client in clients:
            await client.aclose()
