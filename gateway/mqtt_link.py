"""paho-mqtt clients driven by Trio: many MQTT connections, no thread per client.

paho's own ``loop_start()`` runs one thread per client and uses ``select()``,
which breaks past file descriptor 1024 (about 340 clients).  Here paho runs in
its *external loop* mode instead:

* the TCP connection is Trio's (``trio.open_tcp_stream``; a worker thread
  only to resolve a host name) and paho is handed the socket: paho's own
  blocking ``connect()`` would take a worker thread per connect, and under
  load every step of a thread waits for the GIL; only the TLS handshake runs
  in a worker thread, so that OpenSSL's work does not hold up the loop; at
  most ``max_concurrent_connects`` connections are being opened at a time;
* once connected, one small Trio task per client waits until its socket is
  readable and calls ``loop_read()``; what paho queues is written at once
  (``loop_write()``), and only while a socket is full does a second task wait
  until it is writable;
* one :class:`MqttDriver` task per process calls ``loop_misc()`` on every
  client once a second (keepalive PINGREQs, PINGRESP time-outs), yielding to
  other tasks every ``TICK_SLICE`` clients.

paho's callbacks therefore always run in the Trio thread, inside
``loop_read()``/``loop_write()``/``loop_misc()``: this is the single bridge
between paho and Trio.  Callbacks only record what happened (append a
message, set an event); the tasks do the awaiting.

Backpressure: QoS 1 messages are acknowledged (PUBACK) only when
:meth:`MqttLink.receive` hands them to the consumer (paho's manual acks), so
the broker's in-flight window (Mosquitto: ``max_inflight_messages``, AWS IoT:
100) bounds what waits in the link, while the socket is always read (a
reader that stopped reading would also stop seeing PUBACKs and deadlock the
publishers).  :meth:`MqttLink.publish` waits while ``max_inflight`` QoS 1
messages it sent are unacknowledged.

A consumer that must not lose what it has taken (the message processor)
calls ``receive(ack=False)`` and acknowledges each :class:`Delivery` with
:meth:`MqttLink.ack` once it is done with it; until then the broker counts it
in the window, and a persistent session gives it again to the next
connection with the same client id should this one end first.

Layout: this module holds the settings and the process-wide
:class:`MqttDriver` (and re-exports the rest); :mod:`.mqtt_connection` one
connection, :class:`MqttLink`; :mod:`.mqtt_paho` the paho client it drives.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from .config_options import GatewayConfig
from .errors import MqttConnectError
from .histogram import FixedHistogram
from .mqtt_connection import FLUSH_TIMEOUT, Delivery, MqttLink
from .ratelimit import Pacer

__all__ = [
    "FLUSH_TIMEOUT",
    "TICK_SLICE",
    "Delivery",
    "MqttDriver",
    "MqttLink",
    "MqttSettings",
    "open_mqtt_driver",
]

TICK_SLICE = 200  # links whose keepalive the ticker checks between two checkpoints


@dataclass(frozen=True)
class MqttSettings:
    """Where and how MQTT connections are made."""

    host: str = "127.0.0.1"
    # The defaults of the options (gateway/config.py declares them once).
    port: int = GatewayConfig.mqtt_port
    keepalive: int = GatewayConfig.mqtt_keepalive
    connect_timeout: float = 10.0
    max_inflight: int = 20
    ssl_context: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_rate: float = (
        GatewayConfig.mqtt_connect_rate
    )  # new connections per second (0: unlimited)
    connect_burst: int = GatewayConfig.mqtt_connect_burst
    connect_max_wait: float = GatewayConfig.mqtt_connect_max_wait  # not admitted this soon: fails
    # Bytes received and not yet taken by the consumer; beyond it the link ends (MqttBacklogExceeded), so a
    # consumer that stops (a CP that does not read its socket) cannot grow memory whatever the broker sends.
    max_backlog_bytes: int = GatewayConfig.max_backlog_bytes


class MqttDriver:
    """Process-wide part of the MQTT side: the keepalive ticker and limits.

    Create it with :func:`open_mqtt_driver`; links register with it while
    they are connected.
    """

    def __init__(self, settings: MqttSettings, *, max_concurrent_connects: int = 256) -> None:
        self.settings = settings
        self.connect_limiter = trio.CapacityLimiter(max_concurrent_connects)
        self._pacer = Pacer(
            settings.connect_rate, max(1, settings.connect_burst), settings.connect_max_wait
        )
        self._links: set[MqttLink] = set()
        # Plain counters for :mod:`.metrics`.
        self.admission_waits = 0  # connections that had to wait for the connect rate
        self.admission_refusals = 0  # not admitted within connect_max_wait
        self.waiting = 0  # waiting for their turn now (the connect pacer's queue)
        self.connect_failures = 0  # the broker could not be reached or refused
        self.last_connect_failed = False  # the latest connect attempt failed
        self.connect_seconds = FixedHistogram()  # successful connects: TCP, TLS, CONNECT/CONNACK

    async def admit(self, client_id: str) -> None:
        """Wait for this process's turn to open one more MQTT connection.

        Raises :class:`MqttConnectError` when the wait would exceed
        ``connect_max_wait``.  A caller cancelled while it waits gives its
        slot back at once, to the next one in line.
        """
        now = trio.current_time()
        wait = self._pacer.reserve(now)
        if wait is None:
            self.admission_refusals += 1
            raise MqttConnectError(
                f"MQTT connect rate limit ({self.settings.connect_rate:g}/s): {client_id!r} not admitted within "
                f"{self.settings.connect_max_wait:g} s"
            )
        if wait > 0:
            self.admission_waits += 1
            self.waiting += 1
            try:
                await trio.sleep(wait)
            except BaseException:
                self._pacer.release(now + wait, trio.current_time())
                raise
            finally:
                self.waiting -= 1

    @property
    def link_count(self) -> int:
        return len(self._links)

    async def _tick(self) -> None:
        # With 10,000 links one sweep takes tens of milliseconds: let other tasks run every
        # TICK_SLICE links, so that no CP's frame waits for the whole sweep.
        while True:
            await trio.sleep(1.0)
            for n, link in enumerate(list(self._links), 1):
                link._misc()
                if n % TICK_SLICE == 0:
                    await trio.lowlevel.checkpoint()

    @asynccontextmanager
    async def link(
        self, client_id: str, *, clean_session: bool = True, admitted: bool = False
    ) -> AsyncIterator[MqttLink]:
        """Connect one MQTT client; it is disconnected when the block exits.

        Waits for :meth:`admit` first unless the caller already did
        (``admitted``).  Raises :class:`MqttConnectError` if the broker cannot
        be reached or refuses the connection.
        """
        if not admitted:
            await self.admit(client_id)
        link = MqttLink(self, client_id, clean_session=clean_session)
        started = trio.current_time()
        try:
            await link._connect()
        except MqttConnectError:
            self.connect_failures += 1
            self.last_connect_failed = True
            raise
        self.last_connect_failed = False
        self.connect_seconds.observe(trio.current_time() - started)
        self._links.add(link)
        try:
            async with trio.open_nursery() as nursery:
                link._nursery = nursery
                nursery.start_soon(link._reader, name="mqtt reader")
                try:
                    yield link
                finally:
                    link._nursery = None
                    nursery.cancel_scope.cancel()
        finally:
            # The reader and writer have stopped: flush and disconnect by ourselves, even when cancelled.
            with trio.CancelScope(shield=True):
                await link._disconnect()
            self._links.discard(link)
            link._close_socket("disconnected by the gateway")


@asynccontextmanager
async def open_mqtt_driver(settings: MqttSettings) -> AsyncIterator[MqttDriver]:
    driver = MqttDriver(settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver._tick)
        try:
            yield driver
        finally:
            nursery.cancel_scope.cancel()
