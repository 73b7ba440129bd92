"""HTTP Basic authentication of charge points: the slow part, and its bounds (I/O).

What to check is decided in :mod:`.admission`; this runs the check and owns
its state: the PBKDF2 hash runs in a worker thread (at most 4 at once); a
successful check is remembered (as a fast digest bound to the stored hash)
so that reconnects do not pay for it again.  Failures back off
exponentially per source address and per (CP id, source address): once
blocked, an attempt is answered without hashing and without extending the
block; at most ``MAX_HASHES_PER_SOURCE`` checks run at once per source, so
guesses cannot monopolise the hashing threads.  An unknown id is hashed
against a dummy and fails, in about the time a wrong password takes.
Passwords are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

import trio

from .admission import PasswordCheck
from .credentials import (
    PASSWORD_HASH_ATTRIBUTE,
    SECURITY_PROFILE_ATTRIBUTE,
    hash_password,
    parse_basic_auth,
    verify_password,
)
from .identity import ChargePointIdentity
from .ratelimit import FailureBackoff

log = logging.getLogger(__name__)

MAX_HASHES_PER_SOURCE = 2
MAX_REMEMBERED = 100_000


class PasswordChecker:
    """Checks HTTP Basic credentials (user = CP id) against the Thing's ``ocppPasswordHash``."""

    def __init__(self, *, max_threads: int = 4) -> None:
        self.failures = 0  # attempts answered 401
        self.blocked = 0  # of those, answered without checking (backoff, or too many in flight)
        self.hashes = 0  # slow password checks run (a guess answered while blocked costs none)
        self._backoff = FailureBackoff(free=5, base=1.0, cap=60.0)
        self._limiter = trio.CapacityLimiter(max_threads)
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))
        self._hashing: dict[str, int] = {}  # slow checks in flight, per source address
        self._verified: dict[str, bytes] = {}  # thing name -> fast digest of a verified password

    async def check(
        self,
        headers: list[tuple[bytes, bytes]],
        identity: ChargePointIdentity,
        attributes: dict[str, str] | None,
        source: str,
    ) -> PasswordCheck:
        """Check the ``Authorization`` header; ``attributes`` None: an unknown id (always fails)."""
        now = trio.current_time()
        by_source, by_id = "ip:" + source, f"{identity.cp_id}@{source}"
        blocked = max(
            self._backoff.blocked_for(by_source, now), self._backoff.blocked_for(by_id, now)
        )
        ok = False
        if blocked == 0 and self._hashing.get(source, 0) < MAX_HASHES_PER_SOURCE:
            # At most a couple of slow checks in flight per source: concurrent guesses cannot queue up
            # thousands of hashes before the first failure is counted.
            self._hashing[source] = self._hashing.get(source, 0) + 1
            try:
                ok = await self._check_password(headers, identity, attributes)
            finally:
                self._hashing[source] -= 1
                if not self._hashing[source]:
                    del self._hashing[source]
        elif blocked == 0:
            blocked = 1.0  # too many checks in flight from this source: refused like a blocked one
        if ok:
            self._backoff.succeeded(by_id)
            return PasswordCheck.VERIFIED
        self.failures += 1
        if blocked == 0:
            # Only checked attempts count: a refusal while blocked does not extend the block, so nobody
            # can keep another CP's id blocked by failing on purpose.
            self._backoff.failed(by_source, trio.current_time())
            self._backoff.failed(by_id, trio.current_time())
        profile = attributes.get(SECURITY_PROFILE_ATTRIBUTE, "1") if attributes is not None else "?"
        if blocked > 0:
            self.blocked += 1
            log.warning(
                "%s: HTTP Basic authentication refused from %s without checking: too many failures, "
                "blocked %.0f s more; 401",
                identity.cp_id,
                source,
                blocked,
            )
            return PasswordCheck.BLOCKED
        log.warning(
            "%s: HTTP Basic authentication failed from %s (security profile %s); 401",
            identity.cp_id,
            source,
            profile,
        )
        return PasswordCheck.FAILED

    async def _check_password(
        self,
        headers: list[tuple[bytes, bytes]],
        identity: ChargePointIdentity,
        attributes: dict[str, str] | None,
    ) -> bool:
        credentials = parse_basic_auth(headers)
        encoded = attributes.get(PASSWORD_HASH_ATTRIBUTE) if attributes is not None else None
        if credentials is None or credentials[0] != identity.cp_id:
            return False
        password = credentials[1]
        if encoded is None:  # unknown id (or no hash): the same work as a wrong password, then no
            self.hashes += 1
            await trio.to_thread.run_sync(
                verify_password, password, self._dummy_hash, limiter=self._limiter
            )
            return False
        fast = hashlib.sha256(encoded.encode() + b"\0" + password.encode()).digest()
        if hmac.compare_digest(self._verified.get(identity.thing_name, b""), fast):
            return True
        self.hashes += 1
        ok = await trio.to_thread.run_sync(
            verify_password, password, encoded, limiter=self._limiter
        )
        if ok:
            if len(self._verified) >= MAX_REMEMBERED:
                self._verified.clear()
            self._verified[identity.thing_name] = fast
        return ok
