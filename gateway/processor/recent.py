"""The answers to the last CALLs, so that a CALL delivered again gets its first answer (pure).

The processor takes each CALL at least once: :class:`RecentAnswers` lets a
CALL received again get the answer it got the first time instead of being
handled twice.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

# A CALL seen again within this window (and among this many answers) gets the answer it got before.
# One minute: a redelivery is only useful within the gateway's --call-timeout (30 s), and a charger that
# restarts its message ids must not get a stale answer (a Heartbeat's currentTime) for long.
RECENT_ANSWERS = 10_000
RECENT_ANSWER_TTL = 60.0

CallKey = tuple[str, str, bytes]


def call_key(cp_id: str, message_id: str, frame: bytes) -> CallKey:
    """What makes a CALL the same CALL again: its CP, its message id and its exact bytes.

    A redelivery (and a CP's own retry) repeats the frame byte for byte;
    the bytes are in the key because some charge points restart counting
    message ids when they reconnect, and a new CALL with an old id must be
    handled, not answered from the cache.
    """
    return cp_id, message_id, hashlib.blake2b(frame, digest_size=16).digest()


@dataclass
class RecentAnswers:
    """The answers to the last ``capacity`` CALLs of the last ``ttl`` seconds (pure: the caller passes the clock).

    Entries expire in the order they were made (a hit does not extend one),
    so both bounds evict from the oldest end.  Memory: ``capacity``
    answers, each an OCPP-J frame the processor built (CALLERRORs are capped
    below 4 KB; CALLRESULTs are a few hundred bytes).
    """

    capacity: int = RECENT_ANSWERS
    ttl: float = RECENT_ANSWER_TTL
    _answers: OrderedDict[CallKey, tuple[float, str]] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: CallKey, now: float) -> str | None:
        """The answer given to this CALL, if it is recent enough."""
        entry = self._answers.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._answers[key]
            return None
        return entry[1]

    def put(self, key: CallKey, answer: str, now: float) -> None:
        self._answers.pop(key, None)
        self._answers[key] = (now + self.ttl, answer)
        while self._answers:
            oldest = next(iter(self._answers.values()))
            if len(self._answers) <= self.capacity and oldest[0] > now:
                break
            self._answers.popitem(last=False)
