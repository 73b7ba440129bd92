"""fakeiot's rules engine: a subset of AWS IoT SQL and two actions."""

from .engine import RuleError, RulesEngine, load_rules_file
from .sql import RuleSqlError, SqlSyntaxError, UnsupportedSql, parse

__all__ = [
    "RuleError",
    "RuleSqlError",
    "RulesEngine",
    "SqlSyntaxError",
    "UnsupportedSql",
    "load_rules_file",
    "parse",
]
