"""A small AWS IoT SQL: parse a rule's statement once, evaluate it per message.

Supported (the subset AWS IoT rules commonly use, enough for the sample's
heartbeat rule as written)::

    SELECT <* | expression [AS name], ...> FROM '<topic filter>' [WHERE expression]

Expressions: numbers, 'strings', true/false/null, payload fields
(``state.reported.model``, ``a.b[0]``), ``*`` (the whole payload, as in
``get(*, 2)``), the functions ``topic([n])``, ``timestamp()``,
``clientid()``, ``get(value, index_or_key)``, ``lower``, ``upper``,
``concat``, ``encode(value, 'base64')`` (``encode(*, 'base64')``: the
payload's bytes, JSON or not; see :mod:`.sql_functions`); operators ``= <> != < <= > >= AND OR NOT + - * / %`` and
parentheses.  Anything else (``CASE``, ``GROUP BY``, another function...)
raises :class:`UnsupportedSql` naming what is not supported; a malformed
statement raises :class:`SqlSyntaxError`.

Pure: no I/O.  A field that is missing, or an operation on mismatched
types, is *undefined* (as in AWS IoT): a ``WHERE`` that is undefined does not
match, and an undefined column is left out of the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .sql_functions import FUNCTIONS, RAW_PAYLOAD, arith, compare, fn_get, is_number
from .sql_functions import UNDEFINED as UNDEFINED
from .sql_functions import Message as Message


class RuleSqlError(ValueError):
    """A rule's SQL statement cannot be used."""


class SqlSyntaxError(RuleSqlError):
    pass


class UnsupportedSql(RuleSqlError):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<string>'(?:[^']|'')*')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><>|!=|<=|>=|[=<>+\-*/%(),.\[\]])|(?P<bad>\S))"
)
_KEYWORDS = {"SELECT", "FROM", "WHERE", "AS", "AND", "OR", "NOT", "TRUE", "FALSE", "NULL"}
_UNSUPPORTED_KEYWORDS = {
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "GROUP",
    "ORDER",
    "BY",
    "JOIN",
    "HAVING",
    "LIMIT",
    "UNION",
    "DISTINCT",
    "IN",
    "LIKE",
    "BETWEEN",
    "IS",
    "INSERT",
    "UPDATE",
    "DELETE",
}


Expr = Callable[[Message, Any], Any]  # (message, parsed payload) -> value


@dataclass(frozen=True)
class Column:
    expr: Expr | None  # None: '*'
    name: str


@dataclass(frozen=True)
class Statement:
    sql: str
    columns: tuple[Column, ...]
    topic_filter: str
    where: Expr | None

    def matches_topic(self, topic: str) -> bool:
        return topic_matches(self.topic_filter, topic)

    def evaluate(self, message: Message) -> dict[str, Any] | None:
        """The SELECT result for a message, or None when FROM/WHERE do not match."""
        if not self.matches_topic(message.topic):
            return None
        doc = message.document()
        if self.where is not None and self.where(message, doc) is not True:
            return None
        result: dict[str, Any] = {}
        for column in self.columns:
            if column.expr is None:
                if isinstance(doc, dict):
                    result.update(doc)
                continue
            value = column.expr(message, doc)
            if value is not UNDEFINED:
                result[column.name] = value
        return result


def topic_matches(topic_filter: str, topic: str) -> bool:
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") != topic_filter.startswith("$"):
        return False
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def validate_topic_filter(topic_filter: str) -> None:
    levels = topic_filter.split("/")
    if not topic_filter:
        raise SqlSyntaxError("FROM needs a topic filter, e.g. FROM '+/in'")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise SqlSyntaxError(
                f"invalid topic filter {topic_filter!r}: '#' must be a whole last level"
            )
        if "+" in level and level != "+":
            raise SqlSyntaxError(
                f"invalid topic filter {topic_filter!r}: '+' must be a whole level"
            )


# -- parsing ------------------------------------------------------------------------


def _tokenize(sql: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if m is None or m.end() == pos:  # only trailing whitespace left
            break
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        text = m.group(kind)
        if kind == "bad":
            if text in '"`':
                raise UnsupportedSql(
                    f"unsupported SQL: quoted identifiers ({text}...{text}); use plain field names"
                )
            raise SqlSyntaxError(f"unexpected character {text!r} at position {m.start(kind)}")
        if kind == "name" and text.upper() in _KEYWORDS | _UNSUPPORTED_KEYWORDS:
            kind, text = "keyword", text.upper()
        tokens.append((kind, text))
    return tokens


class _Parser:
    def __init__(self, sql: str) -> None:
        self.tokens = _tokenize(sql)
        self.pos = 0
        self._unnamed = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def at(self, kind: str, text: str | None = None) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == kind and (text is None or tok[1] == text)

    def take(self, kind: str, text: str | None = None, what: str | None = None) -> str:
        tok = self.peek()
        if tok is not None and tok[0] == "keyword" and tok[1] in _UNSUPPORTED_KEYWORDS:
            raise UnsupportedSql(
                f"unsupported SQL: {tok[1]} (supported: SELECT ... FROM '<topic filter>' [WHERE ...])"
            )
        if not self.at(kind, text):
            found = "end of statement" if tok is None else repr(tok[1])
            raise SqlSyntaxError(f"expected {what or text or kind}, found {found}")
        self.pos += 1
        return tok[1]  # type: ignore[index]

    def statement(self, sql: str) -> Statement:
        self.take("keyword", "SELECT")
        columns = [self.column()]
        while self.at("op", ","):
            self.pos += 1
            columns.append(self.column())
        self.take("keyword", "FROM")
        raw = self.take("string", what="a quoted topic filter after FROM")
        topic_filter = raw[1:-1].replace("''", "'")
        validate_topic_filter(topic_filter)
        where = None
        if self.at("keyword", "WHERE"):
            self.pos += 1
            where = self.expr()
        if self.peek() is not None:
            self.take("end", what="end of statement")  # raises with what was found
        names = [c.name for c in columns if c.expr is not None]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SqlSyntaxError(
                f"duplicate column name(s): {', '.join(duplicates)}; use AS to rename"
            )
        return Statement(sql=sql, columns=tuple(columns), topic_filter=topic_filter, where=where)

    def column(self) -> Column:
        if self.at("op", "*"):
            self.pos += 1
            return Column(None, "*")
        start = self.pos
        expr = self.expr()
        if self.at("keyword", "AS"):
            self.pos += 1
            return Column(expr, self.take("name", what="a column name after AS"))
        consumed = self.tokens[start : self.pos]
        if (
            consumed
            and consumed[-1][0] == "name"
            and all(t[0] == "name" or t[1] == "." for t in consumed)
        ):
            return Column(expr, consumed[-1][1])  # state.reported.model -> model
        self._unnamed += 1
        return Column(expr, f"_{self._unnamed}")

    def expr(self) -> Expr:
        return self.or_expr()

    def or_expr(self) -> Expr:
        left = self.and_expr()
        while self.at("keyword", "OR"):
            self.pos += 1
            right = self.and_expr()
            left = (lambda a, b: lambda m, d: a(m, d) is True or b(m, d) is True)(left, right)
        return left

    def and_expr(self) -> Expr:
        left = self.not_expr()
        while self.at("keyword", "AND"):
            self.pos += 1
            right = self.not_expr()
            left = (lambda a, b: lambda m, d: a(m, d) is True and b(m, d) is True)(left, right)
        return left

    def not_expr(self) -> Expr:
        if self.at("keyword", "NOT"):
            self.pos += 1
            inner = self.not_expr()
            return lambda m, d: (lambda v: UNDEFINED if not isinstance(v, bool) else not v)(
                inner(m, d)
            )
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.additive()
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in ("=", "<>", "!=", "<", "<=", ">", ">="):
            self.pos += 1
            right = self.additive()
            return _binary(compare(tok[1]), left, right)
        return left

    def additive(self) -> Expr:
        left = self.multiplicative()
        while (
            (tok := self.peek()) is not None
            and tok[0] == "op"
            and tok[1] in "+-"
            and len(tok[1]) == 1
        ):
            self.pos += 1
            left = _binary(arith(tok[1]), left, self.multiplicative())
        return left

    def multiplicative(self) -> Expr:
        left = self.unary()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in ("*", "/", "%"):
            self.pos += 1
            left = _binary(arith(tok[1]), left, self.unary())
        return left

    def unary(self) -> Expr:
        if self.at("op", "-"):
            self.pos += 1
            inner = self.unary()
            return lambda m, d: (lambda v: -v if is_number(v) else UNDEFINED)(inner(m, d))
        return self.postfix()

    def postfix(self) -> Expr:
        value = self.primary()
        while True:
            if self.at("op", "."):
                self.pos += 1
                key = self.take("name", what="a field name after '.'")
                value = (
                    lambda base, k: (
                        lambda m, d: (
                            lambda v: v.get(k, UNDEFINED) if isinstance(v, dict) else UNDEFINED
                        )(base(m, d))
                    )
                )(value, key)
            elif self.at("op", "["):
                self.pos += 1
                index = self.expr()
                self.take("op", "]")
                value = (lambda base, i: lambda m, d: fn_get(m, [base(m, d), i(m, d)]))(
                    value, index
                )
            else:
                return value

    def primary(self) -> Expr:
        tok = self.peek()
        if tok is None:
            raise SqlSyntaxError("expected an expression, found end of statement")
        kind, text = tok
        if kind == "number":
            self.pos += 1
            number: Any = float(text) if "." in text else int(text)
            return lambda m, d: number
        if kind == "string":
            self.pos += 1
            literal = text[1:-1].replace("''", "'")
            return lambda m, d: literal
        if kind == "keyword" and text in ("TRUE", "FALSE", "NULL"):
            self.pos += 1
            constant = {"TRUE": True, "FALSE": False, "NULL": None}[text]
            return lambda m, d: constant
        if kind == "op" and text == "*":
            self.pos += 1
            return lambda m, d: d
        if kind == "op" and text == "(":
            self.pos += 1
            inner = self.expr()
            self.take("op", ")")
            return inner
        if kind == "name":
            self.pos += 1
            if self.at("op", "("):
                return self.call(text)
            return lambda m, d: d.get(text, UNDEFINED) if isinstance(d, dict) else UNDEFINED
        if kind == "keyword" and text in _UNSUPPORTED_KEYWORDS:
            raise UnsupportedSql(
                f"unsupported SQL: {text} (supported: SELECT ... FROM '<topic filter>' [WHERE ...])"
            )
        raise SqlSyntaxError(f"expected an expression, found {text!r}")

    def _literal_before(self, closing: str, literal: str) -> bool:
        """Whether the token before the ``closing`` just taken is the string ``literal``."""
        return self.tokens[self.pos - 2] == ("string", literal) and self.tokens[self.pos - 1] == (
            "op",
            closing,
        )

    def call(self, name: str) -> Expr:
        spec = FUNCTIONS.get(name.lower())
        if spec is None:
            raise UnsupportedSql(
                f"unsupported function {name}() (supported: {', '.join(f + '()' for f in FUNCTIONS)})"
            )
        low, high, implementation = spec
        self.take("op", "(")
        args: list[Expr] = []
        if name.lower() == "encode" and self.at("op", "*") and self.peek(1) == ("op", ","):
            self.pos += 1  # encode(*, ...): the payload's bytes, JSON or not
            args.append(lambda m, d: RAW_PAYLOAD)
            self.take("op", ",")
            args.append(self.expr())
        elif not self.at("op", ")"):
            args.append(self.expr())
            while self.at("op", ","):
                self.pos += 1
                args.append(self.expr())
        self.take("op", ")")
        if not low <= len(args) <= high:
            expected = str(low) if low == high else f"{low} to {high}"
            raise SqlSyntaxError(f"{name}() takes {expected} argument(s), got {len(args)}")
        if name.lower() == "encode" and not self._literal_before(")", "'base64'"):
            raise UnsupportedSql("encode(): the only encoding scheme is 'base64'")
        return lambda m, d: implementation(m, [a(m, d) for a in args])


def _binary(op: Callable[[Any, Any], Any], left: Expr, right: Expr) -> Expr:
    return lambda m, d: op(left(m, d), right(m, d))


def parse(sql: str) -> Statement:
    """Parse a rule statement; raises :class:`RuleSqlError` with a specific message."""
    if not isinstance(sql, str) or not sql.strip():
        raise SqlSyntaxError("empty SQL statement")
    return _Parser(sql).statement(sql.strip())
