"""fakeiot's HTTP API: the subset of AWS IoT's REST APIs this project uses.

Paths, methods, bodies and errors follow botocore's service models for
``iot`` (the registry calls of :mod:`fakeiot.registry`, the security calls of
:mod:`fakeiot.security`, the topic-rule calls of :mod:`fakeiot.rules.api`)
and ``iot-data`` (GetThingShadow, UpdateThingShadow, DeleteThingShadow), and a DynamoDB subset
(:mod:`fakeiot.dynamodb`, ``POST /`` with ``X-Amz-Target``), so
``boto3.client("iot", endpoint_url=...)`` and ``boto3.client("iot-data",
endpoint_url=...)`` work against it unchanged.  :data:`IotApi.routes` is the
whole surface: one :class:`Route` (method, path pattern, handler) per call.

Served over HTTP by :mod:`fakeiot.api_server` (framing, limits, request
signatures).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from iotshared.errors import JsonTooDeep
from iotshared.strict_json import MAX_JSON_DEPTH, strict_loads

from .certs import CertificateAuthority
from .dynamodb import DynamoDbApi, Response
from .errors import ApiError
from .publish import PublishApi
from .registry import RegistryApi, check_thing_name
from .rules import RulesEngine
from .rules.api import RulesApi
from .security import SecurityApi
from .shadow import ShadowError
from .shadow_service import Publication, ShadowService
from .store import Store
from .tally import Tally

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One API request, as a handler sees it."""

    method: str
    parts: Sequence[str]  # the path's segments, each percent-decoded
    params: dict[str, str]  # the pattern's {name} segments
    query: dict[str, str]
    body: bytes
    headers: dict[str, str]
    _json: dict[str, Any] | None = field(default=None, repr=False)

    def __getitem__(self, name: str) -> str:
        return self.params[name]

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (empty: ``{}``); AWS's 400 otherwise."""
        if self._json is None:
            self._json = json_body(self.body)
        return self._json


@dataclass(frozen=True)
class Route:
    """``method`` on paths matching ``pattern`` (``/things/{thing}/shadow``) is ``handler``'s.

    ``json_body``: the body must be a JSON object (or empty), checked before the handler runs.
    """

    method: str
    pattern: str
    handler: Callable[[Request], Any]
    json_body: bool = False

    segments: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        path = self.pattern.strip("/")
        object.__setattr__(self, "segments", tuple(path.split("/")) if path else ())

    def match(self, method: str, parts: Sequence[str]) -> dict[str, str] | None:
        """The path parameters when this route serves ``method`` on ``parts``, else None."""
        segments = self.segments
        if method != self.method or len(segments) != len(parts):
            return None
        params: dict[str, str] = {}
        for segment, part in zip(segments, parts, strict=True):
            if segment.startswith("{") and segment.endswith("}"):
                params[segment[1:-1]] = part
            elif segment != part:
                return None
        return params


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
        self.registry = RegistryApi(store, publish, region, account_id)
        self.security = SecurityApi(store, ca, region, account_id, endpoint)
        self.rules = RulesApi(rules or RulesEngine(store), store, region, account_id)
        self.dynamodb = DynamoDbApi(store, region, account_id)
        self.routes = self._routes()
        # ("METHOD /pattern" | "other", HTTP status) -> calls (fakeiot/metrics.py); API threads.
        self.calls = Tally()

    def _routes(self) -> list[Route]:
        reg, sec, rules = self.registry, self.security, self.rules
        return [
            Route("GET", "/health", lambda r: {"status": "ok"}),
            # registry (iot)
            Route("GET", "/things", lambda r: reg.list_things(r.query)),
            Route("POST", "/things/{thing}", lambda r: reg.create_thing(r["thing"], r.json())),
            Route("GET", "/things/{thing}", lambda r: reg.describe_thing(r["thing"]), True),
            Route("DELETE", "/things/{thing}", lambda r: reg.delete_thing(r["thing"]), True),
            Route("PATCH", "/things/{thing}", lambda r: reg.update_thing(r["thing"], r.json())),
            # security (iot)
            Route(
                "POST",
                "/keys-and-certificate",
                lambda r: sec.create_keys_and_certificate(r.query),
            ),
            Route("GET", "/endpoint", lambda r: sec.describe_endpoint(r.query)),
            Route("GET", "/certificates", lambda r: sec.list_certificates()),
            Route("GET", "/certificates/{id}", lambda r: sec.describe_certificate(r["id"])),
            Route("PUT", "/certificates/{id}", lambda r: sec.update_certificate(r["id"], r.query)),
            Route(
                "DELETE", "/certificates/{id}", lambda r: sec.delete_certificate(r["id"], r.query)
            ),
            Route("POST", "/policies/{name}", lambda r: sec.create_policy(r["name"], r.json())),
            Route("GET", "/policies/{name}", lambda r: sec.get_policy(r["name"])),
            Route("DELETE", "/policies/{name}", lambda r: sec.delete_policy(r["name"])),
            Route(
                "PUT",
                "/target-policies/{name}",
                lambda r: sec.attach_policy(r["name"], r.json(), attach=True),
            ),
            Route(
                "POST",
                "/target-policies/{name}",
                lambda r: sec.attach_policy(r["name"], r.json(), attach=False),
            ),
            Route("POST", "/policy-targets/{name}", lambda r: sec.list_targets(r["name"])),
            Route(
                "GET", "/things/{thing}/principals", lambda r: sec.list_thing_principals(r["thing"])
            ),
            Route(
                "PUT",
                "/things/{thing}/principals",
                lambda r: sec.thing_principal(
                    r["thing"], r.headers.get("x-amzn-principal"), attach=True
                ),
            ),
            Route(
                "DELETE",
                "/things/{thing}/principals",
                lambda r: sec.thing_principal(
                    r["thing"], r.headers.get("x-amzn-principal"), attach=False
                ),
            ),
            # topic rules (iot), and fakeiot's view of the rule tables
            Route("GET", "/rules", lambda r: rules.list()),
            Route("POST", "/rules/{name}", lambda r: rules.create(r["name"], r.json())),
            Route("GET", "/rules/{name}", lambda r: rules.get(r["name"])),
            Route("DELETE", "/rules/{name}", lambda r: rules.delete(r["name"])),
            Route("GET", "/fakeiot/tables/{table}", lambda r: rules.scan(r["table"])),
            # DynamoDB's JSON protocol: the operation is named by a header
            Route(
                "POST", "/", lambda r: self.dynamodb.handle(r.headers.get("x-amz-target"), r.body)
            ),
            # shadows (iot-data)
            Route("GET", "/things/{thing}/shadow", lambda r: self.get_shadow(r["thing"], b"")),
            Route(
                "POST", "/things/{thing}/shadow", lambda r: self.update_shadow(r["thing"], r.body)
            ),
            Route(
                "DELETE", "/things/{thing}/shadow", lambda r: self.delete_shadow(r["thing"], b"")
            ),
            # data-plane Publish (iot-data): fakeiot/publish.py
            Route(
                "POST",
                "/topics/{topic}",
                lambda r: PublishApi(self.publish, self.shadows).publish_message(
                    r["topic"], r.query, r.body
                ),
            ),
        ]

    def handle(
        self, method: str, target: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Returns (status, JSON-able body); raises :class:`ApiError` with AWS's error."""
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.strip("/").split("/")] if url.path.strip("/") else []
        operation = "other"
        try:
            _check_thing_path(parts, query)
            for route in self.routes:
                params = route.match(method, parts)
                if params is None:
                    continue
                operation = f"{route.method} {route.pattern}"
                request = Request(method, parts, params, query, body, headers or {})
                if route.json_body:
                    request.json()
                result = route.handler(request)
                status, doc = (
                    (result.status, result.doc) if isinstance(result, Response) else (200, result)
                )
                self.calls.add(operation, str(status))
                return status, doc
            raise ApiError(
                404, "ResourceNotFoundException", f"No such operation: {method} {url.path}"
            )
        except ApiError as exc:
            self.calls.add(operation, str(exc.status))
            raise

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


def _check_thing_path(parts: Sequence[str], query: dict[str, str]) -> None:
    """Anything under ``/things/<name>`` first needs a valid Thing name (whatever the method), and
    shadow calls the classic shadow."""
    if len(parts) < 2 or parts[0] != "things":
        return
    check_thing_name(parts[1])
    if len(parts) == 3 and parts[2] == "shadow" and "name" in query:
        raise ApiError(
            400,
            "InvalidRequestException",
            "Named shadows are not supported by fakeiot; use the classic shadow",
        )


def json_body(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; AWS's 400 for anything else (nesting bounded before parsing, so a
    deep document is refused, not a RecursionError)."""
    if not body.strip():
        return {}
    try:
        doc = strict_loads(body.decode("utf-8"), max_depth=MAX_JSON_DEPTH)
    except JsonTooDeep:
        raise ApiError(
            400,
            "InvalidRequestException",
            f"Request body nests deeper than {MAX_JSON_DEPTH} levels",
        ) from None
    except ValueError:  # JsonRejected, UnicodeDecodeError
        raise ApiError(400, "InvalidRequestException", "Request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "InvalidRequestException", "Request body must be a JSON object")
    return doc
