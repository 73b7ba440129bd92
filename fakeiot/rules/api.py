"""AWS IoT's topic-rule API (Create/Get/Delete/ListTopicRules) over :class:`RulesEngine`,
and fakeiot's own read-only view of the rule tables."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import ApiError, not_found
from ..store import Store
from .engine import RuleError, RulesEngine
from .sql import RuleSqlError, parse


@dataclass
class RulesApi:
    engine: RulesEngine
    store: Store
    region: str
    account_id: str

    def _arn(self, name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account_id}:rule/{name}"

    def create(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            created = self.engine.put(name, payload)
        except RuleError as exc:
            cause = exc.__context__
            error_type = (
                "SqlParseException"
                if isinstance(cause, RuleSqlError) or "SQL" in str(exc)
                else "InvalidRequestException"
            )
            raise ApiError(400, error_type, str(exc)) from None
        if not created:
            raise ApiError(409, "ResourceAlreadyExistsException", f"Rule {name} already exists")
        return {}

    def get(self, name: str) -> dict[str, Any]:
        doc = self.engine.get(name)
        if doc is None:
            raise not_found(f"Rule {name}")
        payload = doc["payload"]
        rule = {
            "ruleName": name,
            "sql": payload["sql"],
            "description": payload.get("description", ""),
            "createdAt": doc.get("created", time.time()),
            "actions": payload["actions"],
            "ruleDisabled": bool(payload.get("ruleDisabled", False)),
            "awsIotSqlVersion": payload.get("awsIotSqlVersion", "2016-03-23"),
        }
        return {"ruleArn": self._arn(name), "rule": rule}

    def delete(self, name: str) -> dict[str, Any]:
        if not self.engine.delete(name):
            raise not_found(f"Rule {name}")
        return {}

    def list(self) -> dict[str, Any]:
        rules = []
        for name in self.engine.names():
            rule = self.get(name)["rule"]
            rules.append(
                {
                    "ruleArn": self._arn(name),
                    "ruleName": name,
                    "topicPattern": parse(rule["sql"]).topic_filter,
                    "createdAt": rule["createdAt"],
                    "ruleDisabled": rule["ruleDisabled"],
                }
            )
        return {"rules": rules}

    def scan(self, table: str) -> dict[str, Any]:
        return {"tableName": table, "items": self.store.scan_items(table)}
