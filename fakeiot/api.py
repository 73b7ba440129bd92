"""fakeiot's HTTP API: the subset of AWS IoT's REST APIs this project uses.

Paths, methods, bodies and errors follow botocore's service models for
``iot`` (CreateThing, DescribeThing, ListThings, DeleteThing, UpdateThing;
the security calls of :mod:`fakeiot.security`; the topic-rule calls of
:mod:`fakeiot.rules.api`)
and ``iot-data`` (GetThingShadow, UpdateThingShadow, DeleteThingShadow), so
``boto3.client("iot", endpoint_url=...)`` and ``boto3.client("iot-data",
endpoint_url=...)`` work against it unchanged.

Served over HTTP by :mod:`fakeiot.api_server` (framing, limits, request
signatures).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .certs import CertificateAuthority
from .errors import ApiError
from .rules import RulesEngine
from .rules.api import RulesApi
from .security import SecurityApi
from .shadow import ShadowError
from .shadow_service import Publication, ShadowService
from .store import Store, Thing

log = logging.getLogger(__name__)

THING_NAME = re.compile(r"\A[A-Za-z0-9:_-]{1,128}\Z")  # \Z: "$" would accept a trailing newline
ATTRIBUTE_NAME = re.compile(r"[a-zA-Z0-9_.,@/:#-]{1,128}")
ATTRIBUTE_VALUE = re.compile(r"[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}")


class IotApi:
    """Request handling, independent of the HTTP server (easy to test)."""

    def __init__(
        self,
        store: Store,
        shadows: ShadowService,
        publish: Callable[[list[Publication]], None],
        *,
        region: str,
        account_id: str,
        rules: RulesEngine | None = None,
        ca: CertificateAuthority | None = None,
        endpoint: str = "127.0.0.1:8883",
    ) -> None:
        self.store = store
        self.shadows = shadows
        self.publish = publish
        self.region = region
        self.account_id = account_id
        self.security = SecurityApi(store, ca, region, account_id, endpoint)
        self.rules = RulesApi(rules or RulesEngine(store), store, region, account_id)

    def arn(self, name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account_id}:thing/{name}"

    def handle(
        self, method: str, target: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Returns (status, JSON-able body)."""
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.strip("/").split("/")] if url.path.strip("/") else []
        if parts == ["health"] and method == "GET":
            return 200, {"status": "ok"}
        if parts == ["things"] and method == "GET":
            return 200, self.list_things(query)
        routed = self._route_security(method, parts, query, body, headers or {})
        if routed is None:
            routed = self._route_rules(method, parts, body)
        if routed is not None:
            return 200, routed
        if len(parts) >= 2 and parts[0] == "things":
            name = parts[1]
            if not THING_NAME.match(name):
                raise ApiError(
                    400,
                    "InvalidRequestException",
                    f"Invalid thing name: {name!r} (allowed: [a-zA-Z0-9:_-], 1-128)",
                )
            if len(parts) == 3 and parts[2] == "principals":
                principal = (headers or {}).get("x-amzn-principal")
                if method == "GET":
                    return 200, self.security.list_thing_principals(name)
                if method in ("PUT", "DELETE"):
                    return 200, self.security.thing_principal(
                        name, principal, attach=method == "PUT"
                    )
            if len(parts) == 2:
                thing_op = {
                    "POST": self.create_thing,
                    "GET": self.describe_thing,
                    "DELETE": self.delete_thing,
                    "PATCH": self.update_thing,
                }
                if method in thing_op:
                    return 200, thing_op[method](name, _json_body(body))
            elif len(parts) == 3 and parts[2] == "shadow":
                if "name" in query:
                    raise ApiError(
                        400,
                        "InvalidRequestException",
                        "Named shadows are not supported by fakeiot; use the classic shadow",
                    )
                shadow_op = {
                    "GET": self.get_shadow,
                    "POST": self.update_shadow,
                    "DELETE": self.delete_shadow,
                }
                if method in shadow_op:
                    return 200, shadow_op[method](name, body)
        raise ApiError(404, "ResourceNotFoundException", f"No such operation: {method} {url.path}")

    def _route_security(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        body: bytes,
        headers: dict[str, str],
    ) -> Any:
        sec = self.security
        if parts == ["keys-and-certificate"] and method == "POST":
            return sec.create_keys_and_certificate(query)
        if parts == ["endpoint"] and method == "GET":
            return sec.describe_endpoint(query)
        if parts == ["certificates"] and method == "GET":
            return sec.list_certificates()
        if len(parts) != 2:
            return None
        kind, name = parts
        if kind == "policies":
            if method == "POST":
                return sec.create_policy(name, _json_body(body))
            if method == "GET":
                return sec.get_policy(name)
            if method == "DELETE":
                return sec.delete_policy(name)
        if kind == "target-policies" and method in ("PUT", "POST"):
            return sec.attach_policy(name, _json_body(body), attach=method == "PUT")
        if kind == "policy-targets" and method == "POST":
            return sec.list_targets(name)
        if kind == "certificates":
            if method == "GET":
                return sec.describe_certificate(name)
            if method == "PUT":
                return sec.update_certificate(name, query)
            if method == "DELETE":
                return sec.delete_certificate(name, query)
        return None

    def _route_rules(self, method: str, parts: list[str], body: bytes) -> Any:
        if parts == ["rules"] and method == "GET":
            return self.rules.list()
        if len(parts) == 2 and parts[0] == "rules":
            if method == "POST":
                return self.rules.create(parts[1], _json_body(body))
            if method == "GET":
                return self.rules.get(parts[1])
            if method == "DELETE":
                return self.rules.delete(parts[1])
        if len(parts) == 3 and parts[:2] == ["fakeiot", "tables"] and method == "GET":
            return self.rules.scan(parts[2])
        return None

    # -- registry (iot) ------------------------------------------------------------

    def _describe(self, thing: Thing) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "defaultClientId": thing.name,
            "thingName": thing.name,
            "thingId": thing.thing_id,
            "thingArn": self.arn(thing.name),
            "attributes": thing.attributes,
            "version": thing.version,
        }
        if thing.type_name:
            doc["thingTypeName"] = thing.type_name
        return doc

    def create_thing(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        attributes = _attributes(body.get("attributePayload"))
        type_name = body.get("thingTypeName")
        thing, created = self.store.create_thing(name, type_name, attributes)
        if not created and (thing.attributes != attributes or thing.type_name != type_name):
            raise ApiError(
                409,
                "ResourceAlreadyExistsException",
                f"Thing {name} already exists with different attributes",
            )
        if created:
            self._registry_event(thing, "CREATED")
        return {
            "thingName": thing.name,
            "thingArn": self.arn(thing.name),
            "thingId": thing.thing_id,
        }

    def describe_thing(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        thing = self.store.get_thing(name)
        if thing is None:
            raise ApiError(404, "ResourceNotFoundException", f"Thing {name} cannot be found.")
        return self._describe(thing)

    def delete_thing(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        # AWS IoT answers DeleteThing of a missing Thing with success, too.
        thing = self.store.get_thing(name)
        if self.store.delete_thing(name) and thing is not None:
            self._registry_event(thing, "DELETED")
        return {}

    def update_thing(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = body.get("attributePayload") or {}
        attributes = _attributes(payload)
        expected = body.get("expectedVersion")

        def change(thing: Thing) -> None:
            if expected is not None and expected != thing.version:
                raise ApiError(
                    409,
                    "VersionConflictException",
                    f"expectedVersion {expected} does not match {thing.version}",
                )
            if payload.get("merge"):
                for key, value in attributes.items():
                    if value == "":
                        thing.attributes.pop(key, None)
                    else:
                        thing.attributes[key] = value
            elif "attributes" in payload:
                thing.attributes = {k: v for k, v in attributes.items() if v != ""}
            if body.get("removeThingType"):
                thing.type_name = None
            elif body.get("thingTypeName"):
                thing.type_name = body["thingTypeName"]

        updated = self.store.update_thing(name, change)
        if updated is None:
            raise ApiError(404, "ResourceNotFoundException", f"Thing {name} cannot be found.")
        self._registry_event(updated, "UPDATED")
        return {}

    def _registry_event(self, thing: Thing, operation: str) -> None:
        """Publish AWS IoT's registry event ``$aws/events/thing/<name>/created|updated|deleted``."""
        event = {
            "eventType": "THING_EVENT",
            "eventId": uuid.uuid4().hex,
            "timestamp": int(time.time() * 1000),
            "operation": operation,
            "accountId": self.account_id,
            "thingId": thing.thing_id,
            "thingName": thing.name,
            "versionNumber": thing.version,
            "thingTypeName": thing.type_name,
            "attributes": thing.attributes,
        }
        topic = f"$aws/events/thing/{thing.name}/{operation.lower()}"
        self.publish([(topic, json.dumps(event).encode())])

    def list_things(self, query: dict[str, str]) -> dict[str, Any]:
        things = self.store.list_things()
        if "attributeName" in query:
            key, value = query["attributeName"], query.get("attributeValue")
            things = [
                t
                for t in things
                if key in t.attributes and (value is None or t.attributes[key] == value)
            ]
        try:
            start = int(query.get("nextToken", "0"))
            limit = int(query.get("maxResults", "250"))
        except ValueError:
            raise ApiError(
                400, "InvalidRequestException", "nextToken and maxResults must be integers"
            ) from None
        limit = max(1, min(limit, 250))
        page = things[start : start + limit]
        result: dict[str, Any] = {
            "things": [
                {
                    k: v
                    for k, v in self._describe(t).items()
                    if k in ("thingName", "thingTypeName", "thingArn", "attributes", "version")
                }
                for t in page
            ]
        }
        if start + limit < len(things):
            result["nextToken"] = str(start + limit)
        return result

    # -- shadows (iot-data) ----------------------------------------------------------

    def get_shadow(self, name: str, body: bytes) -> dict[str, Any]:
        return self._shadow_call(self.shadows.get, name, b"")

    def update_shadow(self, name: str, body: bytes) -> dict[str, Any]:
        return self._shadow_call(self.shadows.update, name, body)

    def delete_shadow(self, name: str, body: bytes) -> dict[str, Any]:
        return self._shadow_call(self.shadows.delete, name, b"")

    def _shadow_call(
        self, operation: Callable[[str, bytes], Any], name: str, body: bytes
    ) -> dict[str, Any]:
        try:
            outcome = operation(name, body)
        except ShadowError as exc:
            error_type = {
                404: "ResourceNotFoundException",
                409: "ConflictException",
                413: "RequestEntityTooLargeException",
            }.get(exc.code, "InvalidRequestException")
            raise ApiError(exc.code, error_type, exc.message) from None
        if outcome.publications:
            self.publish(outcome.publications)
        return dict(outcome.document)


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except ValueError:
        raise ApiError(400, "InvalidRequestException", "Request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "InvalidRequestException", "Request body must be a JSON object")
    return doc


def _attributes(payload: Any) -> dict[str, str]:
    if not payload:
        return {}
    attributes = payload.get("attributes") or {} if isinstance(payload, dict) else None
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise ApiError(
            400,
            "InvalidRequestException",
            "attributePayload.attributes must map strings to strings",
        )
    for key, value in attributes.items():  # AWS IoT's AttributeName / AttributeValue rules
        if not ATTRIBUTE_NAME.fullmatch(key):
            raise ApiError(
                400,
                "InvalidRequestException",
                f"Invalid attribute name {key[:40]!r}: [a-zA-Z0-9_.,@/:#-], 1-128",
            )
        if not ATTRIBUTE_VALUE.fullmatch(value):
            raise ApiError(
                400,
                "InvalidRequestException",
                f"Invalid value of attribute {key}: [a-zA-Z0-9_.,@/:#=[]-], up to 800",
            )
    return attributes
