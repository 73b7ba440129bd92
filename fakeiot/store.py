"""Persistent state of fakeiot: the Thing registry, the device shadows, the rules' tables and
the tables of the DynamoDB subset (:mod:`fakeiot.dynamodb`).

One SQLite file (``<data-dir>/fakeiot.sqlite3``) shared by the MQTT broker's
thread and the HTTP API's threads; a lock serialises access, so each
read-modify-write of a shadow is atomic.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS things (
    name TEXT PRIMARY KEY,
    thing_id TEXT NOT NULL,
    type_name TEXT,
    attributes TEXT NOT NULL,
    version INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shadows (
    name TEXT PRIMARY KEY,
    document TEXT,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS table_items (
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    item TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (table_name, key)
);
CREATE TABLE IF NOT EXISTS dynamodb_items (
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (table_name, key)
);
"""


@dataclass
class Thing:
    name: str
    thing_id: str
    type_name: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    version: int = 1


class Store:
    """Things and shadows in SQLite.  Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: durable across a fakeiot crash, may lose the last commits on a power cut
        # (fine for a development stand-in); a sync per commit made registering 10k Things take minutes.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- things ------------------------------------------------------------------

    def get_thing(self, name: str) -> Thing | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, thing_id, type_name, attributes, version FROM things WHERE name = ?",
                (name,),
            ).fetchone()
        return _thing(row) if row else None

    def create_thing(
        self, name: str, type_name: str | None, attributes: dict[str, str]
    ) -> tuple[Thing, bool]:
        """Create a Thing; returns (thing, created).  An identical existing Thing is returned as is."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT name, thing_id, type_name, attributes, version FROM things WHERE name = ?",
                (name,),
            ).fetchone()
            if row:
                return _thing(row), False
            thing = Thing(
                name=name,
                thing_id=str(uuid.uuid4()),
                type_name=type_name,
                attributes=dict(attributes),
            )
            db.execute(
                "INSERT INTO things VALUES (?, ?, ?, ?, ?, ?)",
                (
                    name,
                    thing.thing_id,
                    type_name,
                    json.dumps(thing.attributes),
                    thing.version,
                    time.time(),
                ),
            )
            return thing, True

    def list_things(self) -> list[Thing]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, thing_id, type_name, attributes, version FROM things ORDER BY name"
            ).fetchall()
        return [_thing(r) for r in rows]

    def delete_thing(self, name: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM things WHERE name = ?", (name,)).rowcount > 0

    def update_thing(self, name: str, change: Callable[[Thing], None]) -> Thing | None:
        """Apply ``change`` to the Thing in one transaction; None if it does not exist."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT name, thing_id, type_name, attributes, version FROM things WHERE name = ?",
                (name,),
            ).fetchone()
            if not row:
                return None
            thing = _thing(row)
            change(thing)
            thing.version += 1
            db.execute(
                "UPDATE things SET type_name = ?, attributes = ?, version = ? WHERE name = ?",
                (thing.type_name, json.dumps(thing.attributes), thing.version, name),
            )
            return thing

    # -- shadows -----------------------------------------------------------------

    def with_shadow(
        self,
        name: str,
        action: Callable[[dict[str, Any] | None, int], tuple[Any, dict[str, Any] | None, bool]],
    ) -> Any:
        """Run ``action(document, version)`` atomically.

        ``action`` returns ``(result, new_document, write)``: when ``write``
        is true the new document (None deletes it, keeping the version) is
        stored.  ``result`` is returned.
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT document, version FROM shadows WHERE name = ?", (name,)
            ).fetchone()
            document = json.loads(row[0]) if row and row[0] is not None else None
            version = row[1] if row else 0
            result, new_document, write = action(document, version)
            if write:
                new_version = new_document["version"] if new_document else version
                db.execute(
                    "INSERT INTO shadows VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET document = ?, version = ?",
                    (
                        name,
                        json.dumps(new_document) if new_document else None,
                        new_version,
                        json.dumps(new_document) if new_document else None,
                        new_version,
                    ),
                )
            return result

    # -- other resources (policies, certificates, rules...) as JSON documents -------

    def put_resource(self, kind: str, name: str, document: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO resources VALUES (?, ?, ?) ON CONFLICT(kind, name) DO UPDATE SET document = excluded.document",
                (kind, name, json.dumps(document)),
            )

    def get_resource(self, kind: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT document FROM resources WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def update_resource(
        self, kind: str, name: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> None:
        """Read-modify-write one resource atomically; ``change`` returning None deletes it."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT document FROM resources WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
            new = change(json.loads(row[0]) if row else None)
            if new is None:
                db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))
            else:
                db.execute(
                    "INSERT INTO resources VALUES (?, ?, ?) ON CONFLICT(kind, name) DO UPDATE SET document = excluded.document",
                    (kind, name, json.dumps(new)),
                )

    def delete_resource(self, kind: str, name: str) -> bool:
        with self._transaction() as db:
            return (
                db.execute(
                    "DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name)
                ).rowcount
                > 0
            )

    def list_resources(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, document FROM resources WHERE kind = ? ORDER BY name", (kind,)
            ).fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]

    # -- rule tables (what the rules engine's table action writes) --------------------

    def put_item(self, table: str, key: str, item: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO table_items VALUES (?, ?, ?, ?) "
                "ON CONFLICT(table_name, key) DO UPDATE SET item = excluded.item, updated = excluded.updated",
                (table, key, json.dumps(item), time.time()),
            )

    def scan_items(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT item FROM table_items WHERE table_name = ? ORDER BY key", (table,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- DynamoDB API tables (fakeiot.dynamodb): items as DynamoDB AttributeValue maps ------

    def create_dynamodb_table(self, name: str, definition: dict[str, Any]) -> bool:
        """Store a table's definition; False (nothing changed) if the table exists."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT 1 FROM resources WHERE kind = ? AND name = ?", (DYNAMODB_TABLE_KIND, name)
            ).fetchone()
            if row:
                return False
            db.execute(
                "INSERT INTO resources VALUES (?, ?, ?)",
                (DYNAMODB_TABLE_KIND, name, json.dumps(definition)),
            )
            return True

    def dynamodb_table(self, name: str) -> tuple[dict[str, Any], int] | None:
        """A table's definition and item count; None if it was never created."""
        with self._lock:
            row = self._db.execute(
                "SELECT document FROM resources WHERE kind = ? AND name = ?",
                (DYNAMODB_TABLE_KIND, name),
            ).fetchone()
            if row is None:
                return None
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM dynamodb_items WHERE table_name = ?", (name,)
            ).fetchone()
        return json.loads(row[0]), int(count)

    def dynamodb_table_names(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name FROM resources WHERE kind = ? ORDER BY name", (DYNAMODB_TABLE_KIND,)
            ).fetchall()
        return [r[0] for r in rows]

    def put_dynamodb_item(
        self, table: str, key: str, item: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Write (or replace) one item; returns the item it replaced, if any."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT item FROM dynamodb_items WHERE table_name = ? AND key = ?", (table, key)
            ).fetchone()
            db.execute(
                "INSERT INTO dynamodb_items VALUES (?, ?, ?) "
                "ON CONFLICT(table_name, key) DO UPDATE SET item = excluded.item",
                (table, key, json.dumps(item)),
            )
        return json.loads(row[0]) if row else None

    def get_dynamodb_item(self, table: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT item FROM dynamodb_items WHERE table_name = ? AND key = ?", (table, key)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def delete_dynamodb_item(self, table: str, key: str) -> dict[str, Any] | None:
        """Delete one item; returns it (None: there was none)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT item FROM dynamodb_items WHERE table_name = ? AND key = ?", (table, key)
            ).fetchone()
            db.execute("DELETE FROM dynamodb_items WHERE table_name = ? AND key = ?", (table, key))
        return json.loads(row[0]) if row else None

    def scan_dynamodb_items(
        self, table: str, *, after: str | None, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``limit`` (key, item) pairs in key order, from the first key above ``after``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, item FROM dynamodb_items WHERE table_name = ? AND key > ? "
                "ORDER BY key LIMIT ?",
                (table, after if after is not None else "", limit),
            ).fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]


DYNAMODB_TABLE_KIND = "dynamodb-table"


def _thing(row: tuple[Any, ...]) -> Thing:
    return Thing(
        name=row[0],
        thing_id=row[1],
        type_name=row[2],
        attributes=json.loads(row[3]),
        version=row[4],
    )
