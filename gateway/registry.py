"""Is this charge point registered?  DescribeThing through boto3, cached.

Results are cached (registered: ``ttl`` seconds; not registered:
``negative_ttl`` seconds, short, so a freshly created Thing is usable at
once), and concurrent look-ups of one name share a single request, so a
reconnect storm costs the registry one call per charge point at most.
With ``--registry-prefetch`` the gateway lists every Thing at start
(:meth:`Registry.prefetch`), and such a storm costs none.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any

import trio
from botocore.exceptions import BotoCoreError, ClientError

from .errors import RegistryUnavailable, UnknownChargePoint
from .identity import ChargePointIdentity
from .ratelimit import Pacer

log = logging.getLogger(__name__)


class Registry:
    def __init__(
        self,
        iot_client: Any,
        *,
        ttl: float = 60.0,
        negative_ttl: float = 2.0,
        max_concurrent: int = 32,
        max_entries: int = 200_000,
        rate: float = 200.0,
        max_wait: float = 10.0,
    ) -> None:
        self._iot = iot_client
        self._max_entries = max_entries
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._limiter = trio.CapacityLimiter(max_concurrent)
        self._cache: dict[str, tuple[dict[str, str] | None, float]] = {}
        self._inflight: dict[str, trio.Event] = {}
        self.lookups = 0  # DescribeThing calls made
        self.cache_hits = 0  # look-ups answered from the cache (or by a look-up already in flight)
        self.errors = 0  # DescribeThing calls that failed (not "no such Thing")
        self.rate_limited = 0  # look-ups refused by this process's --registry-rate
        self.failing = False  # the latest DescribeThing failed (readiness: see .health)
        self.last_attempt = -math.inf  # trio.current_time() of the latest DescribeThing
        # DescribeThing calls per second from this process (AWS: ~350 TPS per account, shared by every
        # gateway): a storm waits its turn, up to max_wait; beyond it the CP is told to try again later.
        self._pacer = Pacer(rate, max(1, int(rate)), max_wait)

    async def check(self, identity: ChargePointIdentity) -> dict[str, str]:
        """The Thing's attributes; raises UnknownChargePoint or RegistryUnavailable."""
        attributes = await self.lookup(identity.thing_name)
        if attributes is None:
            raise UnknownChargePoint(identity.cp_id)
        return attributes

    async def is_registered(self, thing_name: str) -> bool:
        return await self.lookup(thing_name) is not None

    async def lookup(self, thing_name: str) -> dict[str, str] | None:
        """The Thing's attributes, or None when there is no such Thing."""
        while True:
            cached = self._cache.get(thing_name)
            if cached is not None and cached[1] > trio.current_time():
                self.cache_hits += 1
                return cached[0]
            pending = self._inflight.get(thing_name)
            if pending is None:
                break
            await pending.wait()
            if thing_name not in self._cache:
                # The shared look-up failed; try our own.
                break
        done = self._inflight[thing_name] = trio.Event()
        try:
            attributes = await self._describe(thing_name)
            ttl = self._ttl if attributes is not None else self._negative_ttl
            if len(self._cache) >= self._max_entries:
                self._prune()
            self._cache[thing_name] = (attributes, trio.current_time() + ttl)
            return attributes
        finally:
            del self._inflight[thing_name]
            done.set()

    async def prefetch(self) -> int:
        """Cache every Thing the registry lists (ListThings, 250 a page); returns how many.

        After a restart every CP reconnects at once, and each would cost a
        DescribeThing, paced at ``rate`` (AWS: about 350/s per account):
        10,000 CPs at 200/s wait up to 50 s for their turn.  Listed here, they
        are admitted from the cache, for ``ttl`` as any look-up.  At most
        ``max_entries`` are kept; a failure (the gateway's role may not allow
        iot:ListThings) is logged and stops the listing, and look-ups go on
        as usual.  Runs beside the server: CPs arriving meanwhile are looked up.
        """
        cached = 0
        try:
            cached = await self._list_into_cache()
        except Exception:  # optional: whatever goes wrong must never end the gateway
            log.exception("registry prefetch failed (look-ups go on as usual)")
            return 0
        log.info("registry prefetch: %d Things cached for %g s", cached, self._ttl)
        return cached

    async def _list_into_cache(self) -> int:
        cached = 0
        token: str | None = None
        seen_tokens: set[str] = set()
        for _ in range(self._max_entries // 250 + 2):  # bounded, whatever the pages say
            page_args: dict[str, Any] = {"maxResults": 250}
            if token is not None:
                page_args["nextToken"] = token
            try:
                page = await trio.to_thread.run_sync(
                    partial(self._iot.list_things, **page_args), limiter=self._limiter
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "registry prefetch stopped after %d Things (look-ups go on as usual): %s",
                    cached,
                    exc,
                )
                return cached
            expires = trio.current_time() + self._ttl
            for thing in page.get("things") or []:
                if len(self._cache) >= self._max_entries:
                    return cached
                name = thing.get("thingName")
                if isinstance(name, str) and name not in self._cache:
                    self._cache[name] = (dict(thing.get("attributes") or {}), expires)
                    cached += 1
            token = page.get("nextToken")
            if not token or token in seen_tokens:
                break
            seen_tokens.add(token)
        return cached

    def _prune(self) -> None:
        """Bound the cache: drop expired entries, then the oldest half if still full.

        Unknown identities are cached too, so a client inventing names must
        not be able to grow it without limit.
        """
        now = trio.current_time()
        self._cache = {name: entry for name, entry in self._cache.items() if entry[1] > now}
        if len(self._cache) >= self._max_entries:
            keep = list(self._cache.items())[len(self._cache) // 2 :]
            self._cache = dict(keep)

    def is_cached(self, thing_name: str) -> bool:
        """Whether a look-up of ``thing_name`` would be answered from the cache (no DescribeThing)."""
        cached = self._cache.get(thing_name)
        return cached is not None and cached[1] > trio.current_time()

    def forget(self, thing_name: str) -> None:
        self._cache.pop(thing_name, None)

    async def probe(self, thing_name: str) -> bool:
        """Ask the registry about ``thing_name`` past the cache: whether it answered (readiness)."""
        try:
            await self._describe(thing_name)
        except RegistryUnavailable:
            return False
        return True

    async def _describe(self, thing_name: str) -> dict[str, str] | None:
        now = trio.current_time()
        wait = self._pacer.reserve(now)
        if wait is None:
            self.rate_limited += 1
            raise RegistryUnavailable("Registry look-up rate exceeded; try again later")
        if wait > 0:
            try:
                await trio.sleep(wait)
            except BaseException:
                self._pacer.release(now + wait, trio.current_time())
                raise
        self.lookups += 1
        self.last_attempt = trio.current_time()
        try:
            response = await trio.to_thread.run_sync(
                lambda: self._iot.describe_thing(thingName=thing_name), limiter=self._limiter
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                self.failing = False
                return None
            self._failed()
            log.error("registry look-up of %s failed: %s", thing_name, exc)
            raise RegistryUnavailable("Thing registry unavailable, try again later") from None
        except BotoCoreError as exc:
            self._failed()
            log.error("registry look-up of %s failed: %s", thing_name, exc)
            raise RegistryUnavailable("Thing registry unavailable, try again later") from None
        self.failing = False
        return dict(response.get("attributes") or {})

    def _failed(self) -> None:
        self.errors += 1
        self.failing = True
