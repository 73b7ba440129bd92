"""AWS IoT's data-plane Publish (``iot-data publish``): ``POST /topics/{topic}?qos=1``, the payload as body.

botocore's ``iot-data`` model: the topic is the (percent-encoded) URI segment, ``qos`` and
``retain`` are query parameters, the body is the message as is, and the answer has no body.
So ``boto3.client("iot-data", endpoint_url=<fakeiot>).publish(topic=..., qos=1, payload=...)``
sends a message through fakeiot's broker as it would through AWS IoT Core's; subscribers get
it at the QoS of their subscription (fakeiot's internal publications carry none of their own).

Refused as AWS IoT refuses them (400 ``InvalidRequestException``): an empty topic, a wildcard
(``+``/``#``), a topic over 256 bytes or with more than 7 ``/``, a QoS other than 0 or 1; a
payload over 128 KiB is 413 ``RequestEntityTooLargeException``.  ``retain=true`` is refused
too: fakeiot keeps no retained messages.

Reserved topics (``$...``), as AWS IoT's reserved-topic table allows them: a shadow request
(``$aws/things/<name>/shadow/update|get|delete``) is one, answered on its ``/accepted`` or
``/rejected`` topic as over MQTT; every other ``$`` topic (presence and registry events, a shadow's
``/accepted``, ``/delta`` ..., ``$share/``) is 403 ``ForbiddenException``: only fakeiot itself says
that a client connected or a shadow changed, so nobody can forge what gateways and processors act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .limits import MAX_PAYLOAD
from .shadow_service import Publication, ShadowService

MAX_TOPIC_BYTES = 256  # AWS IoT Core's topic size quota
MAX_TOPIC_SLASHES = 7  # AWS IoT Core: "Maximum number of slashes in topic and topic filter"


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidRequestException", message)


def check_topic(topic: str) -> None:
    """AWS's 400 for a topic one cannot publish to."""
    if not topic:
        raise _invalid("The topic is empty")
    if "+" in topic or "#" in topic:
        raise _invalid(f"Wildcards are not allowed in a topic to publish to: {topic[:80]!r}")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise _invalid(f"The topic is longer than {MAX_TOPIC_BYTES} bytes")
    if topic.count("/") > MAX_TOPIC_SLASHES:
        raise _invalid(f"The topic has more than {MAX_TOPIC_SLASHES} forward slashes")
    if "\x00" in topic:
        raise _invalid("The topic contains a NUL character")


@dataclass
class PublishApi:
    """``Publish`` of ``iot-data``; ``publish`` hands the message to the broker (and waits for it)."""

    publish: Callable[[list[Publication]], None]
    shadows: ShadowService | None = None

    def publish_message(self, topic: str, query: dict[str, str], body: bytes) -> dict[str, Any]:
        check_topic(topic)
        shadow_request = ShadowService.is_request(topic)
        if topic.startswith("$") and not (shadow_request and self.shadows is not None):
            raise ApiError(
                403,
                "ForbiddenException",
                f"Publishing to the reserved topic {topic[:80]!r} is not allowed "
                "(of $ topics only shadow requests: $aws/things/<name>/shadow/update|get|delete)",
            )
        qos = query.get("qos", "0")
        if qos not in ("0", "1"):
            raise _invalid(f"qos must be 0 or 1, not {qos[:10]!r}")
        if query.get("retain", "false").lower() not in ("false", ""):
            raise _invalid(
                "retain=true is not supported by fakeiot (it keeps no retained messages)"
            )
        if len(body) > MAX_PAYLOAD:
            raise ApiError(
                413,
                "RequestEntityTooLargeException",
                f"The payload exceeds the maximum size of {MAX_PAYLOAD} bytes",
            )
        publications: list[Publication] = [(topic, body)]
        if shadow_request and self.shadows is not None:
            publications += self.shadows.handle_mqtt(topic, body) or []
        self.publish(publications)
        return {}
