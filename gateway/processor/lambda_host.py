"""The message processor hosted by AWS Lambda: one rule event in, its answer published.

The MQTT processor (:mod:`.service`) takes the CPs' frames from ``+/in``
itself; on AWS the IoT rule on ``+/in`` (:data:`.lambda_event.RULE_SQL`)
hands each frame to a Lambda function instead, and :class:`LambdaProcessor`
answers it with the same :class:`~.answering.Answerer` (the same handler
table, dispatch and schema checks, and the same cache that gives a CALL
delivered again its first answer), then publishes the answer to
``<cp-id>/out`` through iot-data's Publish (QoS 1).  BootNotification's
shadow update is the handler's own, as in the MQTT processor.

The CP's OCPP version follows the MQTT processor's rules
(:mod:`.versions`): ``state.reported.ocppProtocol`` in the shadow, written
by the gateway before it forwards anything, else 2.0.1.  The MQTT
processor learns it from the gateway's shadow updates as they pass; a Lambda
function sees only ``+/in``, so it reads the shadow (GetThingShadow) for
every event: a CP that reconnects speaking another version is answered in
that version from its next frame.

What may go wrong, and what happens:

* an event that is not the rule's output (:class:`~.lambda_event.BadEvent`):
  logged at WARNING and dropped (there is no charge point to answer);
* a frame that is not OCPP-J: the Answerer's CALLERROR, published as any answer;
* a handler that fails or takes too long: CALLERROR ``InternalError``, within
  the invocation's remaining time less :data:`PUBLISH_RESERVE`;
* Publish refused or unreachable: :class:`AnswerNotPublished` is raised, so
  that Lambda retries the event (twice, for the asynchronous invocations an
  IoT rule makes); the retry gets the cached answer, it is not handled again.

Runs under Trio, one ``trio.run`` per event (:mod:`.lambda_handler`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

import trio
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import GatewayError
from .answering import Answerer
from .authorization import Authorizer
from .lambda_event import BadEvent, RuleEvent, parse_event
from .registry import HandlerRegistry
from .service import HANDLER_TIMEOUT, ProcessorSettings
from .versions import OcppVersions

log = logging.getLogger(__name__)

# Of an invocation's remaining time, what is kept for publishing the answer once the handler is done.
PUBLISH_RESERVE = 2.0
# The least a handler is given, however little time the invocation has left.
MIN_HANDLER_TIME = 0.5


class AnswerNotPublished(GatewayError):
    """The answer could not be published to ``<cp-id>/out`` (raised so that Lambda retries)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one event (the function's return value, for logs and tests)."""

    result: Literal["answered", "no-answer", "dropped"]
    cp_id: str | None = None
    version: str | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"result": self.result}
        for key, value in (
            ("chargePointId", self.cp_id),
            ("ocppVersion", self.version),
            ("reason", self.reason),
        ):
            if value is not None:
                doc[key] = value
        return doc


class LambdaProcessor:
    """Answers the frames an IoT rule hands a Lambda function; one per container.

    ``iot_data`` is the boto3 ``iot-data`` client (shadows and Publish);
    ``authorizer`` and ``registry`` as for :class:`~.answering.Answerer`.
    """

    def __init__(
        self,
        iot_data: Any,
        settings: ProcessorSettings,
        *,
        authorizer: Authorizer | None = None,
        registry: HandlerRegistry | None = None,
    ) -> None:
        self.answerer = Answerer(iot_data, settings, authorizer=authorizer, registry=registry)
        self._iot_data = iot_data
        self._settings = settings
        self.dropped = 0  # events that were not the rule's output
        self.published = 0

    async def process(self, event: Any, time_left: float) -> Outcome:
        """Answer one event within ``time_left`` seconds; raises only :class:`AnswerNotPublished`."""
        try:
            rule_event = parse_event(event)
        except BadEvent as exc:
            self.dropped += 1
            log.warning("processor: event dropped: %s", exc)
            return Outcome("dropped", reason=str(exc))
        cp_id = rule_event.identity.cp_id
        deadline = trio.current_time() + max(time_left, MIN_HANDLER_TIME)
        with trio.move_on_at(deadline):
            return await self._answer(rule_event, deadline)
        log.error("%s: not answered within the invocation's %.1f s left", cp_id, time_left)
        return Outcome("no-answer", cp_id, reason="the invocation ran out of time")

    async def _answer(self, rule_event: RuleEvent, deadline: float) -> Outcome:
        identity = rule_event.identity
        # A fresh map per event: the shadow is read each time (see the module's notes).
        version = await OcppVersions(self._iot_data, max_known=1).version_of(identity.thing_name)
        # The handler's bound is the MQTT processor's, shortened to what this invocation has left
        # once the shadow has been read, less the time kept for publishing.
        time_left = deadline - trio.current_time()
        handler_time = max(MIN_HANDLER_TIME, min(HANDLER_TIMEOUT, time_left - PUBLISH_RESERVE))
        handler_time = round(handler_time, 1)  # said in the CALLERROR's description
        self.answerer.settings = replace(self._settings, handler_timeout=handler_time)
        reply = await self.answerer.answer(identity.cp_id, version, rule_event.frame)
        if reply is None:
            return Outcome("no-answer", identity.cp_id, version, "not a CALL: nothing to answer")
        payload = reply.encode()
        try:
            await trio.to_thread.run_sync(
                lambda: self._iot_data.publish(topic=identity.out_topic, qos=1, payload=payload)
            )
        except (ClientError, BotoCoreError) as exc:
            log.error("%s: answer not published to %s: %s", identity.cp_id, identity.out_topic, exc)
            raise AnswerNotPublished(
                f"{identity.cp_id}: answer not published to {identity.out_topic}: {exc}"
            ) from None
        self.published += 1
        log.debug("%s: answered on %s: %s", identity.cp_id, identity.out_topic, reply)
        return Outcome("answered", identity.cp_id, version)
