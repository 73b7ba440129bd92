"""Classic device shadows, the way AWS IoT keeps them (pure, no I/O).

A stored shadow is ``{"state": {"desired": {...}, "reported": {...}},
"metadata": {"desired": {...}, "reported": {...}}, "version": N}``.  Updates
merge into ``desired``/``reported``; ``null`` deletes a key (or a whole
section); every leaf written gets ``{"timestamp": <epoch s>}`` in metadata;
``delta`` is what ``desired`` holds that ``reported`` does not (yet).

Responses follow AWS's shapes: the ``/update/accepted`` document echoes the
request's state with the new version; ``/update/documents`` carries
``previous`` (absent for a new shadow) and ``current``; ``/update/delta`` is
published when an update sets ``desired`` and a difference remains; errors
are ``{"code", "message", "timestamp", "clientToken"}``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from iotshared.errors import JsonRejected, JsonTooDeep
from iotshared.strict_json import strict_loads

MAX_DEPTH = 6  # AWS: "JSON contains too many levels of nesting; maximum is 6" (objects and arrays)
# A request nests at most MAX_DEPTH levels under its root object and "state" (or it is refused below):
# bounded while still text, so that no request can make json.loads or the merge recurse deeply.
MAX_REQUEST_DEPTH = MAX_DEPTH + 2
MAX_DOCUMENT_BYTES = 8 * 1024
SECTIONS = ("desired", "reported")

Json = dict[str, Any]


class ShadowError(Exception):
    """A request the shadow service rejects; ``code`` is the HTTP-like status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def document(self, now: int, client_token: str | None) -> Json:
        doc: Json = {"code": self.code, "message": self.message, "timestamp": now}
        if client_token is not None:
            doc["clientToken"] = client_token
        return doc


@dataclass(frozen=True)
class UpdateResult:
    stored: Json
    accepted: Json
    documents: Json
    delta: Json | None


def parse_request(payload: bytes) -> Json:
    """Parse a request payload; empty payloads are allowed (``/get``, ``/delete``)."""
    if not payload.strip():
        return {}
    try:
        request = strict_loads(payload.decode("utf-8"), max_depth=MAX_REQUEST_DEPTH)
    except JsonTooDeep:
        raise _too_deep() from None
    except (JsonRejected, UnicodeDecodeError):  # AWS takes UTF-8 JSON only (no NaN/Infinity either)
        raise ShadowError(400, "Invalid JSON") from None
    if not isinstance(request, dict):
        raise ShadowError(400, "Invalid JSON")
    return request


def client_token_of(request: Json) -> str | None:
    token = request.get("clientToken")
    return token if isinstance(token, str) else None


def update(stored: Json | None, last_version: int, request: Json, now: int) -> UpdateResult:
    """Apply an update request to ``stored`` (None when no shadow exists).

    ``last_version`` is the version of the shadow, or of the last deleted one
    (AWS continues the numbering after a delete).
    """
    state = _validated_state(request)
    version = request.get("version")
    if version is not None:
        if not isinstance(version, int) or isinstance(version, bool):
            raise ShadowError(400, "Invalid version")
        current_version = stored["version"] if stored else last_version
        if version != current_version:
            raise ShadowError(409, "Version conflict")

    previous = copy.deepcopy(stored) if stored else None
    current: Json = (
        copy.deepcopy(stored) if stored else {"state": {}, "metadata": {}, "version": last_version}
    )
    written_meta: Json = {}
    for section in SECTIONS:
        if section not in state:
            continue
        value = state[section]
        if value is None:
            current["state"].pop(section, None)
            current["metadata"].pop(section, None)
            written_meta[section] = {"timestamp": now}
            continue
        merged, meta = _merge(
            current["state"].get(section, {}), current["metadata"].get(section, {}), value, now
        )
        _set_or_drop(current["state"], section, merged)
        _set_or_drop(current["metadata"], section, meta)
        written_meta[section] = _metadata_for(value, now)
    current["version"] = current["version"] + 1

    token = client_token_of(request)
    accepted: Json = {
        "state": state,
        "metadata": written_meta,
        "version": current["version"],
        "timestamp": now,
    }
    documents: Json = {"current": _public(current), "timestamp": now}
    if previous is not None:
        documents = {"previous": _public(previous), **documents}
    delta = None
    if state.get("desired"):
        diff = compute_delta(
            current["state"].get("desired", {}), current["state"].get("reported", {})
        )
        if diff:
            delta = {
                "version": current["version"],
                "timestamp": now,
                "state": diff,
                "metadata": _pick(current["metadata"].get("desired", {}), diff),
            }
    if token is not None:
        for doc in (accepted, documents) + ((delta,) if delta else ()):
            doc["clientToken"] = token
    if len(json.dumps(current["state"]).encode()) > MAX_DOCUMENT_BYTES:
        raise ShadowError(413, "The payload exceeds the maximum size allowed")
    return UpdateResult(stored=current, accepted=accepted, documents=documents, delta=delta)


def get_document(stored: Json, now: int, client_token: str | None = None) -> Json:
    """The ``/get/accepted`` (and GetThingShadow) document."""
    state = copy.deepcopy(stored["state"])
    delta = compute_delta(state.get("desired", {}), state.get("reported", {}))
    if delta:
        state["delta"] = delta
    doc: Json = {
        "state": state,
        "metadata": copy.deepcopy(stored["metadata"]),
        "version": stored["version"],
        "timestamp": now,
    }
    if client_token is not None:
        doc["clientToken"] = client_token
    return doc


def compute_delta(desired: Any, reported: Any) -> Json:
    """Keys of ``desired`` whose values ``reported`` does not match."""
    delta: Json = {}
    for key, want in desired.items():
        have = reported.get(key) if isinstance(reported, dict) else None
        if isinstance(want, dict) and isinstance(have, dict):
            sub = compute_delta(want, have)
            if sub:
                delta[key] = sub
        elif want != have:
            delta[key] = want
    return delta


def no_shadow(thing_name: str) -> ShadowError:
    return ShadowError(404, f"No shadow exists with name: '{thing_name}'")


def _validated_state(request: Json) -> Json:
    if "state" not in request:
        raise ShadowError(400, "Missing required node: state")
    state = request["state"]
    if not isinstance(state, dict):
        raise ShadowError(400, "State node must be an object")
    for key, value in state.items():
        if key not in SECTIONS:
            raise ShadowError(400, f"State contains an invalid node: '{key}'")
        if value is not None and not isinstance(value, dict):
            raise ShadowError(400, f"{key.capitalize()} node must be an object")
    if _depth(state) > MAX_DEPTH + 1:
        raise _too_deep()
    return state


def _too_deep() -> ShadowError:
    return ShadowError(400, f"JSON contains too many levels of nesting; maximum is {MAX_DEPTH}")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _merge(target: Json, meta: Json, patch: Json, now: int) -> tuple[Json, Json]:
    target, meta = dict(target), dict(meta)
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
            meta.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            sub, sub_meta = _merge(
                target[key],
                meta.get(key, {}) if isinstance(meta.get(key), dict) else {},
                value,
                now,
            )
            _set_or_drop(target, key, sub)
            _set_or_drop(meta, key, sub_meta)
        else:
            cleaned = _without_nulls(value)
            target[key] = cleaned
            meta[key] = _metadata_for(cleaned, now)
    return target, meta


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def _metadata_for(value: Any, now: int) -> Any:
    if isinstance(value, dict):
        return {k: _metadata_for(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_metadata_for(v, now) for v in value]
    return {"timestamp": now}


def _set_or_drop(container: Json, key: str, value: Json) -> None:
    if value:
        container[key] = value
    else:
        container.pop(key, None)


def _pick(meta: Json, shape: Json) -> Json:
    out: Json = {}
    for key, value in shape.items():
        if key in meta:
            out[key] = (
                _pick(meta[key], value)
                if isinstance(value, dict) and isinstance(meta[key], dict)
                else meta[key]
            )
    return out


def _public(stored: Json) -> Json:
    return {
        "state": copy.deepcopy(stored["state"]),
        "metadata": copy.deepcopy(stored["metadata"]),
        "version": stored["version"],
    }
