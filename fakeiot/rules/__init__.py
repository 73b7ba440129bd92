"""fakeiot's rules engine: a subset of AWS IoT SQL and three actions (dynamoDBv2, republish, lambda)."""

from .engine import RuleError, RulesEngine, load_rules_file
from .lambdas import LambdaError, LambdaRunner
from .sql import RuleSqlError, SqlSyntaxError, UnsupportedSql, parse

__all__ = [
    "LambdaError",
    "LambdaRunner",
    "RuleError",
    "RuleSqlError",
    "RulesEngine",
    "SqlSyntaxError",
    "UnsupportedSql",
    "load_rules_file",
    "parse",
]
