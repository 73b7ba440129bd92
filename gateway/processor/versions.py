"""Which OCPP version each charge point speaks, as the processor learns it.

Which OCPP version a charge point speaks is not visible in its frames, so
the gateway records the negotiated subprotocol in the shadow
(``state.reported.ocppProtocol``) before it forwards anything.  The processor
learns it from those update requests (``$aws/things/+/shadow/update``, which
any broker delivers) and, when it has missed one, from GetThingShadow.

Any device may publish to its own shadow topic, so the map is bounded (least
recently used forgotten first; a forgotten CP's version is read again from
its shadow), and an update that cannot be read is dropped (logged at WARNING
at most once a minute).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import trio
from botocore.exceptions import BotoCoreError, ClientError

from .. import ocppj
from ..identity import cp_id_for
from ..subprotocol import OCPP_VERSIONS

log = logging.getLogger(__name__)

DEFAULT_VERSION = "2.0.1"
# The gateway's shadow update requests: seen on AWS IoT, fakeiot and plain brokers alike.
SHADOW_UPDATES = "$aws/things/+/shadow/update"
# Any device may publish to its own shadow topic: unreadable updates are logged at WARNING at most this often.
BAD_SHADOW_UPDATE_LOG_INTERVAL = 60.0
# CPs whose OCPP version is remembered (least recently used go first; a forgotten one is read again from
# the shadow): any device may publish its own shadow update, so the map must not grow with every id.
MAX_KNOWN_VERSIONS = 100_000


class OcppVersions:
    """The OCPP version per Thing name: learnt from shadow updates, else read from the shadow.

    ``known`` holds at most ``max_known`` Things, least recently used first;
    ``iot_data`` is the boto3 ``iot-data`` client the shadow is read with.
    """

    def __init__(self, iot_data: Any, max_known: int = MAX_KNOWN_VERSIONS) -> None:
        self._iot_data = iot_data
        self.max_known = max_known
        self.known: OrderedDict[str, str] = OrderedDict()  # LRU, max_known
        self.bad_shadow_updates = 0  # shadow updates dropped as unreadable
        self._next_shadow_warning = 0.0

    def learn(self, topic: str, payload: bytes) -> None:
        """Note the OCPP version in a shadow update request; anything unreadable is dropped."""
        thing = topic.split("/")[2]
        try:
            document = ocppj.strict_loads(payload.decode("utf-8"))
        except (
            UnicodeDecodeError,
            ValueError,
        ) as exc:  # strict_loads raises JsonRejected (a ValueError) only
            self.bad_shadow_update(topic, str(exc)[:80])
            return
        # Devices update their shadows with all sorts of documents: only the gateway's carries the protocol.
        reported = document.get("state") if isinstance(document, dict) else None
        reported = reported.get("reported") if isinstance(reported, dict) else None
        protocol = reported.get("ocppProtocol") if isinstance(reported, dict) else None
        if isinstance(protocol, str) and protocol in OCPP_VERSIONS:
            self.remember(thing, OCPP_VERSIONS[protocol])

    def remember(self, thing_name: str, version: str) -> None:
        self.known[thing_name] = version
        self.known.move_to_end(thing_name)
        while len(self.known) > self.max_known:
            self.known.popitem(last=False)

    def bad_shadow_update(self, topic: str, why: str, *, exc_info: bool = False) -> None:
        """Count and log (at WARNING at most once a minute) a shadow update that was dropped."""
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

    async def version_of(self, thing_name: str) -> str:
        """The Thing's OCPP version: remembered, else read from its shadow, else DEFAULT_VERSION."""
        version = self.known.get(thing_name)
        if version is not None:
            self.known.move_to_end(thing_name)
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
        self.remember(thing_name, version)
        return version
