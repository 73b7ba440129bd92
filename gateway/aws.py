"""boto3 clients for the registry (``iot``) and device shadows (``iot-data``).

They are made with botocore, boto3's core: ``boto3.Session.client`` is a thin
wrapper over the same call, and importing boto3 itself adds s3transfer and
multiprocessing, about 3 MiB resident that the gateway would never use.

The same code path serves AWS IoT Core and fakeiot: against fakeiot only the
endpoint URL differs.  Credentials come from boto3's standard chain
(environment, profile, instance role...).  fakeiot does not check
signatures, so when the chain finds none and an endpoint URL is set, fixed
placeholder credentials are used instead of failing.

botocore builds a client from its whole service model (for ``iot``, 272
operations) and the endpoint table of every AWS service.  A client that calls
a few operations (the gateway calls DescribeThing only) can be built from a
model cut down to those operations and the shapes they use, and from the
endpoint table of its own service (:func:`make_client`'s ``operations``):
about 7 MiB resident less, and some 150,000 fewer objects for the garbage
collector.  Calling any other operation then fails at once with AttributeError.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.loaders import JSONFileLoader, Loader


@dataclass(frozen=True)
class AwsSettings:
    region: str = "us-east-1"
    iot_endpoint_url: str | None = None  # None: AWS IoT's public endpoint for the region
    iot_data_endpoint_url: str | None = None  # None: same as iot_endpoint_url


_CONFIG = Config(
    retries={"max_attempts": 2, "mode": "standard"},
    connect_timeout=3,
    read_timeout=10,
    max_pool_connections=32,
)


def make_clients(settings: AwsSettings) -> tuple[Any, Any]:
    """Return ``(iot, iot_data)`` clients with every operation.  boto3 clients are thread-safe."""
    return make_client(settings, "iot"), make_client(settings, "iot-data")


def make_client(
    settings: AwsSettings, service: str, *, operations: Collection[str] | None = None
) -> Any:
    """A boto3 client for ``service`` (``iot`` or ``iot-data``); with ``operations`` (their API
    names, such as ``DescribeThing``), one that has only those."""
    core = botocore.session.get_session()
    if operations is not None:
        core.register_component(
            "data_loader", Loader(file_loader=_OperationsOnly(service, frozenset(operations)))
        )
    url = settings.iot_endpoint_url
    if service == "iot-data":
        url = settings.iot_data_endpoint_url or url
    extra: dict[str, Any] = {}
    if settings.iot_endpoint_url and core.get_credentials() is None:
        extra = {"aws_access_key_id": "fakeiot", "aws_secret_access_key": "fakeiot"}
    return core.create_client(
        service, region_name=settings.region, endpoint_url=url, config=_CONFIG, **extra
    )


class _OperationsOnly(JSONFileLoader):
    """Loads botocore's data files, with ``service``'s model cut down to ``operations`` and the
    endpoint table (``endpoints``, about 7 MiB of every service's regions) to ``service``'s.

    The files are parsed into plain dicts (botocore's own loader makes OrderedDicts), the
    model without its documentation and each partition's endpoint table cut as it is parsed:
    what is parsed to be thrown away is most of what a process keeps resident afterwards (freed
    memory is seldom returned to the system), so the less is parsed, the lighter the gateway."""

    def __init__(self, service: str, operations: frozenset[str]) -> None:
        self._service = service
        self._operations = operations
        self._prefix = service

    def load_file(self, file_path: str) -> Any:
        path = PurePath(file_path)
        model = path.name == "service-2" and path.parent.parent.name == self._service
        for suffix, opener in ((".json", open), (".json.gz", gzip.open)):
            if os.path.isfile(file_path + suffix):
                with opener(file_path + suffix, "rb") as file:
                    payload = file.read()
                break
        else:
            return None
        hook = _without_documentation if model else self._one_service_per_partition
        data = json.loads(payload, object_pairs_hook=hook)
        if model:
            self._prefix = data["metadata"].get("endpointPrefix", self._service)
            return _cut_model(data, self._operations)
        return data

    def _one_service_per_partition(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """A parsed JSON object; a partition of ``endpoints`` keeps only this service."""
        parsed = dict(pairs)
        services = parsed.get("services")
        if "partition" in parsed and isinstance(services, dict):
            parsed["services"] = {
                name: services[name] for name in (self._prefix,) if name in services
            }
        return parsed


def _without_documentation(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: value for key, value in pairs if key != "documentation"}


def _cut_model(model: dict[str, Any], operations: frozenset[str]) -> dict[str, Any]:
    """``model`` with only ``operations`` and the shapes they reach, without documentation."""
    missing = operations - model["operations"].keys()
    if missing:
        raise ValueError(f"no such operations: {sorted(missing)}")
    kept = {name: model["operations"][name] for name in sorted(operations)}
    shapes = model["shapes"]
    wanted: list[str] = []
    for operation in kept.values():
        operation.pop("documentation", None)
        for ref in (operation.get("input"), operation.get("output"), *operation.get("errors", ())):
            if ref is not None:
                wanted.append(ref["shape"])
    reached: dict[str, Any] = {}
    while wanted:
        name = wanted.pop()
        if name in reached:
            continue
        shape = reached[name] = shapes[name]
        shape.pop("documentation", None)
        for ref in (
            *shape.get("members", {}).values(),
            *(shape.get(k) for k in ("member", "key", "value")),
        ):
            if ref is not None:
                ref.pop("documentation", None)
                wanted.append(ref["shape"])
    return {**model, "operations": kept, "shapes": reached}
