"""The CPO message processor: answers charge points over the broker.

It plays the part of the AWS sample's Lambda: subscribed to ``+/in``, it
answers every OCPP CALL on ``<cp-id>/out`` with the handler registered for
its (version, action) (:mod:`.registry`, :mod:`.dispatch`); the
BootNotification handler writes the boot attributes into the device shadow
through ``iot-data`` (boto3).  It is a plain
MQTT client, so it runs beside fakeiot, Mosquitto or AWS IoT Core alike.

Which OCPP version a charge point speaks is not visible in its frames, so
the gateway records the negotiated subprotocol in the shadow
(``state.reported.ocppProtocol``) before it forwards anything.  The processor
learns it from those update requests (``$aws/things/+/shadow/update``, which
any broker delivers) and, when it has missed one, from GetThingShadow.

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

Every CALL may therefore arrive twice (and a CP may retry one).  The answers
to the last 10,000 CALLs of the last minute are kept
(:class:`~.recent.RecentAnswers`, keyed by CP id, message id and the
frame's bytes): a CALL seen again gets the same answer text, and one that
arrives while its first copy is still being answered waits for that answer;
either way it is handled once (a StartTransaction gets one transaction id).
The cache lives in the process: a CALL redelivered to a *new* processor
process is handled again.

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
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import ocpp.messages
import trio
from botocore.exceptions import BotoCoreError, ClientError
from ocpp.messages import Call, CallError, CallResult

from .. import ocppj
from ..errors import (
    InvalidIdentity,
    MqttConnectError,
    MqttConnectionLost,
    MqttSubscriptionRefused,
)
from ..identity import cp_id_for, validate_identity
from ..mqtt_link import Delivery, MqttDriver, MqttLink
from ..subprotocol import OCPP_VERSIONS
from .authorization import AcceptAll, Authorizer
from .config import ProcessorConfig
from .defaults_16 import sign_certificate as sign_certificate_16
from .defaults_201 import sign_certificate as sign_certificate_201
from .dispatch import dispatch
from .handlers import Context
from .recent import RECENT_ANSWER_TTL, RECENT_ANSWERS, CallKey, RecentAnswers, call_key
from .registry import HandlerRegistry, load_registry

log = logging.getLogger(__name__)

# ocpp validates in an asyncio executor unless told otherwise; we run under Trio.
ocpp.messages.ASYNC_VALIDATION = False

DEFAULT_VERSION = "2.0.1"
# The gateway's shadow update requests: seen on AWS IoT, fakeiot and plain brokers alike.
SHADOW_UPDATES = "$aws/things/+/shadow/update"
# Any device may publish to its own shadow topic: unreadable updates are logged at WARNING at most this often.
BAD_SHADOW_UPDATE_LOG_INTERVAL = 60.0
# After a crash (a bug: run() itself retries lost connections), run() restarts after 0.5 s, doubling up to 30 s;
# a run that lasted this long resets the backoff.
CRASH_BACKOFF_RESET = 60.0
# A CALL's handler gets this long (the gateway's --call-timeout: an answer after it is useless to the CP);
# then the CALL is answered InternalError and its slot (and the broker's in-flight window) freed.
HANDLER_TIMEOUT = 30.0
# CPs whose OCPP version is remembered (least recently used go first; a forgotten one is read again from
# the shadow): any device may publish its own shadow update, so the map must not grow with every id.
MAX_KNOWN_VERSIONS = 100_000


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


class Processor:
    """Answers the CALLs on ``+/in``.

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
        self._driver = driver
        self._iot_data = iot_data
        self.settings = settings
        self.handlers = load_registry(settings.handler_modules) if registry is None else registry
        self.context = Context(
            heartbeat_interval=settings.heartbeat_interval,
            authorizer=AcceptAll() if authorizer is None else authorizer,
            iot_data=iot_data,
        )
        self._versions: OrderedDict[str, str] = OrderedDict()  # LRU, max_known_versions
        self._limiter = trio.CapacityLimiter(settings.max_concurrent)
        self._recent = RecentAnswers(settings.recent_answers, settings.recent_answer_ttl)
        self._answering: dict[
            CallKey, trio.Event
        ] = {}  # CALLs being answered now (at most max_concurrent)
        self.handled = 0
        self.duplicates = 0  # CALLs received again and given their first answer
        self.reconnects = 0
        self.internal_errors = (
            0  # messages whose handling raised (answered InternalError where a CALL)
        )
        self.timeouts = 0  # CALLs whose handler did not return within handler_timeout
        self.bad_shadow_updates = 0  # shadow updates dropped as unreadable
        self.crashes = 0  # times run() ended with an exception under run_supervised()
        self._started = False
        self._subscribed = False
        self._next_shadow_warning = 0.0

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
            try:
                async with trio.open_nursery() as nursery:
                    while True:
                        delivery = await link.receive(ack=False)
                        if delivery.topic.endswith("/shadow/update"):
                            try:
                                self._learn_version(delivery.topic, delivery.payload)
                            except Exception:  # noqa: BLE001 - a bug must not let one device end the processor
                                self._bad_shadow_update(
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

    def _learn_version(self, topic: str, payload: bytes) -> None:
        """Note the OCPP version in a shadow update request; anything unreadable is dropped."""
        thing = topic.split("/")[2]
        try:
            document = ocppj.strict_loads(payload.decode("utf-8"))
        except (
            UnicodeDecodeError,
            ValueError,
        ) as exc:  # strict_loads raises JsonRejected (a ValueError) only
            self._bad_shadow_update(topic, str(exc)[:80])
            return
        # Devices update their shadows with all sorts of documents: only the gateway's carries the protocol.
        reported = document.get("state") if isinstance(document, dict) else None
        reported = reported.get("reported") if isinstance(reported, dict) else None
        protocol = reported.get("ocppProtocol") if isinstance(reported, dict) else None
        if isinstance(protocol, str) and protocol in OCPP_VERSIONS:
            self._remember_version(thing, OCPP_VERSIONS[protocol])

    def _remember_version(self, thing_name: str, version: str) -> None:
        self._versions[thing_name] = version
        self._versions.move_to_end(thing_name)
        while len(self._versions) > self.settings.max_known_versions:
            self._versions.popitem(last=False)

    def _bad_shadow_update(self, topic: str, why: str, *, exc_info: bool = False) -> None:
        self.bad_shadow_updates += 1
        now = time.monotonic()
        level = logging.DEBUG
        if now >= self._next_shadow_warning:
            self._next_shadow_warning = now + BAD_SHADOW_UPDATE_LOG_INTERVAL
            level = logging.WARNING
        log.log(
            level,
            "processor: dropped unreadable shadow update on %r (%s; %d so far, logged at most once a "
            "minute)",
            topic[:160],
            why,
            self.bad_shadow_updates,
            exc_info=exc_info,
        )

    async def _version_of(self, thing_name: str) -> str:
        version = self._versions.get(thing_name)
        if version is not None:
            self._versions.move_to_end(thing_name)
            return version
        try:
            response = await trio.to_thread.run_sync(
                lambda: self._iot_data.get_thing_shadow(thingName=thing_name)
            )
            protocol = ocppj.strict_loads(response["payload"].read().decode("utf-8"))["state"][
                "reported"
            ]["ocppProtocol"]
        except (ClientError, BotoCoreError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "%s: OCPP version unknown (%s); assuming %s",
                cp_id_for(thing_name),
                exc,
                DEFAULT_VERSION,
            )
            return DEFAULT_VERSION
        version = (
            OCPP_VERSIONS.get(protocol, DEFAULT_VERSION)
            if isinstance(protocol, str)
            else DEFAULT_VERSION
        )
        self._remember_version(thing_name, version)
        return version

    async def _handle(self, link: MqttLink, topic: str, payload: bytes) -> None:
        cp_id = topic[: -len("/in")]
        try:
            identity = validate_identity(cp_id)
        except InvalidIdentity as exc:
            log.warning("processor: ignoring message on %r: %s", topic, exc.reason)
            return
        try:
            version = await self._version_of(identity.thing_name)
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

    async def answer(self, cp_id: str, version: str, payload: bytes) -> str | None:
        """The frame to send back for one frame from ``cp_id`` (None: no answer).

        A CALL received again (see the module's notes) gets the answer its
        first copy got, without being handled again.  Never raises but for
        cancellation: whatever goes wrong past parsing is logged with its
        traceback and answered with a CALLERROR ``InternalError`` carrying the
        CALL's message id.
        """
        try:
            frame = self._parse(cp_id, version, payload)
        except Exception:  # noqa: BLE001 - logged by _internal_error; a bug costs this frame, not the processor
            return self._internal_error(cp_id, ocppj.UNKNOWN_MESSAGE_ID)
        if not isinstance(frame, Call):
            return frame  # a CALLERROR for a malformed frame, or None
        key = call_key(cp_id, frame.unique_id, payload)
        duplicate = False
        while True:
            cached = self._recent.get(key, trio.current_time())
            pending = self._answering.get(key) if cached is None else None
            if not duplicate and (cached is not None or pending is not None):
                duplicate = True
                self.duplicates += 1
                log.debug(
                    "%s: CALL %s received again; given its first answer", cp_id, frame.unique_id
                )
            if cached is not None:
                return cached
            if pending is None:
                break
            await (
                pending.wait()
            )  # its first copy is being answered; if that is cancelled, this one answers
        done = self._answering[key] = trio.Event()
        try:
            try:
                reply = await self._answer_in_time(cp_id, version, frame)
            except Exception:  # noqa: BLE001 - logged by _internal_error; a bug costs this CALL, not the processor
                reply = self._internal_error(cp_id, frame.unique_id)
            self._recent.put(key, reply, trio.current_time())
        finally:
            del self._answering[key]
            done.set()
        return reply

    async def _answer_in_time(self, cp_id: str, version: str, frame: Call) -> str:
        """The handler's answer, or CALLERROR InternalError once it has taken ``handler_timeout``.

        A handler blocked in a worker thread is only cancelled when the thread returns (trio
        never abandons one): such handlers must bound their own I/O.
        """
        limit = self.settings.handler_timeout
        with trio.move_on_after(limit):
            return await self._answer_call(cp_id, version, frame)
        self.internal_errors += 1
        self.timeouts += 1
        log.error(
            "%s: %s %r not answered by its handler within %g s; answered InternalError",
            cp_id,
            frame.action,
            frame.unique_id,
            limit,
        )
        return ocppj.call_error(
            frame.unique_id,
            "InternalError",
            f"The CSMS did not answer {frame.action} within {limit:g} s",
        )

    def _internal_error(self, cp_id: str, message_id: str) -> str:
        self.internal_errors += 1
        log.exception("%s: internal error on message %s; answered InternalError", cp_id, message_id)
        return ocppj.call_error(
            message_id, "InternalError", "The CSMS could not process this message"
        )

    def _parse(self, cp_id: str, version: str, payload: bytes) -> Call | str | None:
        """The CALL in ``payload``, or the answer to a frame that is not one (None: none)."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return ocppj.call_error(
                ocppj.UNKNOWN_MESSAGE_ID,
                ocppj.format_violation_code(version),
                "Message is not valid UTF-8",
            )
        try:
            frame: Call | CallResult | CallError = ocppj.parse_frame(text, version)
        except ocppj.FrameError as exc:
            log.info("%s: malformed frame answered with %s: %s", cp_id, exc.code, exc.description)
            return exc.to_call_error()
        if not isinstance(frame, Call):
            # A CALLRESULT/CALLERROR answers a CALL the CPO sent; nothing to reply.
            log.info("%s: received %s for message %s", cp_id, type(frame).__name__, frame.unique_id)
            return None
        return frame

    async def _answer_call(self, cp_id: str, version: str, frame: Call) -> str:
        return await dispatch(self.handlers, self.context, cp_id, version, frame)


class _StartedProbe:
    """Forwards ``started()`` to the real task status and remembers that it was called."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self._inner = inner
        self.called = False

    def started(self, value: None = None) -> None:
        self.called = True
        self._inner.started(value)
