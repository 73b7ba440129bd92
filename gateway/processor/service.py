"""The CPO message processor: answers charge points over the broker.

It plays the part of the AWS sample's Lambda: subscribed to ``+/in``, it
answers every OCPP CALL on ``<cp-id>/out`` with the handler registered for
its (version, action) (:mod:`.answering`, :mod:`.registry`, :mod:`.dispatch`); the
BootNotification handler writes the boot attributes into the device shadow
through ``iot-data`` (boto3).  It is a plain
MQTT client, so it runs beside fakeiot, Mosquitto or AWS IoT Core alike.

Which OCPP version a charge point speaks is not visible in its frames: the
processor learns it from the gateway's shadow update requests
(``$aws/things/+/shadow/update``), and reads the shadow when it has missed one
(:mod:`.versions`).

Delivery is at-least-once.  A message from ``+/in`` is acknowledged (PUBACK)
only once it is done with: a CALL once its answer has been handed to the
broker (published with QoS 1 on the same connection, so the broker has the
answer before it sees the acknowledgement), anything else once it has been
answered or deliberately dropped (not a CALL, unreadable, a handler bug).  A
processor that dies meanwhile leaves the message unacknowledged in its
persistent session (clean session off), and the broker delivers it again to
the next processor with the same client id.  Messages are handled
concurrently (up to ``max_concurrent``), so acknowledgements leave in the
order the CALLs are answered, not the order they arrived: MQTT 3.1.1 (section
4.6) asks clients to acknowledge QoS 1 in order, but Mosquitto, amqtt and AWS
IoT match a PUBACK by its packet id and accept any order.  Bounds: what the
processor has taken and not acknowledged is at most ``max_concurrent`` + 1;
everything unacknowledged (taken, or still waiting in the link) is bounded by
the broker's in-flight window per client (Mosquitto ``max_inflight_messages``,
20 by default; AWS IoT 100; fakeiot 100) or, where the window is unlimited,
by the link's ``max_backlog_bytes``.  The window therefore also caps how many
CALLs are answered at once: with Mosquitto's default of 20, raise
``max_inflight_messages`` for a busy processor.

Every CALL may therefore arrive twice (and a CP may retry one): it is handled once and a
copy gets its first answer (see :mod:`.answering`).

No input on any topic ends the processor.  Every JSON text is depth-bounded
before it is parsed (:func:`gateway.ocppj.strict_loads`); an exception while
answering one CALL is answered with a CALLERROR ``InternalError`` and logged
with the CP id; a shadow update that cannot be read is dropped (logged at
WARNING at most once a minute).  Only a lost broker connection (retried by
:meth:`Processor.run`) and cancellation propagate, and
:meth:`Processor.run_supervised` restarts :meth:`Processor.run` should
anything else escape it.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import ocpp.messages
import trio

from ..errors import (
    InvalidIdentity,
    MqttConnectError,
    MqttConnectionLost,
    MqttSubscriptionRefused,
)
from ..identity import validate_identity
from ..logformat import CURRENT_CP
from ..mqtt_link import Delivery, MqttDriver, MqttLink
from .answering import Answerer
from .authorization import AcceptAll, Authorizer
from .config import ProcessorConfig
from .defaults_16 import sign_certificate as sign_certificate_16
from .defaults_201 import sign_certificate as sign_certificate_201
from .recent import RECENT_ANSWER_TTL, RECENT_ANSWERS
from .registry import HandlerRegistry
from .versions import DEFAULT_VERSION, MAX_KNOWN_VERSIONS, SHADOW_UPDATES, OcppVersions

log = logging.getLogger(__name__)

# ocpp validates in an asyncio executor unless told otherwise; we run under Trio.
ocpp.messages.ASYNC_VALIDATION = False

# After a crash (a bug: run() itself retries lost connections), run() restarts after 0.5 s, doubling up to 30 s;
# a run that lasted this long resets the backoff.
CRASH_BACKOFF_RESET = 60.0
# A CALL's handler gets this long (the gateway's --call-timeout: an answer after it is useless to the CP);
# then the CALL is answered InternalError and its slot (and the broker's in-flight window) freed.
HANDLER_TIMEOUT = 30.0


def inbound_topic(settings: ProcessorSettings) -> str:
    """The CPs' messages: ``+/in``, or ``$share/<group>/+/in`` for one of N replicas of
    ``--shared-group``, each CALL then going to one replica only.  The shadow updates
    (``SHADOW_UPDATES``) stay unshared: every replica learns every CP's OCPP version."""
    if settings.shared_group is None:
        return "+/in"
    return f"$share/{settings.shared_group}/+/in"


@dataclass(frozen=True)
class ProcessorSettings:
    client_id: str = ProcessorConfig.client_id
    shared_group: str | None = ProcessorConfig.shared_group
    heartbeat_interval: int = ProcessorConfig.heartbeat_interval
    max_concurrent: int = 256
    recent_answers: int = (
        RECENT_ANSWERS  # CALLs whose answers are kept to answer a redelivery alike
    )
    recent_answer_ttl: float = RECENT_ANSWER_TTL
    handler_timeout: float = HANDLER_TIMEOUT  # seconds one CALL's handler may take
    max_known_versions: int = MAX_KNOWN_VERSIONS
    # --handlers: modules whose @handler functions replace the defaults (see registry.py)
    handler_modules: tuple[str, ...] = ()


class Processor(Answerer):
    """Answers the CALLs on ``+/in``: an :class:`~.answering.Answerer` fed by the broker.

    ``authorizer`` decides id tokens (default :class:`AcceptAll`);
    ``registry`` the handlers (default: :func:`load_registry` of
    ``settings.handler_modules``, which raises HandlerLoadError, a
    ConfigError, for a module that cannot be loaded).
    """

    def __init__(
        self,
        driver: MqttDriver,
        iot_data: Any,
        settings: ProcessorSettings,
        *,
        authorizer: Authorizer | None = None,
        registry: HandlerRegistry | None = None,
    ) -> None:
        super().__init__(iot_data, settings, authorizer=authorizer, registry=registry)
        self._driver = driver
        self.versions = OcppVersions(iot_data, settings.max_known_versions)
        self._limiter = trio.CapacityLimiter(settings.max_concurrent)
        self.handled = 0
        self.ignored = 0  # messages on +/in whose topic holds no valid CP id: dropped unanswered
        self.reconnects = 0
        self.crashes = 0  # times run() ended with an exception under run_supervised()
        self._started = False
        self._subscribed = False
        self._connected = False  # subscribed and receiving now (unlike _subscribed, reset at once)

    @property
    def subscribed(self) -> bool:
        """Connected to the broker and subscribed to ``+/in`` now (``/readyz``)."""
        return self._connected

    @property
    def bad_shadow_updates(self) -> int:
        """Shadow updates dropped as unreadable."""
        return self.versions.bad_shadow_updates

    async def run_supervised(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """:meth:`run`, restarted whenever it crashes after it has started.

        A failure before it first reports ``started()`` (bad credentials, a
        refused subscription) is raised as by :meth:`run`: a configuration
        error is reported at once.  Afterwards any exception escaping
        :meth:`run` (a bug: lost connections are retried inside it) is logged
        with its traceback, counted in :attr:`crashes`, and :meth:`run` starts
        again after a backoff (0.5 s doubling to 30 s), so a gateway that
        embeds the processor keeps serving its charge points.
        """
        self.announce()
        status = _StartedProbe(task_status)
        in_a_row = 0
        while True:
            began = trio.current_time()
            try:
                await self.run(
                    task_status=status if not status.called else trio.TASK_STATUS_IGNORED
                )
                return
            except Exception:  # the supervisor's purpose; cancellation is not an Exception
                if not status.called:
                    raise
                self.crashes += 1
                in_a_row = 1 if trio.current_time() - began > CRASH_BACKOFF_RESET else in_a_row + 1
                delay = min(30.0, 0.5 * 2 ** min(in_a_row - 1, 6))
                log.exception(
                    "processor: crashed (%d crashes so far); restarting in %.1f s",
                    self.crashes,
                    delay,
                )
            await trio.sleep(delay)

    def announce(self) -> None:
        """Say once at start-up what a development default means for charge points."""
        if isinstance(self.context.authorizer, AcceptAll):
            log.warning(
                "processor: every id token is accepted (authorizer: %s)",
                AcceptAll.description,
            )
        defaults = (("1.6", sign_certificate_16), ("2.0.1", sign_certificate_201))
        rejecting = [
            v for v, default in defaults if self.handlers.get(v, "SignCertificate") is default
        ]
        if rejecting:
            log.info(
                "processor: no certificate authority is configured: SignCertificate (OCPP %s) is "
                "answered Rejected",
                " and ".join(rejecting),
            )

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
            except* (
                MqttConnectionLost,
                MqttConnectError,
            ) as group:  # may arrive wrapped by the link's nursery
                failure = (
                    group.exceptions[0] if isinstance(group.exceptions[0], Exception) else None
                )
            if failure is not None:
                if not self._started:
                    raise failure  # could not start at all: report it
                log.warning("processor: %s", failure)
            self.reconnects += 1
            failures = 1 if self._subscribed else failures + 1
            delay = random.uniform(0, min(30.0, 0.5 * 2 ** min(failures, 10)))
            log.warning(
                "processor: reconnecting to the broker in %.1f s (attempt %d)", delay, failures
            )
            await trio.sleep(delay)

    async def _serve_once(self, task_status: trio.TaskStatus[None] | None) -> None:
        async with self._driver.link(self.settings.client_id, clean_session=False) as link:
            try:
                await link.subscribe(SHADOW_UPDATES, 1)
                await link.subscribe(inbound_topic(self.settings), 1)
            except MqttSubscriptionRefused as exc:
                raise MqttSubscriptionRefused(
                    f"{exc}: the processor needs a backend role on the broker (fakeiot: MQTT user name "
                    "fakeiot-backend and the password in <data-dir>/backend-password; AWS IoT: a policy "
                    f"allowing iot:Subscribe to topicfilter/{inbound_topic(self.settings)})"
                ) from None
            log.info(
                "processor: subscribed to %s as %s",
                inbound_topic(self.settings),
                self.settings.client_id,
            )
            self._subscribed = True
            if task_status is not None:
                task_status.started()
                self._started = True
            lost: MqttConnectionLost | None = None
            self._connected = True
            try:
                async with trio.open_nursery() as nursery:
                    while True:
                        delivery = await link.receive(ack=False)
                        if delivery.topic.endswith("/shadow/update"):
                            try:
                                self.versions.learn(delivery.topic, delivery.payload)
                            except Exception:  # noqa: BLE001 - a bug must not let one device end the processor
                                self.versions.bad_shadow_update(
                                    delivery.topic, "internal error", exc_info=True
                                )
                            link.ack(delivery)
                            continue
                        token = object()
                        await self._limiter.acquire_on_behalf_of(token)
                        nursery.start_soon(self._handle_and_release, link, delivery, token)
            except* MqttConnectionLost as group:
                # The receive loop and answers in flight see the same loss; report it once.
                lost = MqttConnectionLost(
                    f"processor lost its MQTT connection: {group.exceptions[0]}"
                )
            finally:
                self._connected = False
            if lost is not None:
                raise lost

    async def _handle_and_release(self, link: MqttLink, delivery: Delivery, token: object) -> None:
        try:
            try:
                await self._handle(link, delivery.topic, delivery.payload)
            except MqttConnectionLost:
                raise  # not acknowledged: the broker delivers it again to the next session
            except Exception:  # one message must never end the processor (answer() already replies)
                self.internal_errors += 1
                log.exception(
                    "%s: processor failed on a message; dropped", delivery.topic[: -len("/in")][:64]
                )
            # Answered (the answer queued ahead of this PUBACK on the same connection) or dropped on purpose.
            # Cancelled (the processor stopping) it stays unacknowledged too, for the next processor.
            link.ack(delivery)
        finally:
            self._limiter.release_on_behalf_of(token)

    async def _handle(self, link: MqttLink, topic: str, payload: bytes) -> None:
        cp_id = topic[: -len("/in")]
        try:
            identity = validate_identity(cp_id)
        except InvalidIdentity as exc:
            self.ignored += 1
            log.warning("processor: ignoring message on %r: %s", topic, exc.reason)
            return
        # This task handles this one message: its log lines carry the CP id (--log-format json).
        CURRENT_CP.set(identity.cp_id)
        try:
            version = await self.versions.version_of(identity.thing_name)
        except (
            Exception
        ):  # still answer the CALL (the lookup's expected failures are handled inside)
            log.exception("%s: OCPP version lookup failed; assuming %s", cp_id, DEFAULT_VERSION)
            version = DEFAULT_VERSION
        reply = await self.answer(identity.cp_id, version, payload)
        self.handled += 1
        if reply is None:
            return
        try:
            await link.publish(identity.out_topic, reply.encode(), qos=1)
        except MqttConnectionLost:
            log.error("%s: reply lost, processor's MQTT connection is down: %s", cp_id, reply)
            raise


class _StartedProbe:
    """Forwards ``started()`` to the real task status and remembers that it was called."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self._inner = inner
        self.called = False

    def started(self, value: None = None) -> None:
        self.called = True
        self._inner.started(value)
