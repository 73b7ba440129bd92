"""gateway.aws: a client cut down to the operations it calls still speaks the real API.

Against a running fakeiot (the registry over HTTP), and botocore's endpoint
resolution for AWS itself (no request leaves the machine for those).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from fakeiot.service import FakeIot
from gateway.app import GATEWAY_IOT_OPERATIONS
from gateway.aws import AwsSettings, make_client


async def test_the_gateways_client_describes_things_and_has_nothing_else(
    fakeiot: FakeIot, aws: tuple[Any, Any]
) -> None:
    aws[0].create_thing(thingName="CP-CUT", attributePayload={"attributes": {"model": "X1"}})
    settings = AwsSettings(iot_endpoint_url=fakeiot.api_url)
    client = await trio.to_thread.run_sync(
        lambda: make_client(settings, "iot", operations=GATEWAY_IOT_OPERATIONS)
    )
    try:
        thing = await trio.to_thread.run_sync(lambda: client.describe_thing(thingName="CP-CUT"))
        assert thing["thingName"] == "CP-CUT"
        assert thing["attributes"] == {"model": "X1"}
        with pytest.raises(ClientError) as caught:
            await trio.to_thread.run_sync(lambda: client.describe_thing(thingName="CP-NONE"))
        # The error shapes came along: the modelled exception class is there.
        assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert isinstance(caught.value, client.exceptions.ResourceNotFoundException)
        assert not hasattr(client, "create_thing")
        assert not hasattr(client, "list_things")
    finally:
        client.close()


@pytest.mark.parametrize(
    ("region", "url"),
    [
        ("eu-west-1", "https://iot.eu-west-1.amazonaws.com"),
        ("cn-north-1", "https://iot.cn-north-1.amazonaws.com.cn"),
        ("us-gov-west-1", "https://iot.us-gov-west-1.amazonaws.com"),
    ],
)
def test_a_cut_client_finds_aws_iots_endpoint_for_its_region(region: str, url: str) -> None:
    cut = make_client(AwsSettings(region=region), "iot", operations=["DescribeThing"])
    whole = make_client(AwsSettings(region=region), "iot")
    try:
        assert cut.meta.endpoint_url == whole.meta.endpoint_url == url
    finally:
        cut.close()
        whole.close()


def test_an_operation_the_service_does_not_have_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="DescribeThng"):
        make_client(AwsSettings(), "iot", operations=["DescribeThing", "DescribeThng"])
