"""AWS IoT's registry API subset: Things (CreateThing, DescribeThing, ListThings, DeleteThing,
UpdateThing) in botocore's ``iot`` shapes, and the registry events AWS IoT publishes on changes
(``$aws/events/thing/<name>/created|updated|deleted``)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .shadow_service import Publication
from .store import Store, Thing

THING_NAME = re.compile(r"\A[A-Za-z0-9:_-]{1,128}\Z")  # \Z: "$" would accept a trailing newline
ATTRIBUTE_NAME = re.compile(r"[a-zA-Z0-9_.,@/:#-]{1,128}")
ATTRIBUTE_VALUE = re.compile(r"[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}")


def check_thing_name(name: str) -> None:
    """Raise AWS's 400 for a name that is not a Thing name."""
    if not THING_NAME.match(name):
        raise ApiError(
            400,
            "InvalidRequestException",
            f"Invalid thing name: {name!r} (allowed: [a-zA-Z0-9:_-], 1-128)",
        )


@dataclass
class RegistryApi:
    store: Store
    publish: Callable[[list[Publication]], None]
    region: str
    account_id: str

    def _arn(self, name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account_id}:thing/{name}"

    def _describe(self, thing: Thing) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "defaultClientId": thing.name,
            "thingName": thing.name,
            "thingId": thing.thing_id,
            "thingArn": self._arn(thing.name),
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
            "thingArn": self._arn(thing.name),
            "thingId": thing.thing_id,
        }

    def describe_thing(self, name: str) -> dict[str, Any]:
        thing = self.store.get_thing(name)
        if thing is None:
            raise ApiError(404, "ResourceNotFoundException", f"Thing {name} cannot be found.")
        return self._describe(thing)

    def delete_thing(self, name: str) -> dict[str, Any]:
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
