"""fakeiot's iot-data Publish: the boto3 call that publishes on AWS IoT publishes through fakeiot's broker."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError

from gateway.mqtt_link import MqttDriver

from .conftest import Spy, shadow_of
from .waiting import until


async def test_boto3_publish_reaches_a_subscriber(spy: Spy, aws: Any) -> None:
    await trio.to_thread.run_sync(
        lambda: aws[1].publish(topic="CP1/out", qos=1, payload=b'[2,"m1","Reset",{}]')
    )
    topic, payload = await spy.wait_for(lambda t, p: t == "CP1/out")
    assert payload == b'[2,"m1","Reset",{}]'


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"topic": "CP1/+", "qos": 1}, "InvalidRequestException"),
        ({"topic": "a/b/c/d/e/f/g/h/i", "qos": 1}, "InvalidRequestException"),
        ({"topic": "CP1/out", "retain": True}, "InvalidRequestException"),
        (
            {"topic": "CP1/out", "payload": b"x" * (128 * 1024 + 1)},
            "RequestEntityTooLargeException",
        ),
    ],
)
async def test_bad_publishes_are_refused_like_aws(
    aws: Any, kwargs: dict[str, Any], code: str
) -> None:
    with pytest.raises(ClientError) as caught:
        await trio.to_thread.run_sync(lambda: aws[1].publish(**kwargs))
    assert caught.value.response["Error"]["Code"] == code


@pytest.mark.parametrize(
    "topic",
    [
        "$aws/events/presence/disconnected/CP1",  # would tell the processor CP1 went
        "$aws/events/presence/connected/CP1",
        "$aws/events/thing/CP1/deleted",  # would make a gateway drop CP1
        "$aws/things/CP1/shadow/update/delta",  # would make a shadow change seem to happen
        "$aws/things/CP1/shadow/update/accepted",
        "$share/g/CP1/in",
        "$SYS/broker",
    ],
)
async def test_reserved_topics_cannot_be_forged_through_publish(
    mqtt_driver: MqttDriver, nursery: trio.Nursery, aws: Any, topic: str
) -> None:
    got: list[tuple[str, bytes]] = []
    async with mqtt_driver.link("test:watch") as watch:
        await watch.subscribe("$aws/#", 1)

        async def collect() -> None:
            while True:
                got.append(await watch.receive())

        nursery.start_soon(collect)
        with pytest.raises(ClientError) as caught:
            await trio.to_thread.run_sync(
                lambda: aws[1].publish(topic=topic, qos=1, payload=b'{"clientId": "CP1"}')
            )
        assert caught.value.response["Error"]["Code"] == "ForbiddenException"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        # A message that is delivered afterwards proves nothing forged came before it.
        await trio.to_thread.run_sync(
            lambda: aws[1].publish(topic="$aws/things/CP9/shadow/get", qos=1, payload=b"")
        )
        await until(lambda: any(t == "$aws/things/CP9/shadow/get/rejected" for t, _ in got))
        assert all(t.startswith("$aws/things/CP9/") for t, _ in got), got
        nursery.cancel_scope.cancel()


async def test_a_shadow_request_published_over_http_is_answered_as_over_mqtt(
    spy: Spy, aws: Any, mqtt_driver: MqttDriver
) -> None:
    aws[0].create_thing(thingName="CP1")
    async with mqtt_driver.link("test:shadow") as link:
        await link.subscribe("$aws/things/CP1/shadow/update/accepted", 1)
        request = b'{"state": {"desired": {"x": 1}}}'
        await trio.to_thread.run_sync(
            lambda: aws[1].publish(topic="$aws/things/CP1/shadow/update", qos=1, payload=request)
        )
        with trio.fail_after(5):
            topic, payload = await link.receive()
    assert topic == "$aws/things/CP1/shadow/update/accepted"
    assert json.loads(payload)["state"] == {"desired": {"x": 1}}
    assert shadow_of(aws, "CP1")["state"]["desired"] == {"x": 1}
