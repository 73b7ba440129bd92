"""How a link opens its connection: Trio's TCP (no worker thread), TLS in a thread, every wait bounded."""

from __future__ import annotations

import ssl
import time

import pytest
import trio

from fakeiot import FakeIot
from gateway.errors import MqttConnectError
from gateway.mqtt_link import MqttSettings, open_mqtt_driver

from .conftest import backend_settings


async def test_a_plain_tcp_link_connects_and_forwards_without_a_worker_thread(
    fakeiot: FakeIot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load every step of a worker thread waits for the GIL: a plain connect takes none."""

    def no_thread(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker thread was used to connect")

    async with open_mqtt_driver(backend_settings(fakeiot)) as driver:
        with (
            monkeypatch.context() as patched
        ):  # fakeiot itself stops in a thread: only around the links
            patched.setattr(trio.to_thread, "run_sync", no_thread)
            async with driver.link("backend:a") as a, driver.link("backend:b") as b:
                await b.subscribe("connect/test")
                await a.publish("connect/test", b"over a thread-free connection")
                with trio.fail_after(10):
                    assert await b.receive() == ("connect/test", b"over a thread-free connection")


async def test_a_refused_connect_says_where_and_why() -> None:
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the kernel refuses
    settings = MqttSettings(port=port, connect_timeout=5, connect_rate=0)
    async with open_mqtt_driver(settings) as driver:
        with pytest.raises(
            MqttConnectError, match=rf"cannot reach MQTT broker 127\.0\.0\.1:{port}: .*[Rr]efused"
        ):
            async with driver.link("CP1"):
                pass


async def test_a_tls_broker_that_never_answers_the_handshake_is_given_up_in_time() -> None:
    """A listener that takes the ClientHello and says nothing: the handshake (in a worker thread) is
    bounded by connect_timeout, and the link reports it as a connect failure."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    held: list[trio.socket.SocketType] = []

    async def silent_server() -> None:
        while True:
            conn, _ = await listener.accept()
            held.append(conn)  # read nothing, answer nothing

    settings = MqttSettings(
        port=port, ssl_context=ssl.create_default_context(), connect_timeout=0.5, connect_rate=0
    )
    with listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(silent_server)
            async with open_mqtt_driver(settings) as driver:
                started = time.monotonic()
                with (
                    trio.fail_after(10),
                    pytest.raises(MqttConnectError, match="cannot reach MQTT broker"),
                ):
                    async with driver.link("CP1"):
                        pass
                assert time.monotonic() - started < 5
            nursery.cancel_scope.cancel()
        for conn in held:
            conn.close()
