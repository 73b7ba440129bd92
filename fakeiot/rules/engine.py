"""Topic rules: AWS IoT's ``topicRulePayload``, evaluated on every broker message.

A rule is stored in AWS's shape (``CreateTopicRule``)::

    {"sql": "SELECT ... FROM '+/in' WHERE ...", "ruleDisabled": false,
     "actions": [{"dynamoDBv2": {"roleArn": "...", "putItem": {"tableName": "chargePointHeartbeat"}}},
                 {"republish": {"roleArn": "...", "topic": "alerts/${topic(1)}", "qos": 0}}]}

Actions supported:

* ``dynamoDBv2``: the SELECT result is stored as one item of a local table
  (SQLite, ``<data-dir>/fakeiot.sqlite3``), keyed - like a DynamoDB table's
  partition key - by the statement's *first* column; a later item with the
  same key replaces it.  ``python -m fakeiot table scan NAME`` reads it.
* ``republish``: the SELECT result (JSON) is published to ``topic``, whose
  ``${expression}`` parts are evaluated against the message.  Republished
  messages do not trigger rules again (no loops).
* ``lambda``: the SELECT result is the event of the function ``functionArn``,
  run offline as a Python callable (:mod:`fakeiot.rules.lambdas`: fakeiot's
  ``--lambda ARN=module:function``), asynchronously, in a bounded pool.

Any other action is refused with an error naming it.  Rules see every
message the broker delivers: client publishes, shadow responses, presence
and registry events.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store import Store
from ..tally import Tally
from .lambdas import Invocation, LambdaError, LambdaRunner, check_function_arn
from .sql import UNDEFINED, Message, RuleSqlError, Statement, parse

log = logging.getLogger(__name__)

RULE_KIND = "topic-rule"
RULE_NAME = re.compile(r"\A[a-zA-Z0-9_]{1,128}\Z")
_TEMPLATE = re.compile(r"\$\{([^}]*)\}")
SUPPORTED_ACTIONS = ("dynamoDBv2", "republish", "lambda")


class RuleError(ValueError):
    """A rule cannot be created as given."""


@dataclass(frozen=True)
class TableItem:
    """An item a rule's dynamoDBv2 action stores."""

    rule: str
    table: str
    key: str
    item: dict[str, Any]


@dataclass
class RuleOutput:
    """What the rules made of one message."""

    republish: list[tuple[str, bytes, int]] = field(default_factory=list)  # (topic, payload, qos)
    items: list[TableItem] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)


@dataclass(frozen=True)
class _Republish:
    topic: str
    templates: tuple[tuple[str, Statement], ...]
    qos: int


@dataclass(frozen=True)
class _Rule:
    name: str
    statement: Statement
    tables: tuple[str, ...]
    republish: tuple[_Republish, ...]
    disabled: bool
    functions: tuple[str, ...] = ()  # Lambda function ARNs


def compile_rule(name: str, payload: Mapping[str, Any]) -> _Rule:
    """Validate a topicRulePayload; raises :class:`RuleError` saying what is wrong."""
    if not RULE_NAME.match(name):
        raise RuleError(f"invalid rule name {name!r}: 1-128 characters of [a-zA-Z0-9_]")
    if not isinstance(payload, Mapping) or not isinstance(payload.get("sql"), str):
        raise RuleError("a rule needs 'sql' (the SELECT statement)")
    version = payload.get("awsIotSqlVersion")
    if version not in (None, "2015-10-08", "2016-03-23", "beta"):
        raise RuleError(f"unknown awsIotSqlVersion {version!r}")
    try:
        statement = parse(payload["sql"])
    except RuleSqlError as exc:
        raise RuleError(f"rule {name}: {exc}") from None
    actions = payload.get("actions") or []
    if not isinstance(actions, list) or not actions:
        raise RuleError(
            f"rule {name}: needs at least one action ({' or '.join(SUPPORTED_ACTIONS)})"
        )
    tables: list[str] = []
    republish: list[_Republish] = []
    functions: list[str] = []
    for action in actions:
        kinds = list(action) if isinstance(action, Mapping) else []
        if len(kinds) != 1:
            raise RuleError(f"rule {name}: each action is an object with exactly one action type")
        kind, spec = kinds[0], action[kinds[0]]
        if kind == "dynamoDBv2":
            table = ((spec or {}).get("putItem") or {}).get("tableName")
            if not isinstance(table, str) or not table:
                raise RuleError(f"rule {name}: dynamoDBv2 needs putItem.tableName")
            if not statement.columns or statement.columns[0].expr is None:
                raise RuleError(
                    f"rule {name}: dynamoDBv2 keys items by the first SELECT column, which cannot be *"
                )
            tables.append(table)
        elif kind == "republish":
            topic = (spec or {}).get("topic")
            if not isinstance(topic, str) or not topic or "#" in topic or "+" in topic:
                raise RuleError(f"rule {name}: republish needs a topic without wildcards")
            templates = []
            for expression in _TEMPLATE.findall(topic):
                try:
                    templates.append((expression, parse(f"SELECT {expression} AS v FROM '#'")))
                except RuleSqlError as exc:
                    raise RuleError(
                        f"rule {name}: republish topic ${{{expression}}}: {exc}"
                    ) from None
            republish.append(_Republish(topic, tuple(templates), int((spec or {}).get("qos", 0))))
        elif kind == "lambda":
            try:
                functions.append(check_function_arn((spec or {}).get("functionArn")))
            except LambdaError as exc:
                raise RuleError(f"rule {name}: lambda functionArn: {exc}") from None
        else:
            raise RuleError(
                f"rule {name}: unsupported action {kind!r} (fakeiot supports {', '.join(SUPPORTED_ACTIONS)})"
            )
    return _Rule(
        name,
        statement,
        tuple(tables),
        tuple(republish),
        bool(payload.get("ruleDisabled", False)),
        tuple(functions),
    )


class RulesEngine:
    """Rules kept in the store, evaluated by the broker for every delivered message."""

    def __init__(self, store: Store, lambdas: LambdaRunner | None = None) -> None:
        self._store = store
        self.lambdas = lambdas  # runs the lambda actions' invocations (None: each is an error)
        self._lock = threading.Lock()
        self._rules: dict[str, _Rule] = {}
        self.errors = 0
        # (rule, outcome) -> executions (fakeiot/metrics.py): "selected" (the SQL gave a row, the
        # actions run), "filtered" (WHERE false), "error" (the SQL failed), "action_failed" (an
        # item not stored, a function not invoked).  Bumped on the broker's loop and store thread.
        self.executions = Tally()
        for name, doc in store.list_resources(RULE_KIND):
            try:
                self._rules[name] = compile_rule(name, doc["payload"])
            except RuleError as exc:  # written by an older fakeiot
                log.error("stored rule %s ignored: %s", name, exc)

    def put(self, name: str, payload: Mapping[str, Any], *, replace: bool = False) -> bool:
        """Create (or with ``replace`` overwrite) a rule; returns False if it exists and replace is false."""
        rule = compile_rule(name, payload)
        with self._lock:
            if name in self._rules and not replace:
                return False
            self._store.put_resource(
                RULE_KIND, name, {"payload": dict(payload), "created": time.time()}
            )
            self._rules = {**self._rules, name: rule}
        return True

    def get(self, name: str) -> dict[str, Any] | None:
        return self._store.get_resource(RULE_KIND, name)

    def names(self) -> list[str]:
        return sorted(self._rules)

    def delete(self, name: str) -> bool:
        with self._lock:
            if name not in self._rules:
                return False
            self._store.delete_resource(RULE_KIND, name)
            self._rules = {k: v for k, v in self._rules.items() if k != name}
        # Its name is a label of the metrics: gone with it, so that rules created and deleted
        # without end cannot grow /metrics without end (an action still running may count once).
        self.executions.forget(name)
        return True

    def on_message(
        self, topic: str, payload: bytes, client_id: str | None
    ) -> list[tuple[str, bytes, int]]:
        """Run the matching rules and store their table items; returns the messages to republish.

        Blocking (the store); the broker calls :meth:`evaluate` on its loop and
        :meth:`store_items` in its store thread instead.
        """
        output = self.evaluate(topic, payload, client_id)
        self.store_items(output.items)
        self.invoke(output.invocations)
        return output.republish

    @property
    def active(self) -> bool:
        """Whether any rule is defined (a message needs no evaluation otherwise)."""
        return bool(self._rules)

    def evaluate(self, topic: str, payload: bytes, client_id: str | None) -> RuleOutput:
        """Run the matching rules on one message, without I/O: what to republish and what to store."""
        rules = self._rules  # copy-on-write: no lock needed to read
        output = RuleOutput()
        if not rules:
            return output
        message = Message(topic, payload, client_id, int(time.time() * 1000))
        for rule in rules.values():
            if rule.disabled or not rule.statement.matches_topic(topic):
                continue
            try:
                result = rule.statement.evaluate(message)
                if result is None:
                    self.executions.add(rule.name, "filtered")
                    continue
                self.executions.add(rule.name, "selected")
                for table in rule.tables:
                    key_column = rule.statement.columns[0].name
                    if key_column not in result:
                        log.warning(
                            "rule %s: no %s in the result, nothing stored in %s",
                            rule.name,
                            key_column,
                            table,
                        )
                        continue
                    key = result[key_column]
                    output.items.append(
                        TableItem(
                            rule.name,
                            table,
                            key if isinstance(key, str) else json.dumps(key),
                            result,
                        )
                    )
                for arn in rule.functions:
                    output.invocations.append(Invocation(rule.name, arn, result))
                for action in rule.republish:
                    output.republish.append(
                        (_render(action, message), json.dumps(result).encode(), action.qos)
                    )
            except Exception:  # one rule's failure must not affect the broker or other rules
                self.errors += 1
                self.executions.add(rule.name, "error")
                log.exception("rule %s failed on a message on %s", rule.name, topic)
        return output

    def invoke(self, invocations: list[Invocation]) -> None:
        """Hand the lambda actions' invocations to the runner; never blocks (a full pool drops)."""
        for invocation in invocations:
            if self.lambdas is None:
                self.errors += 1
                self.executions.add(invocation.rule, "action_failed")
                log.error(
                    "rule %s: %s not invoked: fakeiot runs no functions (start it with --lambda "
                    "ARN=module:function)",
                    invocation.rule,
                    invocation.function_arn,
                )
                continue
            self.lambdas.submit(invocation)

    def store_items(self, items: list[TableItem]) -> None:
        """Store what :meth:`evaluate` produced, in order (blocking: SQLite)."""
        for item in items:
            try:
                self._store.put_item(item.table, item.key, item.item)
            except Exception:  # a failed write must not affect the broker or the other items
                self.errors += 1
                self.executions.add(item.rule, "action_failed")
                log.exception("rule %s: storing an item in %s failed", item.rule, item.table)


def _render(action: _Republish, message: Message) -> str:
    topic = action.topic
    for expression, statement in action.templates:
        expr = statement.columns[0].expr
        assert expr is not None
        value = expr(message, message.document())
        if value is UNDEFINED:
            value = ""
        topic = topic.replace(
            "${" + expression + "}", value if isinstance(value, str) else json.dumps(value), 1
        )
    return topic


def load_rules_file(path: Path) -> dict[str, dict[str, Any]]:
    """Read ``{"rules": {"<ruleName>": <topicRulePayload>, ...}}`` (JSON) and validate every rule."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise RuleError(f"cannot read rules file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise RuleError(f"rules file {path} is not valid JSON: {exc}") from None
    rules = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(rules, dict):
        raise RuleError(
            f'rules file {path}: expected {{"rules": {{"<ruleName>": {{"sql": ..., "actions": [...]}}}}}}'
        )
    for name, payload in rules.items():
        compile_rule(name, payload)
    return rules
