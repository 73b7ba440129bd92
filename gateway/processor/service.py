"""The CPO message processor: answers charge points over the broker.

It plays the part of the AWS sample's Lambda: subscribed to ``+/in``, it
answers every OCPP CALL on ``<cp-id>/out`` and writes BootNotification
payloads into the device shadow through ``iot-data`` (boto3).  It is a plain
MQTT client, so it runs beside fakeiot, Mosquitto or AWS IoT Core alike.

Which OCPP version a charge point speaks is not visible in its frames, so
the gateway records the negotiated subprotocol in the shadow
(``state.reported.ocppProtocol``) before it forwards anything.  The processor
learns it from those update requests (``$aws/things/+/shadow/update``, which
any broker delivers) and, when it has missed one, from GetThingShadow.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any

import ocpp.messages
import trio
from botocore.exceptions import BotoCoreError, ClientError
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, validate_payload

from .. import ocppj
from ..errors import (
    InvalidIdentity,
    MqttConnectError,
    MqttConnectionLost,
    MqttSubscriptionRefused,
)
from ..identity import cp_id_for, thing_name_for, validate_identity
from ..mqtt_link import MqttDriver
from ..subprotocol import OCPP_VERSIONS
from .handlers import HANDLERS, Context, boot_shadow_document

log = logging.getLogger(__name__)

# ocpp validates in an asyncio executor unless told otherwise; we run under Trio.
ocpp.messages.ASYNC_VALIDATION = False

DEFAULT_VERSION = "2.0.1"
# The gateway's shadow update requests: seen on AWS IoT, fakeiot and plain brokers alike.
SHADOW_UPDATES = "$aws/things/+/shadow/update"


@dataclass(frozen=True)
class ProcessorSettings:
    client_id: str = "cpo:processor"
    heartbeat_interval: int = 10
    max_concurrent: int = 256


class Processor:
    def __init__(self, driver: MqttDriver, iot_data: Any, settings: ProcessorSettings) -> None:
        self._driver = driver
        self._iot_data = iot_data
        self.settings = settings
        self._ctx = Context(heartbeat_interval=settings.heartbeat_interval)
        self._versions: dict[str, str] = {}
        self._limiter = trio.CapacityLimiter(settings.max_concurrent)
        self.handled = 0
        self.reconnects = 0
        self._started = False
        self._subscribed = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``started()`` once subscribed.

        A failure to connect at start is raised (a configuration error is
        reported at once).  Once running, a lost broker connection is
        retried with exponential backoff and full jitter (0.5 s doubling up to
        30 s), so a broker restart does not end the process.  The MQTT session
        is persistent (clean session off): QoS 1 messages published while the
        processor was away are delivered when it is back, where the broker
        kept the session.
        """
        failures = 0
        while True:
            self._subscribed = False
            failure: Exception | None = None
            try:
                await self._serve_once(None if self._started else task_status)
            except* (MqttConnectionLost, MqttConnectError) as group:  # may arrive wrapped by the link's nursery
                failure = group.exceptions[0] if isinstance(group.exceptions[0], Exception) else None
            if failure is not None:
                if not self._started:
                    raise failure  # could not start at all: report it
                log.warning("processor: %s", failure)
            self.reconnects += 1
            failures = 1 if self._subscribed else failures + 1
            delay = random.uniform(0, min(30.0, 0.5 * 2 ** min(failures, 10)))
            log.warning("processor: reconnecting to the broker in %.1f s (attempt %d)", delay, failures)
            await trio.sleep(delay)

    async def _serve_once(self, task_status: trio.TaskStatus[None] | None) -> None:
        async with self._driver.link(self.settings.client_id, clean_session=False) as link:
            try:
                await link.subscribe(SHADOW_UPDATES, 1)
                await link.subscribe("+/in", 1)
            except MqttSubscriptionRefused as exc:
                raise MqttSubscriptionRefused(
                    f"{exc}: the processor needs a backend role on the broker (fakeiot: MQTT user name "
                    "fakeiot-backend and the password in <data-dir>/backend-password; AWS IoT: a policy "
                    "allowing iot:Subscribe to topicfilter/+/in)"
                ) from None
            log.info("processor: subscribed to +/in as %s", self.settings.client_id)
            self._subscribed = True
            if task_status is not None:
                task_status.started()
                self._started = True
            lost: MqttConnectionLost | None = None
            try:
                async with trio.open_nursery() as nursery:
                    while True:
                        topic, payload = await link.receive()
                        if topic.endswith("/shadow/update"):
                            self._learn_version(topic, payload)
                            continue
                        token = object()
                        await self._limiter.acquire_on_behalf_of(token)
                        nursery.start_soon(self._handle_and_release, link, topic, payload, token)
            except* MqttConnectionLost as group:
                # The receive loop and answers in flight see the same loss; report it once.
                lost = MqttConnectionLost(f"processor lost its MQTT connection: {group.exceptions[0]}")
            if lost is not None:
                raise lost

    async def _handle_and_release(self, link: Any, topic: str, payload: bytes, token: object) -> None:
        try:
            await self._handle(link, topic, payload)
        finally:
            self._limiter.release_on_behalf_of(token)

    def _learn_version(self, topic: str, payload: bytes) -> None:
        try:
            thing = topic.split("/")[2]
            reported = json.loads(payload)["state"]["reported"]
            protocol = reported["ocppProtocol"]
        except (ValueError, KeyError, TypeError, IndexError):
            return
        if protocol in OCPP_VERSIONS:
            self._versions[thing] = OCPP_VERSIONS[protocol]

    async def _version_of(self, thing_name: str) -> str:
        version = self._versions.get(thing_name)
        if version is not None:
            return version
        try:
            response = await trio.to_thread.run_sync(lambda: self._iot_data.get_thing_shadow(thingName=thing_name))
            protocol = json.loads(response["payload"].read())["state"]["reported"]["ocppProtocol"]
        except (ClientError, BotoCoreError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: OCPP version unknown (%s); assuming %s", cp_id_for(thing_name), exc, DEFAULT_VERSION)
            return DEFAULT_VERSION
        version = OCPP_VERSIONS.get(protocol, DEFAULT_VERSION)
        self._versions[thing_name] = version
        return version

    async def _handle(self, link: Any, topic: str, payload: bytes) -> None:
        cp_id = topic[: -len("/in")]
        try:
            identity = validate_identity(cp_id)
        except InvalidIdentity as exc:
            log.warning("processor: ignoring message on %r: %s", topic, exc.reason)
            return
        version = await self._version_of(identity.thing_name)
        reply = await self.answer(identity.cp_id, version, payload)
        self.handled += 1
        if reply is None:
            return
        try:
            await link.publish(identity.out_topic, reply.encode(), qos=1)
        except MqttConnectionLost:
            log.error("%s: reply lost, processor's MQTT connection is down: %s", cp_id, reply)
            raise

    async def answer(self, cp_id: str, version: str, payload: bytes) -> str | None:
        """The frame to send back for one frame from ``cp_id`` (None: no answer)."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return ocppj.call_error(ocppj.UNKNOWN_MESSAGE_ID, ocppj.format_violation_code(version), "Message is not valid UTF-8")
        try:
            frame = ocppj.parse_frame(text, version)
        except ocppj.FrameError as exc:
            log.info("%s: malformed frame answered with %s: %s", cp_id, exc.code, exc.description)
            return exc.to_call_error()
        if not isinstance(frame, Call):
            # A CALLRESULT/CALLERROR answers a CALL the CPO sent; nothing to reply.
            log.info("%s: received %s for message %s", cp_id, type(frame).__name__, frame.unique_id)
            return None
        handler = HANDLERS[version].get(frame.action)
        if handler is None:
            return ocppj.call_error(frame.unique_id, "NotImplemented", f"{frame.action} is not implemented by this CSMS")
        try:
            await validate_payload(frame, version)
        except OCPPError as exc:
            cause = exc.details.get("cause") if isinstance(exc.details, dict) else None
            return ocppj.call_error(
                frame.unique_id,
                ocppj.error_code_for(version, exc.code),
                exc.description or f"Invalid {frame.action} payload",
                {"cause": str(cause)} if cause else {},
            )
        result = handler(frame.payload, self._ctx)
        if frame.action == "BootNotification":
            await self._update_shadow(cp_id, boot_shadow_document(frame.payload, version))
        return ocppj.call_result(frame.unique_id, result)

    async def _update_shadow(self, cp_id: str, reported: dict[str, Any]) -> None:
        document = json.dumps({"state": {"reported": reported}}).encode()
        thing_name = thing_name_for(cp_id)
        try:
            await trio.to_thread.run_sync(
                lambda: self._iot_data.update_thing_shadow(thingName=thing_name, payload=document)
            )
        except (ClientError, BotoCoreError) as exc:
            log.error("%s: could not store BootNotification in the shadow: %s", cp_id, exc)
