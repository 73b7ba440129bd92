"""The processor's answer to one frame from a charge point, without MQTT.

:class:`Answerer` turns the bytes a CP sent into the frame to send back: a
CALL through its handler (:func:`.dispatch.dispatch`, bounded by
``handler_timeout``), a CALLERROR for a malformed frame, nothing for a
CALLRESULT or CALLERROR.  :class:`.service.Processor` is an Answerer that
takes the frames from the broker and publishes the answers.

Every CALL may arrive twice (the broker delivers at least once, and a CP may
retry one).  The answers to the last 10,000 CALLs of the last minute are kept
(:class:`~.recent.RecentAnswers`, keyed by CP id, message id and the
frame's bytes): a CALL seen again gets the same answer text, and one that
arrives while its first copy is still being answered waits for that answer;
either way it is handled once (a StartTransaction gets one transaction id).
The cache lives in the process: a CALL redelivered to a *new* processor
process is handled again.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio
from ocpp.messages import Call, CallError, CallResult

from .. import ocppj
from ..histogram import FixedHistogram
from .actions import known_actions
from .authorization import AcceptAll, Authorizer
from .dispatch import dispatch
from .handlers import Context
from .recent import CallKey, RecentAnswers, call_key
from .registry import HandlerRegistry, load_registry

if TYPE_CHECKING:
    from .service import ProcessorSettings

log = logging.getLogger(__name__)

OTHER = "other"  # the label of an action or error code outside the known set
ANSWERED = "answered"
# Every CALLERROR code of OCPP 1.6 and 2.0.1 (both spellings); any other code is counted as "other".
ERROR_CODES = frozenset(
    {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "FormatViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "OccurrenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
        "MessageTypeNotSupported",
        "RpcFrameworkError",
    }
)


def action_label(version: str, action: str) -> str:
    """``action`` as a metric label: bounded to the version's known actions (else ``other``)."""
    return action if action in known_actions(version) else OTHER


def outcome_of(reply: str) -> str:
    """``answered`` for a CALLRESULT, else the CALLERROR's code (bounded, else ``other``).

    Only the error path parses the reply; a CALLRESULT is told by its first characters."""
    if reply.startswith("[3"):
        return ANSWERED
    try:
        code = ocppj.strict_loads(reply)[2]
    except (ValueError, IndexError, TypeError):
        return OTHER
    return code if isinstance(code, str) and code in ERROR_CODES else OTHER


class Answerer:
    """Answers the frames of charge points with the registered handlers.

    ``authorizer`` decides id tokens (default :class:`AcceptAll`);
    ``registry`` the handlers (default: :func:`load_registry` of
    ``settings.handler_modules``, which raises HandlerLoadError, a
    ConfigError, for a module that cannot be loaded).
    """

    def __init__(
        self,
        iot_data: Any,
        settings: ProcessorSettings,
        *,
        authorizer: Authorizer | None = None,
        registry: HandlerRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.handlers = load_registry(settings.handler_modules) if registry is None else registry
        self.context = Context(
            heartbeat_interval=settings.heartbeat_interval,
            authorizer=AcceptAll() if authorizer is None else authorizer,
            iot_data=iot_data,
        )
        self._recent = RecentAnswers(settings.recent_answers, settings.recent_answer_ttl)
        self._answering: dict[
            CallKey, trio.Event
        ] = {}  # CALLs being answered now (at most max_concurrent)
        self.duplicates = 0  # CALLs received again and given their first answer
        self.internal_errors = (
            0  # messages whose handling raised (answered InternalError where a CALL)
        )
        self.timeouts = 0  # CALLs whose handler did not return within handler_timeout
        # The metrics (gateway/processor/metrics.py reads them at scrape time):
        # (version, action label, outcome) -> CALLs answered, duplicates not counted again;
        self.calls: Counter[tuple[str, str, str]] = Counter()
        # (version, "CALLRESULT" | "CALLERROR") -> answers from CPs to CALLs the CSMS sent.
        self.cp_answers: Counter[tuple[str, str]] = Counter()
        self.handler_seconds = FixedHistogram()  # a CALL's handling, schema checks included

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
        began = trio.current_time()
        try:
            try:
                reply = await self._answer_in_time(cp_id, version, frame)
            except Exception:  # noqa: BLE001 - logged by _internal_error; a bug costs this CALL, not the processor
                reply = self._internal_error(cp_id, frame.unique_id)
            self.handler_seconds.observe(trio.current_time() - began)
            self.calls[version, action_label(version, frame.action), outcome_of(reply)] += 1
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
            self.calls[version, OTHER, ocppj.format_violation_code(version)] += 1
            return ocppj.call_error(
                ocppj.UNKNOWN_MESSAGE_ID,
                ocppj.format_violation_code(version),
                "Message is not valid UTF-8",
            )
        try:
            frame: Call | CallResult | CallError = ocppj.parse_frame(text, version)
        except ocppj.FrameError as exc:
            log.info("%s: malformed frame answered with %s: %s", cp_id, exc.code, exc.description)
            # Its action cannot be trusted (or is absent): counted as "other".
            self.calls[version, OTHER, exc.code if exc.code in ERROR_CODES else OTHER] += 1
            return exc.to_call_error()
        if not isinstance(frame, Call):
            # A CALLRESULT/CALLERROR answers a CALL the CPO sent; nothing to reply.
            self.cp_answers[
                version, "CALLRESULT" if isinstance(frame, CallResult) else "CALLERROR"
            ] += 1
            log.info("%s: received %s for message %s", cp_id, type(frame).__name__, frame.unique_id)
            return None
        return frame

    async def _answer_call(self, cp_id: str, version: str, frame: Call) -> str:
        return await dispatch(self.handlers, self.context, cp_id, version, frame)
