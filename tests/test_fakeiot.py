"""fakeiot end to end: the broker's AWS behaviours, shadows over MQTT, the REST API via boto3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot, FakeIotConfig, FakeIotError, running_fakeiot
from gateway.aws import AwsSettings, make_clients
from gateway.mqtt_link import MqttDriver

from .conftest import shadow_of


async def test_second_connect_with_same_client_id_disconnects_the_first(
    fakeiot: FakeIot, mqtt_driver: MqttDriver
) -> None:
    async with mqtt_driver.link("CP1") as first, mqtt_driver.link("backend:t") as backend:
        await first.subscribe("CP1/out")
        async with mqtt_driver.link("CP1") as second:
            await second.subscribe("CP1/out")
            with trio.fail_after(5):
                await first.wait_closed()
            assert second.connected
            assert (
                fakeiot.broker is not None
                and fakeiot.broker.connected_client_ids().count("CP1") == 1
            )
            await backend.publish("CP1/out", b"to the new one")
            with trio.fail_after(5):
                assert await second.receive() == ("CP1/out", b"to the new one")


async def test_publish_to_aws_topics_is_accepted_and_the_client_keeps_working(
    mqtt_driver: MqttDriver,
) -> None:
    async with mqtt_driver.link("CP1") as cp, mqtt_driver.link("backend:t") as backend:
        await backend.subscribe("CP1/in")
        await cp.subscribe("$aws/things/CP1/shadow/update/accepted")
        await cp.publish("$aws/things/CP1/shadow/update", b'{"state": {"reported": {"x": 1}}}')
        with trio.fail_after(5):
            topic, payload = await cp.receive()
        assert topic == "$aws/things/CP1/shadow/update/accepted"
        assert json.loads(payload)["state"] == {"reported": {"x": 1}}
        # amqtt alone wedges the session after a '$' publish; ours still delivers.
        await cp.publish("CP1/in", b"still alive")
        with trio.fail_after(5):
            assert await backend.receive() == ("CP1/in", b"still alive")


async def test_other_dollar_topics_stay_refused(fakeiot: FakeIot, mqtt_driver: MqttDriver) -> None:
    async with mqtt_driver.link("CP1") as cp:
        await cp.publish("$SYS/fake", b"x")
        with trio.fail_after(5):
            await cp.wait_closed()


async def test_shadow_topics_over_mqtt(mqtt_driver: MqttDriver) -> None:
    prefix = "$aws/things/CP1/shadow"
    async with mqtt_driver.link("CP1") as cp:
        for suffix in (
            "update/accepted",
            "update/rejected",
            "update/documents",
            "update/delta",
            "get/accepted",
            "get/rejected",
            "delete/accepted",
        ):
            await cp.subscribe(f"{prefix}/{suffix}")

        async def next_message() -> tuple[str, Any]:
            with trio.fail_after(5):
                topic, payload = await cp.receive()
            return topic, json.loads(payload)

        await cp.publish(f"{prefix}/get", b"")
        topic, doc = await next_message()
        assert topic == f"{prefix}/get/rejected"
        assert doc["code"] == 404 and doc["message"] == "No shadow exists with name: 'CP1'"

        await cp.publish(f"{prefix}/update", b"not json")
        topic, doc = await next_message()
        assert (topic, doc["code"], doc["message"]) == (
            f"{prefix}/update/rejected",
            400,
            "Invalid JSON",
        )

        await cp.publish(
            f"{prefix}/update",
            json.dumps({"state": {"desired": {"on": True}}, "clientToken": "c1"}).encode(),
        )
        received = dict([await next_message() for _ in range(3)])
        assert received[f"{prefix}/update/accepted"]["version"] == 1
        assert received[f"{prefix}/update/accepted"]["clientToken"] == "c1"
        assert received[f"{prefix}/update/documents"]["current"]["state"] == {
            "desired": {"on": True}
        }
        assert received[f"{prefix}/update/delta"]["state"] == {"on": True}

        await cp.publish(
            f"{prefix}/update",
            json.dumps({"state": {"reported": {"on": True}}, "version": 1}).encode(),
        )
        received = dict([await next_message() for _ in range(2)])
        assert received[f"{prefix}/update/documents"]["previous"]["version"] == 1
        assert received[f"{prefix}/update/documents"]["current"]["version"] == 2

        await cp.publish(
            f"{prefix}/update",
            json.dumps({"state": {"reported": {"on": False}}, "version": 1}).encode(),
        )
        topic, doc = await next_message()
        assert (topic, doc["code"], doc["message"]) == (
            f"{prefix}/update/rejected",
            409,
            "Version conflict",
        )

        await cp.publish(f"{prefix}/get", b'{"clientToken": "g"}')
        topic, doc = await next_message()
        assert topic == f"{prefix}/get/accepted"
        assert doc["state"] == {"desired": {"on": True}, "reported": {"on": True}}
        assert doc["version"] == 2 and doc["clientToken"] == "g"

        await cp.publish(f"{prefix}/delete", b"")
        topic, doc = await next_message()
        assert topic == f"{prefix}/delete/accepted" and doc["version"] == 2


async def test_registry_api_through_boto3(aws: tuple[Any, Any]) -> None:
    iot, _ = aws
    created = iot.create_thing(thingName="CP1", attributePayload={"attributes": {"site": "depot"}})
    assert created["thingArn"] == "arn:aws:iot:us-east-1:000000000000:thing/CP1"
    assert (
        iot.create_thing(thingName="CP1", attributePayload={"attributes": {"site": "depot"}})[
            "thingId"
        ]
        == created["thingId"]
    )
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_thing(thingName="CP1", attributePayload={"attributes": {"site": "elsewhere"}})
    described = iot.describe_thing(thingName="CP1")
    assert (described["thingName"], described["attributes"], described["version"]) == (
        "CP1",
        {"site": "depot"},
        1,
    )
    iot.update_thing(
        thingName="CP1", attributePayload={"attributes": {"model": "X"}, "merge": True}
    )
    assert iot.describe_thing(thingName="CP1")["attributes"] == {"site": "depot", "model": "X"}
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.update_thing(thingName="CP1", attributePayload={"attributes": {}}, expectedVersion=1)
    for n in range(3):
        iot.create_thing(thingName=f"CP:2E{n}")
    pages = list(iot.get_paginator("list_things").paginate(PaginationConfig={"PageSize": 2}))
    assert [t["thingName"] for p in pages for t in p["things"]] == [
        "CP1",
        "CP:2E0",
        "CP:2E1",
        "CP:2E2",
    ]
    assert len(pages) == 2
    iot.delete_thing(thingName="CP1")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName="CP1")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.describe_thing(thingName="bad name!")


async def test_shadow_api_through_boto3_publishes_on_mqtt(
    aws: tuple[Any, Any], mqtt_driver: MqttDriver
) -> None:
    _, data = aws
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.get_thing_shadow(thingName="CP1")
    async with mqtt_driver.link("CP1") as cp:
        await cp.subscribe("$aws/things/CP1/shadow/update/delta")
        response = await trio.to_thread.run_sync(
            lambda: data.update_thing_shadow(
                thingName="CP1", payload=b'{"state": {"desired": {"limit": 16}}}'
            )
        )
        assert json.loads(response["payload"].read())["version"] == 1
        with trio.fail_after(5):
            topic, payload = await cp.receive()
        assert json.loads(payload)["state"] == {"limit": 16}
    assert shadow_of(aws, "CP1")["state"]["delta"] == {"limit": 16}
    with pytest.raises(data.exceptions.ConflictException):
        data.update_thing_shadow(
            thingName="CP1", payload=b'{"state": {"desired": {"limit": 8}}, "version": 9}'
        )
    with pytest.raises(data.exceptions.InvalidRequestException):
        data.update_thing_shadow(thingName="CP1", payload=b'{"nostate": 1}')
    data.delete_thing_shadow(thingName="CP1")
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.get_thing_shadow(thingName="CP1")


async def test_registry_and_shadows_persist_across_restarts(tmp_path: Path) -> None:
    config = FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path / "data")
    for attempt in range(2):
        async with running_fakeiot(config) as iot:
            iot_client, data = make_clients(AwsSettings(iot_endpoint_url=iot.api_url))
            if attempt == 0:
                iot_client.create_thing(thingName="CP1")
                data.update_thing_shadow(
                    thingName="CP1", payload=b'{"state": {"reported": {"fw": "1.0"}}}'
                )
            else:
                assert iot_client.describe_thing(thingName="CP1")["thingName"] == "CP1"
                assert shadow_of((iot_client, data), "CP1")["state"]["reported"] == {"fw": "1.0"}
            iot_client.close()
            data.close()


async def test_busy_port_gives_a_clear_error(fakeiot: FakeIot, tmp_path: Path) -> None:
    clash = FakeIotConfig(mqtt_port=fakeiot.mqtt_port, api_port=0, data_dir=tmp_path / "other")
    with pytest.raises(FakeIotError, match=f"cannot listen on 127.0.0.1:{fakeiot.mqtt_port}"):
        async with running_fakeiot(clash):
            pass


async def test_presence_events(fakeiot: FakeIot, mqtt_driver: MqttDriver, tmp_path: Path) -> None:
    async with mqtt_driver.link("backend:presence") as watcher:
        await watcher.subscribe("$aws/events/presence/+/+")

        async def next_event() -> tuple[str, dict[str, Any]]:
            with trio.fail_after(5):
                topic, payload = await watcher.receive()
            return topic, json.loads(payload)

        async with mqtt_driver.link("CP1"):
            topic, event = await next_event()
            assert topic == "$aws/events/presence/connected/CP1"
            assert event["clientId"] == "CP1" and event["eventType"] == "connected"
            assert event["ipAddress"] == "127.0.0.1" and isinstance(event["timestamp"], int)
            session = event["sessionIdentifier"]
            async with mqtt_driver.link("CP1"):  # a second connection with the same client id
                received = dict([await next_event(), await next_event()])
                kicked = received["$aws/events/presence/disconnected/CP1"]
                assert kicked["disconnectReason"] == "DUPLICATE_CLIENTID"
                assert (
                    kicked["clientInitiatedDisconnect"] is False
                    and kicked["sessionIdentifier"] == session
                )
                assert (
                    received["$aws/events/presence/connected/CP1"]["sessionIdentifier"] != session
                )
        topic, event = await next_event()  # the newer one left with a DISCONNECT packet
        assert (topic, event["disconnectReason"], event["clientInitiatedDisconnect"]) == (
            "$aws/events/presence/disconnected/CP1",
            "CLIENT_INITIATED_DISCONNECT",
            True,
        )

        stream = await trio.open_tcp_stream("127.0.0.1", fakeiot.mqtt_port)
        # A bare MQTT 3.1.1 CONNECT for client id "RAW" with the gateway's credential, then the TCP connection drops.
        user, password = b"fakeiot-gateway", fakeiot.gateway_password.encode()
        body = b"\x00\x04MQTT" + bytes([4, 0xC2, 0, 60, 0, 3]) + b"RAW"
        body += len(user).to_bytes(2, "big") + user + len(password).to_bytes(2, "big") + password
        await stream.send_all(bytes([0x10, len(body)]) + body)
        assert (await stream.receive_some(4))[:1] == b"\x20"  # CONNACK
        assert (await next_event())[0] == "$aws/events/presence/connected/RAW"
        await stream.aclose()
        topic, event = await next_event()
        assert (topic, event["disconnectReason"]) == (
            "$aws/events/presence/disconnected/RAW",
            "CONNECTION_LOST",
        )


async def test_registry_events(aws: tuple[Any, Any], mqtt_driver: MqttDriver) -> None:
    iot, _ = aws
    async with mqtt_driver.link("backend:registry") as watcher:
        await watcher.subscribe("$aws/events/thing/+/+")
        await trio.to_thread.run_sync(
            lambda: iot.create_thing(thingName="CP1", attributePayload={"attributes": {"a": "1"}})
        )
        await trio.to_thread.run_sync(
            lambda: iot.create_thing(thingName="CP1", attributePayload={"attributes": {"a": "1"}})
        )
        await trio.to_thread.run_sync(
            lambda: iot.update_thing(
                thingName="CP1", attributePayload={"attributes": {"b": "2"}, "merge": True}
            )
        )
        await trio.to_thread.run_sync(lambda: iot.delete_thing(thingName="CP1"))
        await trio.to_thread.run_sync(
            lambda: iot.delete_thing(thingName="CP1")
        )  # gone already: no event
        events = []
        with trio.fail_after(5):
            for _ in range(3):
                topic, payload = await watcher.receive()
                events.append((topic, json.loads(payload)))
        with trio.move_on_after(0.5):
            extra = await watcher.receive()
            raise AssertionError(f"unexpected event {extra}")
    assert [t for t, _ in events] == [
        "$aws/events/thing/CP1/created",
        "$aws/events/thing/CP1/updated",
        "$aws/events/thing/CP1/deleted",
    ]
    assert [e["operation"] for _, e in events] == ["CREATED", "UPDATED", "DELETED"]
    assert (
        events[1][1]["attributes"] == {"a": "1", "b": "2"}
        and events[0][1]["eventType"] == "THING_EVENT"
    )


async def test_attribute_names_and_values_follow_aws_rules(aws: Any) -> None:
    iot = aws[0]
    with pytest.raises(
        iot.exceptions.InvalidRequestException, match="Invalid value of attribute model"
    ):
        iot.create_thing(thingName="CPA", attributePayload={"attributes": {"model": "has spaces"}})
    with pytest.raises(iot.exceptions.InvalidRequestException, match="Invalid attribute name"):
        iot.create_thing(thingName="CPA", attributePayload={"attributes": {"bad name": "x"}})
    iot.create_thing(
        thingName="CPA", attributePayload={"attributes": {"ocppSerialNumber": "SN-1/a:b"}}
    )
