"""The public API for the CPO's OCPP handlers: ``@handler``, :class:`Call`, :class:`Context`.

A handler answers one CALL of one OCPP version::

    from gateway.processor.handlers import Call, handler

    @handler("2.0.1", "TransactionEvent")
    async def transaction_event(call: Call) -> dict[str, Any]:
        ...  # await the CPO's services
        return {}

It receives the CALL, its request payload already validated against the
action's JSON schema, and returns the CALLRESULT payload, which the processor
validates against the response schema before sending it.  To answer with a
CALLERROR, raise one of the ``ocpp`` package's errors (``ocpp.exceptions``:
``NotSupportedError``, ``PropertyConstraintViolationError``,
``GenericError``...): its code and description become the CALLERROR's.  Any
other exception, or an invalid response, is answered ``InternalError`` and
logged with the CP id.

``@handler`` only marks the function; the processor registers the marked
functions of the modules it loads (the built-in defaults, then the
``ocpp_gateway.handlers`` entry points, then each ``--handlers`` module), a
later registration replacing an earlier one for the same (version, action).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import trio
from botocore.exceptions import BotoCoreError, ClientError

from ..identity import thing_name_for
from .authorization import AcceptAll, Authorizer

log = logging.getLogger(__name__)

Json = dict[str, Any]

# The OCPP versions a handler can be registered for (``ocpp2.0`` CPs are answered as 2.0.1).
VERSIONS: Final = ("1.6", "2.0.1")
# The entry-point group whose modules are loaded as handler modules.
ENTRY_POINT_GROUP: Final = "ocpp_gateway.handlers"
# The attribute ``@handler`` sets on a function: the (version, action) pairs it answers.
_MARK: Final = "__ocpp_handler_for__"


def utc_now() -> str:
    """ISO 8601 with an explicit UTC offset, as OCPP requires for currentTime."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _transaction_ids() -> itertools.count[int]:
    # Seeded from the clock so that a restarted processor does not reuse recent ids.
    return itertools.count(int(time.time()) % 1_000_000_000)


@dataclass
class Context:
    """What every handler may use; one per processor, shared by all its CALLs.

    ``iot_data`` is the boto3 ``iot-data`` client (blocking: call it in a
    worker thread, as :meth:`update_shadow` does).
    """

    heartbeat_interval: int
    authorizer: Authorizer = field(default_factory=AcceptAll)
    iot_data: Any = None
    now: Callable[[], str] = utc_now
    transaction_ids: itertools.count[int] = field(default_factory=_transaction_ids)

    async def update_shadow(self, cp_id: str, reported: Json) -> None:
        """Merge ``reported`` into the CP's device shadow (``state.reported``) in a worker thread.

        A refusal of the shadow service is logged, not raised: the CALL is
        still answered.
        """
        document = json.dumps({"state": {"reported": reported}}).encode()
        thing_name = thing_name_for(cp_id)
        try:
            await trio.to_thread.run_sync(
                lambda: self.iot_data.update_thing_shadow(thingName=thing_name, payload=document)
            )
        except (ClientError, BotoCoreError) as exc:
            log.error("%s: could not update the shadow: %s", cp_id, exc)


@dataclass(frozen=True)
class Call:
    """One CALL from a charge point, as a handler receives it."""

    cp_id: str
    version: str  # "1.6" or "2.0.1"
    action: str
    message_id: str
    payload: Json  # valid against the action's request schema
    context: Context


Handler = Callable[[Call], Awaitable[Json]]


def handler(version: str, action: str) -> Callable[[Handler], Handler]:
    """Mark an ``async def f(call: Call) -> dict`` as the answer to ``action`` of OCPP ``version``.

    Stackable (one function for both versions).  The function is returned
    unchanged; the processor registers it when it loads the function's module.
    """
    if version not in VERSIONS:
        raise ValueError(f"@handler: OCPP version {version!r} is not one of {', '.join(VERSIONS)}")

    def mark(function: Handler) -> Handler:
        marks: list[tuple[str, str]] = list(getattr(function, _MARK, ()))
        marks.append((version, action))
        setattr(function, _MARK, tuple(marks))
        return function

    return mark


def marks_of(function: object) -> tuple[tuple[str, str], ...]:
    """The (version, action) pairs ``@handler`` marked ``function`` for (none: not a handler)."""
    marks = getattr(function, _MARK, ())
    return tuple(marks) if isinstance(marks, tuple) else ()
