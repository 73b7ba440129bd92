"""gateway.aws: a client cut down to the operations it calls still speaks the real API.

Against a running fakeiot (the registry over HTTP), and botocore's endpoint
resolution for AWS itself (no request leaves the machine for those).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import botocore
import pytest
import trio
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from fakeiot.service import FakeIot
from gateway.app import GATEWAY_IOT_OPERATIONS
from gateway.aws import AwsSettings, _OperationsOnly, make_client
from gateway.gcpolicy import release_freed_memory


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


def test_the_cut_loader_parses_less_and_keeps_the_request_shapes() -> None:
    """The model is parsed without documentation into plain dicts; endpoints keep one service."""
    loader = _OperationsOnly("iot", frozenset(["DescribeThing"]))
    data_dir = Path(botocore.__file__).parent / "data"
    model = loader.load_file(str(next((data_dir / "iot").iterdir()) / "service-2"))
    assert type(model) is dict and list(model["operations"]) == ["DescribeThing"]
    request = model["shapes"]["DescribeThingRequest"]
    assert request["required"] == ["thingName"] and "documentation" not in request
    assert "documentation" not in json.dumps(model)
    endpoints = loader.load_file(str(data_dir / "endpoints"))
    assert {name for p in endpoints["partitions"] for name in p["services"]} == {"iot"}
    assert loader.load_file(str(data_dir / "no-such-file")) is None


def test_start_up_memory_is_given_back_where_the_c_library_can() -> None:
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert release_freed_memory() is True
    else:  # musl, macOS: no malloc_trim, no error
        assert release_freed_memory() in (True, False)
