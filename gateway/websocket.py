"""The WebSocket edge: trio-websocket, with every connection's failure contained.

trio-websocket (pinned ``>=0.12,<0.13``) runs each connection in a nursery of
its own: a reader task that feeds wsproto, and our handler.  An exception in
that nursery - from our handler, or raised inside trio-websocket or wsproto -
propagates out of the server's connection task, through
``trio.serve_listeners``, and ends the whole server with every charge point
on it.  Known case (trio-websocket issue 184): a client that answers our
close frame with a Ping makes the reader send a Pong in state
``LOCAL_CLOSING``, which wsproto refuses with ``LocalProtocolError``.

So this module does two things, in the one place that reaches into the
library's private parts (the upstream server has no hook for either):

* :class:`_Connection` ignores Pings once the WebSocket is no longer open
  (RFC 6455 5.5.2: a Pong is owed only while the connection is open), so the
  known case never raises, and it can say when the connection closed without
  taking a message (:meth:`_Connection.wait_closed`); a close whose reader
  task has ended (cancelled with the gateway) does not wait for a reply that
  nobody will read;
* :class:`GatewayWebSocketServer` wraps each connection: whatever escapes it
  is logged with the peer address and costs that one connection only.  The
  handler also gets the raw transport stream, so the edge can read the TLS
  client certificate without reaching into trio-websocket's attributes.

Clients (the simulator, the load generator, the tests) use the same guarded
connection through :func:`wrap_client_stream`: trio-websocket's own client
crashes the same way when the gateway's keepalive Ping crosses its close.

Every wait is bounded: the opening handshake by ``connect_timeout``; the
close handshake after the handler by ``disconnect_timeout``, after which the
TCP connection is aborted.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import Ping

from .accept import BatchListener
from .reuseport import open_listeners

log = logging.getLogger(__name__)

Handler = Callable[[WebSocketRequest, trio.abc.Stream], Awaitable[None]]


class _Connection(WebSocketConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gone = trio.Event()

    async def wait_closed(self) -> None:
        """Return once the WebSocket is closed (by either side, or the TCP connection dropped).

        Waits without taking a message, so it can run beside a task that is
        not reading yet (upstream has no public way to do this).
        """
        await self._gone.wait()

    async def _close_web_socket(self, code: int, reason: str | None = None) -> None:
        self._gone.set()
        await super()._close_web_socket(code, reason)

    async def _reader_task(self) -> None:
        try:
            await super()._reader_task()
        finally:
            # Only this task reads the peer's close reply.  Once it has ended - cancelled with the
            # gateway, or after a protocol error - nobody ever will, and aclose() (which waits for
            # that reply) would otherwise wait out its caller's whole timeout.
            self._close_handshake.set()

    async def _handle_ping_event(self, event: Ping) -> None:
        # Upstream answers every Ping; wsproto refuses to send a Pong once a close frame has been
        # sent or received, and that LocalProtocolError would end the reader task (and, unguarded,
        # the server). Once closing, a Ping needs no answer.
        if self._wsproto.state is ConnectionState.OPEN:
            await super()._handle_ping_event(event)


MessageSink = Callable[[str | bytes], Awaitable[None]]


class _Routed:
    """A server connection's messages, handed on by its reader task (replaces the message channel).

    Until :meth:`_ServerConnection.route_messages` names the sink, the
    reader waits at the first message (as it would on a full channel); once
    the connection is closing, messages are dropped.
    """

    __slots__ = ("discarding", "ready", "sink")

    def __init__(self) -> None:
        self.sink: MessageSink | None = None
        self.ready: trio.Event | None = trio.Event()
        self.discarding = False

    async def send(self, message: str | bytes) -> None:
        if self.sink is None and self.ready is not None:
            await self.ready.wait()
        if self.sink is not None and not self.discarding:
            await self.sink(message)

    def release(self) -> None:
        if self.ready is not None:
            self.ready.set()
            self.ready = None  # nobody waits on it again

    # The parts of a channel the reader and the close path use.
    def close(self) -> None:
        self.discarding = True
        self.release()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> _Routed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def receive_nowait(self) -> str | bytes:
        raise trio.EndOfChannel  # server connections route their messages; nothing is queued

    async def receive(self) -> str | bytes:
        raise trio.EndOfChannel


class _Shed:
    """Stands in for what an open server connection no longer uses (the opening handshake's h11
    state, an event only trio-websocket's own tests wait on): about 2 KiB per CP."""

    __slots__ = ()

    def events(self) -> tuple[()]:  # wsproto asks the handshake for events on every read
        return ()

    def set(self) -> None:
        pass


_SHED = _Shed()


class _ServerConnection(_Connection):
    """A server connection whose reader task hands each message to a sink: no queue, no extra task.

    trio-websocket queues each message in a memory channel for a task
    calling ``get_message()``; the gateway instead forwards each frame to
    MQTT in the reader task itself (:meth:`route_messages`), which saves a
    task, a channel and a task switch per message.  A handler that calls
    ``get_message()`` instead gets upstream's behaviour: the first call
    routes the messages into a one-message channel.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._routed = _Routed()
        self._send_channel = self._recv_channel = self._routed  # type: ignore[assignment]
        self._on_closed: Callable[[], None] | None = None
        self._reader_done = False
        self._queue: trio.MemoryReceiveChannel[str | bytes] | None = None
        self._for_testing_peer_closed_connection = _SHED  # type: ignore[assignment]

    def route_messages(self, sink: MessageSink, on_closed: Callable[[], None]) -> None:
        """From now on each complete message goes to ``sink`` (awaited in the reader task), and
        ``on_closed()`` is called once the connection has closed (at once if it already has).

        ``sink`` must not raise: it handles its own errors.
        """
        if self._wsproto.connection is not None:  # open: the handshake's state is never read again
            self._wsproto.handshake = _SHED  # type: ignore[assignment]
        self._routed.sink = sink
        self._routed.release()
        self._on_closed = on_closed
        if self._reader_done:
            on_closed()

    async def get_message(self) -> str | bytes:
        if self._queue is None:
            if self._routed.sink is not None:
                raise RuntimeError("this connection's messages are routed to a sink")
            send, self._queue = trio.open_memory_channel[str | bytes](1)
            self.route_messages(send.send, send.close)
        try:
            return await self._queue.receive()
        except (trio.ClosedResourceError, trio.EndOfChannel):
            raise ConnectionClosed(self._close_reason) from None

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        self._routed.close()  # nothing more is forwarded, and a waiting reader goes on reading
        await super().aclose(code, reason)

    async def _reader_task(self) -> None:
        try:
            await super()._reader_task()
        finally:
            self._reader_done = True
            self._routed.close()
            if self._on_closed is not None:
                self._on_closed()


class GatewayWebSocketServer(WebSocketServer):
    """A :class:`trio_websocket.WebSocketServer` whose connections cannot end it.

    ``handler(request, stream)`` is called once the opening handshake's
    request has arrived; ``stream`` is the connection's transport (a
    :class:`trio.SSLStream` for ``wss://``).
    """

    def __init__(
        self,
        handler: Handler,
        listeners: Sequence[BatchListener | trio.SSLListener[trio.SocketStream]],
        *,
        max_message_size: int,
        connect_timeout: float,
        disconnect_timeout: float,
    ) -> None:
        super().__init__(
            self._unused_handler,
            # Typed for trio's own listeners; it only calls accept() and aclose(), which any has.
            listeners,  # type: ignore[arg-type]
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            disconnect_timeout=disconnect_timeout,
        )
        self._gateway_handler = handler
        self.contained_errors = 0  # connections ended by an error that escaped them

    @property
    def listeners(self) -> list[Endpoint | str]:
        """trio-websocket's, knowing this gateway's listeners (:class:`.accept.BatchListener`)."""
        found: list[Endpoint | str] = []
        for listener in self._listeners:
            transport = (
                listener.transport_listener if isinstance(listener, trio.SSLListener) else listener
            )
            if isinstance(transport, BatchListener):
                host, port = transport.socket.getsockname()[:2]
                found.append(Endpoint(host, port, isinstance(listener, trio.SSLListener)))
            else:
                found.append(repr(listener))
        return found

    @staticmethod
    async def _unused_handler(request: WebSocketRequest) -> None:  # pragma: no cover - never called
        raise AssertionError("GatewayWebSocketServer calls its own handler")

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        # trio.serve_listeners closes ``stream`` (aclose_forcefully) after this returns, whatever happens.
        # One frame (this one) lives as long as the connection, and it holds no reference to the
        # upgrade request once the handler has it.
        try:
            async with trio.open_nursery() as nursery:
                connection = _ServerConnection(
                    stream,
                    WSConnection(ConnectionType.SERVER),
                    max_message_size=self._max_message_size,
                    receive_buffer_size=self._receive_buffer_size,
                )
                nursery.start_soon(connection._reader_task)
                with trio.move_on_after(self._connect_timeout) as handshake:
                    request = await connection._get_request()
                if handshake.cancelled_caught:
                    nursery.cancel_scope.cancel()
                    return
                handling = self._gateway_handler(request, stream)
                del request
                try:
                    await handling
                finally:
                    # Bounded: a client that never answers our close frame loses its TCP connection.
                    with trio.move_on_after(self._disconnect_timeout):
                        await connection.aclose()
                    nursery.cancel_scope.cancel()
        except* Exception as group:
            self.contained_errors += 1
            log.warning(
                "connection from %s ended by an error (contained, the server goes on): %r",
                _peer_of(stream),
                group.exceptions[0],
                exc_info=log.isEnabledFor(logging.DEBUG),
            )


async def wrap_client_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: list[str] | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = 2**20,
) -> WebSocketConnection:
    """Open a client WebSocket over ``stream`` (as trio-websocket's function of that name, guarded)."""
    connection = _Connection(
        stream,
        WSConnection(ConnectionType.CLIENT),
        host=host,
        path=resource,
        client_subprotocols=subprotocols,
        client_extra_headers=extra_headers,
        max_message_size=max_message_size,
    )
    nursery.start_soon(connection._reader_task)
    await connection._open_handshake.wait()
    return connection


def _peer_of(stream: trio.abc.Stream) -> str:
    transport = getattr(stream, "transport_stream", stream)
    sock = getattr(transport, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", "?")
    except OSError:
        return "?"
    return f"{host}:{port}"


def peer_host(stream: trio.abc.Stream) -> str:
    """The client's address (behind a TCP balancer without client-IP preservation: the balancer's)."""
    return _peer_of(stream).rpartition(":")[0] or "?"


def peer_certificate(stream: trio.abc.Stream) -> bytes | None:
    """The verified client certificate (DER) of a ``wss://`` connection, if it sent one."""
    if isinstance(stream, trio.SSLStream):
        der = stream.getpeercert(binary_form=True)
        return bytes(der) if der else None
    return None


async def serve(
    handler: Handler,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    max_message_size: int,
    connect_timeout: float,
    disconnect_timeout: float,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[GatewayWebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (``wss://`` with ``ssl_context``) until cancelled.

    ``reuse_port``: share the port with the other workers of this gateway (gateway/reuseport.py).
    """
    listeners = open_listeners(host, port, ssl_context, reuse_port=reuse_port)
    server = GatewayWebSocketServer(
        handler,
        listeners,
        max_message_size=max_message_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
    )
    # started() reports the server itself: a GatewayWebSocketServer, typed by trio-websocket as its base.
    await server.run(task_status=task_status)  # type: ignore[arg-type]
