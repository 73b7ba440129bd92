"""The device-shadow service: shadow requests from MQTT or HTTP, on the store (blocking: the broker
calls it in its store thread).

Both doors give the same answers and publish the same MQTT messages, as on
AWS IoT: an update (``$aws/things/<name>/shadow/update`` or UpdateThingShadow)
publishes ``/update/accepted``, ``/update/documents`` and, when desired and
reported differ, ``/update/delta``; MQTT requests that fail get
``/<op>/rejected`` with AWS's error document.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from . import shadow
from .shadow import ShadowError
from .store import Store
from .tally import Tally

log = logging.getLogger(__name__)

SHADOW_TOPIC = re.compile(r"\A\$aws/things/([A-Za-z0-9:_-]{1,128})/shadow/(update|get|delete)\Z")

Publication = tuple[str, bytes]


@dataclass
class Outcome:
    """What a request returns, and what must be published because of it."""

    document: dict[str, Any]
    publications: list[Publication] = field(default_factory=list)


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


class ShadowService:
    def __init__(self, store: Store) -> None:
        self.store = store
        # ("accepted" | "rejected") -> shadow updates (fakeiot/metrics.py): from API threads
        # and the broker's store thread alike.
        self.updates = Tally()

    def update(self, thing_name: str, payload: bytes) -> Outcome:
        """Raises ShadowError for a rejected update."""
        prefix = f"$aws/things/{thing_name}/shadow"
        try:
            request = shadow.parse_request(payload)
            now = int(time.time())

            def action(doc: dict[str, Any] | None, version: int) -> tuple[Any, Any, bool]:
                result = shadow.update(doc, version, request, now)
                return result, result.stored, True

            result = self.store.with_shadow(thing_name, action)
        except ShadowError:
            self.updates.add("rejected")
            raise
        self.updates.add("accepted")
        pubs = [
            (f"{prefix}/update/accepted", _encode(result.accepted)),
            (f"{prefix}/update/documents", _encode(result.documents)),
        ]
        if result.delta is not None:
            pubs.append((f"{prefix}/update/delta", _encode(result.delta)))
        return Outcome(result.accepted, pubs)

    def get(self, thing_name: str, payload: bytes = b"") -> Outcome:
        request = shadow.parse_request(payload)
        now = int(time.time())

        def action(doc: dict[str, Any] | None, version: int) -> tuple[Any, Any, bool]:
            if doc is None:
                raise shadow.no_shadow(thing_name)
            return shadow.get_document(doc, now, shadow.client_token_of(request)), doc, False

        return Outcome(self.store.with_shadow(thing_name, action))

    def delete(self, thing_name: str, payload: bytes = b"") -> Outcome:
        request = shadow.parse_request(payload)
        now = int(time.time())

        def action(doc: dict[str, Any] | None, version: int) -> tuple[Any, Any, bool]:
            if doc is None:
                raise shadow.no_shadow(thing_name)
            result: dict[str, Any] = {"version": doc["version"], "timestamp": now}
            token = shadow.client_token_of(request)
            if token is not None:
                result["clientToken"] = token
            return result, None, True

        document = self.store.with_shadow(thing_name, action)
        return Outcome(
            document, [(f"$aws/things/{thing_name}/shadow/delete/accepted", _encode(document))]
        )

    @staticmethod
    def is_request(topic: str) -> bool:
        """Whether ``topic`` is an MQTT shadow request (``$aws/things/<name>/shadow/<op>``)."""
        return SHADOW_TOPIC.match(topic) is not None

    def handle_mqtt(self, topic: str, payload: bytes) -> list[Publication] | None:
        """Answer an MQTT shadow request; None if ``topic`` is not one."""
        match = SHADOW_TOPIC.match(topic)
        if not match:
            return None
        thing_name, operation = match.groups()
        prefix = f"$aws/things/{thing_name}/shadow/{operation}"
        try:
            outcome = getattr(self, operation)(thing_name, payload)
        except ShadowError as exc:
            return self._rejected(prefix, exc, payload)
        except Exception:  # a device's request must not end its connection's handler in the broker
            log.exception("shadow %s of %s failed", operation, thing_name)
            return self._rejected(prefix, ShadowError(500, "Internal service failure"), payload)
        if operation == "get":
            return [(f"{prefix}/accepted", _encode(outcome.document))]
        publications: list[tuple[str, bytes]] = outcome.publications
        return publications

    @staticmethod
    def _rejected(prefix: str, exc: ShadowError, payload: bytes) -> list[Publication]:
        token = None
        try:
            token = shadow.client_token_of(shadow.parse_request(payload))
        except ShadowError:
            pass
        return [(f"{prefix}/rejected", _encode(exc.document(int(time.time()), token)))]
