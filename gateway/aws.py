"""boto3 clients for the registry (``iot``) and device shadows (``iot-data``).

The same code path serves AWS IoT Core and fakeiot: against fakeiot only the
endpoint URL differs.  Credentials come from boto3's standard chain
(environment, profile, instance role...).  fakeiot does not check
signatures, so when the chain finds none and an endpoint URL is set, fixed
placeholder credentials are used instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config


@dataclass(frozen=True)
class AwsSettings:
    region: str = "us-east-1"
    iot_endpoint_url: str | None = None  # None: AWS IoT's public endpoint for the region
    iot_data_endpoint_url: str | None = None  # None: same as iot_endpoint_url


def make_clients(settings: AwsSettings) -> tuple[Any, Any]:
    """Return ``(iot, iot_data)`` clients.  boto3 clients are thread-safe."""
    session = boto3.session.Session(region_name=settings.region)
    config = Config(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=3,
        read_timeout=10,
        max_pool_connections=32,
    )
    extra: dict[str, Any] = {}
    if settings.iot_endpoint_url and session.get_credentials() is None:
        extra = {"aws_access_key_id": "fakeiot", "aws_secret_access_key": "fakeiot"}
    iot = session.client("iot", endpoint_url=settings.iot_endpoint_url, config=config, **extra)
    data_url = settings.iot_data_endpoint_url or settings.iot_endpoint_url
    iot_data = session.client("iot-data", endpoint_url=data_url, config=config, **extra)
    return iot, iot_data
