"""fakeiot's broker ends connections and keeps persistent sessions the way AWS IoT does (raw MQTT)."""

from __future__ import annotations

import json

import trio

from fakeiot import FakeIot

from .test_fakeiot_limits import publish_packet, raw_client


async def test_a_persistent_session_gets_its_unacknowledged_messages_again(
    fakeiot: FakeIot,
) -> None:
    with trio.fail_after(20):
        async with (
            raw_client(fakeiot, "test:publisher", backend=True) as publisher,
            raw_client(fakeiot, "test:watcher", backend=True) as watcher,
        ):
            await watcher.subscribe("$aws/events/presence/disconnected/test:persistent", 0)
            async with raw_client(
                fakeiot, "test:persistent", backend=True, clean=False
            ) as persistent:
                await persistent.subscribe("jobs/#", 1)
                await publisher.stream.send_all(
                    publish_packet("jobs/1", b"first") + publish_packet("jobs/2", b"second")
                )
                sent = [(await persistent.next_publish())[:3] for _ in range(2)]
                assert sent == [("jobs/1", b"first", 1), ("jobs/2", b"second", 1)]
                await persistent.stream.send_all(b"\xe0\x00")  # DISCONNECT, nothing acknowledged
                assert await persistent.packet() is None
            await watcher.next_publish()  # the broker has seen it go

            async with raw_client(
                fakeiot, "test:persistent", backend=True, clean=False
            ) as persistent:
                again = []
                for _ in range(2):
                    topic, payload, qos, packet_id = await persistent.next_publish()
                    assert qos == 1 and packet_id is not None
                    again.append((topic, payload))
                    await persistent.puback(packet_id)
                assert again == [("jobs/1", b"first"), ("jobs/2", b"second")]
                await persistent.ping()  # nothing more: each message once

            # Acknowledged now: a third connection gets nothing.
            async with raw_client(
                fakeiot, "test:persistent", backend=True, clean=False
            ) as persistent:
                await persistent.ping()


async def test_a_wildcard_in_a_publish_to_an_aws_topic_disconnects_the_client(
    fakeiot: FakeIot,
) -> None:
    with trio.fail_after(20):
        async with raw_client(fakeiot, "test:watcher", backend=True) as watcher:
            await watcher.subscribe("$aws/events/presence/disconnected/CP1", 0)
            async with raw_client(fakeiot, "CP1") as cp:
                await cp.stream.send_all(publish_packet("$aws/things/CP1/shadow/+", b"{}"))
                assert await cp.packet() is None  # closed by the broker
            # amqtt 0.12.1 refuses the packet while decoding it (the connection is lost); had it
            # passed, fakeiot would close it as CLIENT_ERROR.  Either way through the disconnect path:
            _topic, payload, _qos, _packet_id = await watcher.next_publish()
            assert json.loads(payload)["disconnectReason"] in ("CONNECTION_LOST", "CLIENT_ERROR")
            assert fakeiot.broker is not None
            assert "CP1" not in fakeiot.broker.connected_client_ids()
            # The client id is free again: a new connection works.
            async with raw_client(fakeiot, "CP1") as cp:
                await cp.ping()
