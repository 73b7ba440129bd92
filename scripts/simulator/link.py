"""OCPP-J both ways over one trio-websocket connection, from the charge point's side.

One task reads (``serve``): a CALL from the central system is validated against the
version's JSON schema, answered at once, and its :class:`~.station.Answer` handed to
``after`` once the answer is sent; a CALLRESULT or CALLERROR goes to the one CALL we have
outstanding (OCPP-J allows one at a time each way: ``call`` holds a lock).  A CALLERROR,
an invalid answer or no answer within ``call_timeout`` is logged and ``call`` returns None:
never fatal.  A closed connection raises ``ConnectionClosed`` out of both.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import ocpp.messages
import trio
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult, unpack, validate_payload
from trio_websocket import WebSocketConnection

from .station import Answer

ocpp.messages.ASYNC_VALIDATION = False

log = logging.getLogger("simulate")

Handler = Callable[[str, dict[str, Any]], Answer]


class Link:
    def __init__(
        self,
        ws: WebSocketConnection,
        *,
        cp_id: str,
        version: str,
        call_timeout: float,
        frame_level: int = logging.INFO,
    ) -> None:
        self._ws = ws
        self._cp_id = cp_id
        self._version = version
        self._call_timeout = call_timeout
        self._frame_level = frame_level
        self._lock = trio.Lock()
        self._waiting: tuple[str, trio.Event, list[Any]] | None = None

    async def _send(self, text: str) -> None:
        log.log(self._frame_level, "%s: sent %s", self._cp_id, text)
        await self._ws.send_message(text)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Send a CALL; its CALLRESULT payload, or None (logged) on CALLERROR or silence."""
        message = Call(str(uuid.uuid4()), action, payload)
        await validate_payload(message, self._version)  # ours: a failure is a simulator bug
        async with self._lock:
            done, box = trio.Event(), list[CallResult | CallError]()
            self._waiting = (message.unique_id, done, box)
            try:
                await self._send(message.to_json())
                with trio.move_on_after(self._call_timeout):
                    await done.wait()
            finally:
                self._waiting = None
        if not box:
            log.warning("%s: no answer to %s within %g s", self._cp_id, action, self._call_timeout)
            return None
        reply = box[0]
        if isinstance(reply, CallError):
            log.warning(
                "%s: central system answered %s with CALLERROR %s: %s",
                self._cp_id,
                action,
                reply.error_code,
                reply.error_description,
            )
            return None
        reply.action = action
        try:
            await validate_payload(reply, self._version)
        except OCPPError as exc:
            log.warning("%s: invalid answer to %s: %s", self._cp_id, action, exc)
            return None
        result: dict[str, Any] = reply.payload
        return result

    async def serve(self, handle: Handler, after: Callable[[Answer], None]) -> None:
        """Read frames until the connection closes."""
        while True:
            message = await self._ws.get_message()
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            log.log(self._frame_level, "%s: received %s", self._cp_id, text)
            try:
                frame = unpack(text)
            except OCPPError as exc:
                log.warning("%s: unreadable frame from central system: %s", self._cp_id, exc)
                continue
            if isinstance(frame, Call):
                await self._answer(frame, handle, after)
            elif self._waiting is not None and frame.unique_id == self._waiting[0]:
                self._waiting[2].append(frame)
                self._waiting[1].set()
            else:
                log.warning("%s: answer to no outstanding CALL: %s", self._cp_id, text)

    async def _answer(self, frame: Call, handle: Handler, after: Callable[[Answer], None]) -> None:
        try:
            payload = frame.payload
            await validate_payload(frame, self._version)
            answer = handle(frame.action, payload)
        except OCPPError as exc:
            log.warning(
                "%s: %s refused: %s %s", self._cp_id, frame.action, exc.code, exc.description
            )
            error = [4, frame.unique_id, exc.code, exc.description, {}]
            await self._send(json.dumps(error))
            return
        result = CallResult(frame.unique_id, answer.payload, action=frame.action)
        await validate_payload(result, self._version)  # ours: a failure is a simulator bug
        await self._send(result.to_json())
        if answer.note:
            log.info("%s: %s", self._cp_id, answer.note)
        after(answer)
