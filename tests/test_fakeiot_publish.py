"""fakeiot's iot-data Publish: the boto3 call that publishes on AWS IoT publishes through fakeiot's broker."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError

from .conftest import Spy


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
