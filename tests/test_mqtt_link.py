"""The Trio-driven paho links under concurrency: no lost wake-ups, no deadlock."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
import trio

from fakeiot import FakeIot
from gateway.errors import MqttConnectError, MqttConnectionLost
from gateway.mqtt_link import MqttSettings, open_mqtt_driver

from .conftest import backend_settings, device_settings


async def test_many_concurrent_publishers_share_a_small_inflight_window(fakeiot: FakeIot) -> None:
    async with open_mqtt_driver(replace(backend_settings(fakeiot), max_inflight=2)) as driver:
        async with driver.link("backend:rx") as rx, driver.link("backend:tx") as tx:
            await rx.subscribe("load/in")
            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(tx.publish, "load/in", str(i).encode())
            got = set()
            with trio.fail_after(20):
                while len(got) < 100:
                    got.add((await rx.receive())[1])
    assert got == {str(i).encode() for i in range(100)}


async def test_request_reply_burst_does_not_deadlock(fakeiot: FakeIot) -> None:
    """The processor's shape: receive a burst, answer each from its own task."""
    n = 300
    async with open_mqtt_driver(replace(backend_settings(fakeiot), max_inflight=4)) as driver:
        async with driver.link("backend:server") as server, driver.link("backend:client") as client:
            await server.subscribe("req")
            await client.subscribe("rep")

            async def serve() -> None:
                async with trio.open_nursery() as nursery:
                    for _ in range(n):
                        _, payload = await server.receive()
                        nursery.start_soon(server.publish, "rep", payload)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                for i in range(n):
                    await client.publish("req", str(i).encode())
                replies = set()
                with trio.fail_after(30):
                    while len(replies) < n:
                        replies.add((await client.receive())[1])
    assert len(replies) == n


async def test_unreachable_broker_is_a_clear_connect_error() -> None:
    with socket.socket() as closed:
        # Bound and never listening: held by this test (no other program can listen there), and
        # every connection to it is refused.
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        async with open_mqtt_driver(MqttSettings(port=port, connect_timeout=2)) as driver:
            with pytest.raises(
                MqttConnectError, match=f"cannot reach MQTT broker 127.0.0.1:{port}"
            ):
                async with driver.link("CP1"):
                    pass


async def test_receive_raises_once_the_broker_is_gone(tmp_path: object) -> None:
    from pathlib import Path

    from fakeiot import FakeIotConfig, running_fakeiot

    async with running_fakeiot(
        FakeIotConfig(mqtt_port=0, api_port=0, data_dir=Path(str(tmp_path)))
    ) as iot:
        driver_cm = open_mqtt_driver(device_settings(iot))
        driver = await driver_cm.__aenter__()
        link_cm = driver.link("CP1")
        link = await link_cm.__aenter__()
    try:
        with trio.fail_after(10), pytest.raises(MqttConnectionLost):
            await link.receive()
        with pytest.raises(MqttConnectionLost):
            await link.publish("CP1/in", b"x")
    finally:
        await link_cm.__aexit__(None, None, None)
        await driver_cm.__aexit__(None, None, None)


async def test_messages_published_just_before_leaving_are_delivered(fakeiot: FakeIot) -> None:
    """A link that publishes and leaves at once waits for its PUBACKs before DISCONNECT (bounded)."""
    async with open_mqtt_driver(backend_settings(fakeiot)) as driver:
        async with driver.link("test:listener") as listener:
            await listener.subscribe("burst/+", 1)
            for round_ in range(5):
                async with driver.link("test:leaver") as leaver:
                    for i in range(10):
                        await leaver.publish(f"burst/{round_}", str(i).encode())
                # the leaver is gone; everything it published arrives
                with trio.fail_after(5):
                    got = [await listener.receive() for _ in range(10)]
                assert [p for _, p in got] == [str(i).encode() for i in range(10)]


async def test_publishes_larger_than_the_socket_buffer_are_written_once_it_drains() -> None:
    """A broker that stops reading fills the socket: the link starts a writer task that waits for room
    and then writes the rest, in order, without the caller blocking or anything being dropped."""
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        await _fill_and_drain(listener)


async def _fill_and_drain(listener: trio.socket.SocketType) -> None:
    port = listener.getsockname()[1]
    payload_size, count = 256 * 1024, 40
    received = bytearray()
    resume = trio.Event()
    drained = trio.Event()

    async def broker() -> None:
        conn, _ = await listener.accept()
        with conn:
            await conn.recv(1024)  # CONNECT
            await conn.send(b"\x20\x02\x00\x00")  # CONNACK, accepted
            await resume.wait()  # meanwhile the client's socket buffer fills up
            while len(received) < payload_size * count:
                chunk = await conn.recv(1 << 20)
                if not chunk:
                    break
                received.extend(chunk)
        drained.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(broker)
        async with open_mqtt_driver(MqttSettings(port=port, connect_rate=0)) as driver:
            async with driver.link("CP-big") as link:
                for i in range(count):
                    await link.publish("CP-big/in", bytes([65 + i % 26]) * payload_size, qos=0)
                assert link._client.want_write(), (
                    "the test needs more data than the socket buffers hold"
                )
                assert link._writer_running
                resume.set()
                with trio.fail_after(20):
                    await drained.wait()
    # Every payload arrived, in order, after its PUBLISH header.
    position = 0
    for i in range(count):
        position = received.index(bytes([65 + i % 26]) * payload_size, position) + payload_size
    assert position <= len(received)


async def test_links_turn_off_nagle(fakeiot: FakeIot) -> None:
    """With Nagle on, a PUBACK followed by a PUBLISH waits for the broker's delayed ACK (~40 ms):
    every MQTT socket the gateway and the processor open sets TCP_NODELAY."""
    import socket

    async with open_mqtt_driver(backend_settings(fakeiot)) as driver:
        async with driver.link("backend:nodelay") as link:
            assert link._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_a_failed_tls_handshake_leaves_no_socket_open() -> None:
    """paho drops the socket of a TLS handshake that failed without closing it (a ResourceWarning once
    collected, an error under this suite's filterwarnings): the link's client closes it."""
    import gc
    import ssl
    import warnings

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    async def not_a_tls_server() -> None:
        while True:
            conn, _ = await listener.accept()
            with conn:
                await conn.send(
                    b"HTTP/1.0 400 Bad Request\r\n\r\n"
                )  # no ServerHello: the handshake fails

    settings = MqttSettings(
        port=port, ssl_context=ssl.create_default_context(), connect_timeout=5, connect_rate=0
    )
    with listener, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(not_a_tls_server)
            async with open_mqtt_driver(settings) as driver:
                for n in range(3):
                    with pytest.raises(MqttConnectError, match="cannot reach MQTT broker"):
                        async with driver.link(f"CP{n}"):
                            pass
            nursery.cancel_scope.cancel()
        gc.collect()
    assert [
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning) and "SSLSocket" in str(w.message)
    ] == []


async def test_a_broker_that_never_answers_subscribe_ends_the_link_not_the_caller() -> None:
    """A SUBACK that never comes is a lost connection (MqttConnectionLost), never a bare TooSlowError that
    a caller catching MQTT errors would let through (the registry watch ended the gateway that way)."""
    from gateway.errors import MqttConnectionLost

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    async def connack_only() -> None:
        conn, _ = await listener.accept()
        with conn:
            await conn.recv(1024)  # CONNECT
            await conn.send(b"\x20\x02\x00\x00")  # CONNACK accepted ... and nothing more, ever
            await trio.sleep_forever()

    settings = MqttSettings(port=port, connect_timeout=0.5, connect_rate=0)
    with listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connack_only)
            async with open_mqtt_driver(settings) as driver:
                with pytest.raises(MqttConnectionLost, match="no SUBACK"):
                    try:
                        async with driver.link("CP1") as link:
                            await link.subscribe("CP1/out", 1)
                    except BaseExceptionGroup as group:
                        raise group.exceptions[0] from None
            nursery.cancel_scope.cancel()


async def test_messages_the_gateway_queues_itself_count_against_the_backlog(
    fakeiot: FakeIot,
) -> None:
    """Answers the gateway gives in the CSMS's place (``deliver_local``) are bounded like the broker's."""
    settings = replace(backend_settings(fakeiot), max_backlog_bytes=1000)
    async with open_mqtt_driver(settings) as driver, driver.link("test:local") as link:
        for _ in range(3):  # 900 bytes: within the bound, nothing taken yet
            link.deliver_local("$gateway/local", b"x" * 300)
        assert link.connected and not link.backlog_exceeded
        link.deliver_local("$gateway/local", b"x" * 300)  # 1200 bytes not taken
        assert link.backlog_exceeded and not link.connected
        with pytest.raises(MqttConnectionLost):
            await link.receive()


async def test_pubacks_free_the_inflight_window_and_a_malformed_one_ends_the_link() -> None:
    """The gateway's own PUBACK handling (gateway/mqtt_paho.py): a PUBACK frees its message's place
    in the in-flight window, one for an id never published is ignored, and one of the wrong size
    is a protocol error that ends the link (MqttConnectionLost), as paho's own handling does."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    published: list[bytes] = []
    third_seen = trio.Event()

    async def broker() -> None:
        conn, _ = await listener.accept()
        with conn:
            await conn.recv(1024)  # CONNECT
            await conn.send(b"\x20\x02\x00\x00")  # CONNACK, accepted
            buffer = b""
            while len(published) < 3:
                buffer += await conn.recv(4096)
                while len(buffer) >= 2 and len(buffer) >= 2 + buffer[1]:
                    packet, buffer = buffer[: 2 + buffer[1]], buffer[2 + buffer[1] :]
                    assert packet[0] == 0x32  # PUBLISH, QoS 1
                    published.append(packet)
                    topic_len = int.from_bytes(packet[2:4], "big")
                    packet_id = packet[4 + topic_len : 6 + topic_len]
                    if len(published) == 1:
                        await conn.send(b"\x40\x02\x7f\x7f")  # a PUBACK for an id never used
                    if len(published) < 3:
                        await conn.send(b"\x40\x02" + packet_id)
            third_seen.set()
            await conn.send(b"\x40\x03\x00\x03\x00")  # a PUBACK 3 bytes long: malformed
            await trio.sleep(5)

    settings = MqttSettings(port=port, connect_rate=0, max_inflight=1)
    with listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker)
            async with open_mqtt_driver(settings) as driver:
                with pytest.raises(MqttConnectionLost):
                    try:
                        async with driver.link("CP-ack") as link:
                            with trio.fail_after(5):
                                for i in range(3):  # each waits for the PUBACK of the one before
                                    await link.publish("CP-ack/in", b"m%d" % i)
                                assert link._unacked and len(link._unacked) == 1
                                await third_seen.wait()
                                await link.wait_closed()
                            assert "lost" in (link.close_reason or "")
                            await link.publish("CP-ack/in", b"after")  # the link is gone
                    except BaseExceptionGroup as group:
                        raise group.exceptions[0] from None
            nursery.cancel_scope.cancel()
    assert [p.split(b"CP-ack/in")[1][2:] for p in published] == [b"m0", b"m1", b"m2"]
