"""CSMS-initiated CALLs to a charge point (pure): validation, correlation, queueing, presence.

The I/O lives in :mod:`.command_service` (MQTT) and :mod:`.command_http` (the HTTP API);
this module never touches a socket, a clock or a thread, so each rule is unit-tested alone.

* A command is ``(cp_id, action, payload)``.  :func:`check_command` refuses a bad one before
  anything is sent (:class:`InvalidCommand`, naming the field), validating the payload against
  the action's *request* schema of the CP's OCPP version (the ``ocpp`` package's schemas,
  checked in :mod:`.command_schemas`).
* :func:`build_call` gives it a fresh message id (uuid4); :func:`match_answer` reads a frame
  from ``<cp-id>/in`` and returns the :data:`Outcome` when it answers that id: the CALLRESULT
  (:class:`CallAnswered`, its payload validated against the *response* schema, else
  :class:`ResponseInvalid` with the raw payload) or the CALLERROR (:class:`CallRejected`).
* :class:`CommandQueues`: OCPP-J allows one outstanding CALL per direction, so commands for a
  CP wait in a bounded FIFO (:class:`QueueFull` beyond it).
* :class:`Presence`: whether a CP's MQTT client is connected, from AWS IoT's lifecycle events
  (``$aws/events/presence/connected|disconnected/<client-id>``; fakeiot publishes them too).
* Every refusal is a :class:`CommandFailed` carrying its HTTP status and a short error name.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ocpp.messages import Call, CallError, CallResult, MessageType

from .. import ocppj
from ..errors import GatewayError, InvalidIdentity
from ..identity import validate_identity
from ..subprotocol import OCPP_VERSIONS
from .command_schemas import ACTION, check_response, field_of, schema_error

PRESENCE_TOPICS = ("$aws/events/presence/connected/+", "$aws/events/presence/disconnected/+")


# -- errors --------------------------------------------------------------------------------


class CommandFailed(GatewayError):
    """A command that got no answer from the CP; ``status``/``error`` are what the HTTP API says."""

    status = 500
    error = "CommandFailed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "message": self.message}


class InvalidCommand(CommandFailed):
    """The command itself is wrong (bad CP id, action or payload); nothing was sent."""

    status = 400
    error = "InvalidRequest"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "field": self.field}


class UnknownChargePoint(CommandFailed):
    status = 404
    error = "UnknownChargePoint"


class ChargePointOffline(CommandFailed):
    status = 409
    error = "ChargePointOffline"


class QueueFull(CommandFailed):
    status = 429
    error = "QueueFull"


class BrokerUnavailable(CommandFailed):
    status = 503
    error = "BrokerUnavailable"


class CommandTimedOut(CommandFailed):
    status = 504
    error = "Timeout"


# -- outcomes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallAnswered:
    """The CP's CALLRESULT, valid against the action's response schema."""

    message_id: str
    payload: dict[str, Any]
    status = 200

    def to_json(self) -> dict[str, Any]:
        return self.payload


@dataclass(frozen=True)
class CallRejected:
    """The CP's CALLERROR."""

    message_id: str
    code: str
    description: str
    details: Any
    status = 502

    def to_json(self) -> dict[str, Any]:
        return {
            "error": "CallError",
            "code": self.code,
            "description": self.description,
            "details": self.details,
        }


@dataclass(frozen=True)
class ResponseInvalid:
    """A CALLRESULT whose payload breaks the action's response schema."""

    message_id: str
    reason: str
    payload: Any
    status = 502

    def to_json(self) -> dict[str, Any]:
        return {"error": "InvalidResponse", "message": self.reason, "payload": self.payload}


Outcome = CallAnswered | CallRejected | ResponseInvalid


# -- validation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A checked command, ready to be queued."""

    cp_id: str
    action: str
    payload: dict[str, Any]
    version: str


def check_target(cp_id: str, action: str) -> None:
    """Refuse a malformed CP id or action name (before any lookup)."""
    try:
        validate_identity(cp_id)
    except InvalidIdentity as exc:
        raise InvalidCommand(f"invalid charge point id: {exc.reason}", "cp_id") from None
    if not ACTION.match(action):
        raise InvalidCommand(
            f"invalid action {action[:70]!r}: an OCPP action name such as Reset", "action"
        )


def parse_payload(text: str | bytes) -> dict[str, Any]:
    """The request's JSON object (depth-bounded, no NaN); :class:`InvalidCommand` otherwise."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        payload = ocppj.strict_loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidCommand(f"the request payload is not valid JSON: {exc}", "payload") from None
    if not isinstance(payload, dict):
        raise InvalidCommand("the request payload must be a JSON object", "payload")
    return payload


def check_command(cp_id: str, action: str, payload: dict[str, Any], version: str) -> Command:
    """Validate ``payload`` against ``action``'s request schema of ``version``.

    Raises :class:`InvalidCommand` naming the field (``field``: a dotted path in the payload).
    """
    check_target(cp_id, action)
    try:
        error = schema_error(MessageType.Call, action, version, payload)
    except LookupError:
        raise InvalidCommand(f"OCPP {version} has no action {action!r}", "action") from None
    if error is not None:
        where = field_of(error)
        raise InvalidCommand(
            ocppj.clip_text(f"invalid {action} request: {where}: {error.message}", 300), where
        )
    return Command(cp_id, action, payload, version)


def version_from_shadow(document: Any) -> str | None:
    """The OCPP version the gateway recorded in a shadow (``state.reported.ocppProtocol``)."""
    state = document.get("state") if isinstance(document, dict) else None
    reported = state.get("reported") if isinstance(state, dict) else None
    protocol = reported.get("ocppProtocol") if isinstance(reported, dict) else None
    return OCPP_VERSIONS.get(protocol) if isinstance(protocol, str) else None


# -- correlation ---------------------------------------------------------------------------


def build_call(command: Command) -> tuple[str, str]:
    """(message id, the CALL frame): a fresh uuid4 per command."""
    message_id = str(uuid.uuid4())
    frame: str = Call(message_id, command.action, command.payload).to_json()
    return message_id, frame


def match_answer(command: Command, message_id: str, payload: bytes) -> Outcome | None:
    """The outcome when ``payload`` (a frame from ``<cp-id>/in``) answers ``message_id``, else None.

    CALLs from the CP, answers to other ids and unreadable frames are not ours: None.
    """
    try:
        frame = ocppj.parse_frame(payload.decode("utf-8"), command.version)
    except (UnicodeDecodeError, ocppj.FrameError):
        return None
    if isinstance(frame, Call) or frame.unique_id != message_id:
        return None
    if isinstance(frame, CallError):
        return CallRejected(
            message_id, frame.error_code, frame.error_description, frame.error_details
        )
    assert isinstance(frame, CallResult)
    reason = check_response(command.action, command.version, frame.payload)
    if reason is not None:
        return ResponseInvalid(message_id, reason, frame.payload)
    return CallAnswered(message_id, frame.payload)


# -- queueing ------------------------------------------------------------------------------


@dataclass
class CommandQueues:
    """Per CP: the outstanding command (the head) and at most ``max_waiting`` behind it, FIFO."""

    max_waiting: int
    _queues: dict[str, deque[object]] = field(default_factory=dict)

    def enter(self, cp_id: str, ticket: object) -> bool:
        """Queue ``ticket``; True when it is the head (may be sent now). Raises :class:`QueueFull`."""
        queue = self._queues.setdefault(cp_id, deque())
        if len(queue) > self.max_waiting:
            raise QueueFull(
                f"{cp_id}: {len(queue) - 1} commands already wait behind the outstanding one "
                f"(--command-queue {self.max_waiting}); try again later"
            )
        queue.append(ticket)
        return len(queue) == 1

    def head(self, cp_id: str) -> object | None:
        """The command to send now (or being sent) for ``cp_id``; None: its queue is empty."""
        queue = self._queues.get(cp_id)
        return queue[0] if queue else None

    def leave(self, cp_id: str, ticket: object) -> object | None:
        """Remove ``ticket`` (done, or its caller gave up); returns the new head, if it changed."""
        queue = self._queues.get(cp_id)
        if not queue:
            return None
        was_head = queue[0] is ticket
        try:
            queue.remove(ticket)
        except ValueError:
            return None
        if not queue:
            del self._queues[cp_id]
            return None
        return queue[0] if was_head else None

    def waiting(self, cp_id: str) -> int:
        """Commands for ``cp_id`` queued or outstanding."""
        return len(self._queues.get(cp_id, ()))


# -- presence ------------------------------------------------------------------------------


@dataclass
class Presence:
    """Connected or not, per MQTT client id (the gateway connects each CP as client id = CP id).

    Only what the lifecycle events since the start said: :meth:`online` is None for a client
    not heard of.  A disconnect of an older session (a reconnecting CP's previous connection,
    ``DUPLICATE_CLIENTID``) does not mark the newer one offline.
    """

    _sessions: dict[str, str | None] = field(
        default_factory=dict
    )  # client id -> session, None: gone

    def apply(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) != 5 or parts[:3] != ["$aws", "events", "presence"]:
            return
        kind, client_id = parts[3], parts[4]
        try:
            event = json.loads(payload)
        except ValueError:
            return
        session = event.get("sessionIdentifier") if isinstance(event, dict) else None
        if kind == "connected":
            self._sessions[client_id] = str(session)
        elif kind == "disconnected":
            current = self._sessions.get(client_id)
            if current is None or session is None or str(session) == current:
                self._sessions[client_id] = None

    def online(self, client_id: str) -> bool | None:
        if client_id not in self._sessions:
            return None
        return self._sessions[client_id] is not None
