"""Which CALL of a charge point is waiting for the CSMS's answer (pure: the caller passes the clock).

The gateway relays frames verbatim and does not parse them; to answer a CP
whose CALL the CSMS never answers (processor down, broker lost the message)
it only needs each frame's type and message id, which sit at the start of
every OCPP-J frame: ``[2,"<id>",...`` (CALL), ``[3,"<id>",...`` (CALLRESULT),
``[4,"<id>",...`` (CALLERROR).  A prefix match reads them without parsing the
JSON; a frame it cannot read is simply not tracked (the processor answers
malformed frames itself).

OCPP-J allows one outstanding CALL per direction, so each CP has at most one
entry.  When its deadline passes, the gateway sends the CP a CALLERROR
``InternalError`` in the CSMS's place; an answer that still arrives later is
dropped (the CP has had its answer), remembered for the last few ids only.

Matching CALL and answer also gives the round trip as the gateway sees it (CP's CALL
forwarded -> the CSMS's answer about to be sent to the CP): :attr:`CallTimeouts.round_trips`,
a fixed-bucket histogram that :mod:`.metrics` exports.  Only measured while time-outs are on.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from .histogram import FixedHistogram

# A message id: no quote, backslash or control character (raw ones are not JSON, and the id
# goes into log lines: a newline in it would forge one).
_FRAME_START = re.compile(r'\s*\[\s*([234])\s*,\s*"([^"\\\x00-\x1f\x7f-\x9f\u2028\u2029]{1,36})"')
LATE_IDS_REMEMBERED = 8


def frame_kind(text: str) -> tuple[int, str] | None:
    """``(message type, message id)`` of an OCPP-J frame, or None when the start does not read as one."""
    match = _FRAME_START.match(text)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


@dataclass(slots=True)
class _Waiting:
    message_id: str
    deadline: float
    started: float


@dataclass
class CallTimeouts:
    """Outstanding CP CALLs of every connection, by connection key."""

    timeout: float
    round_trips: FixedHistogram = field(default_factory=FixedHistogram)
    _waiting: dict[Hashable, _Waiting] = field(default_factory=dict)
    _late: dict[Hashable, deque[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._waiting)

    def sent_by_cp(self, key: Hashable, text: str, now: float) -> None:
        """A frame from the CP: a CALL starts the clock (a newer CALL replaces an older one)."""
        if self.timeout <= 0:
            return
        kind = frame_kind(text)
        if kind is not None and kind[0] == 2:
            self._waiting[key] = _Waiting(kind[1], now + self.timeout, now)

    def sent_to_cp(self, key: Hashable, text: str, now: float) -> bool:
        """A frame for the CP: stops the clock if it answers the waiting CALL (its round trip is
        recorded in :attr:`round_trips`).

        Returns False for a late answer to a CALL that was already answered
        with a time-out CALLERROR: the caller drops it.
        """
        if self.timeout <= 0:
            return True
        kind = frame_kind(text)
        if kind is None or kind[0] == 2:
            return True
        waiting = self._waiting.get(key)
        if waiting is not None and waiting.message_id == kind[1]:
            del self._waiting[key]
            self.round_trips.observe(now - waiting.started)
            return True
        late = self._late.get(key)
        return late is None or kind[1] not in late

    def expired(self, now: float) -> list[tuple[Hashable, str]]:
        """``(key, message id)`` of every CALL whose deadline has passed; each is reported once."""
        done = [(key, w.message_id) for key, w in self._waiting.items() if w.deadline <= now]
        for key, message_id in done:
            del self._waiting[key]
            self._late.setdefault(key, deque(maxlen=LATE_IDS_REMEMBERED)).append(message_id)
        return done

    def forget(self, key: Hashable) -> None:
        """The connection ended."""
        self._waiting.pop(key, None)
        self._late.pop(key, None)


def timeout_call_error(message_id: str, timeout: float) -> str:
    """The CALLERROR the gateway sends in the CSMS's place (``InternalError`` exists in 1.6 and 2.0.1)."""
    return json.dumps(
        [4, message_id, "InternalError", f"CSMS did not answer within {timeout:g} s", {}]
    )
