"""The stack's context values (``cdk deploy -c name=value``), read and checked once.

Every value is optional; :class:`StackSettings` holds the defaults.  A bad value stops the
synthesis with a :class:`SettingsError` naming the context key and what it must be, before any
resource is built.  Pure code: no CDK import, so it is unit-tested on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

# Fargate's valid (cpu units, memory MiB) pairs up to 4 vCPU.
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}
ARCHITECTURES = ("x86_64", "arm64")
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


class SettingsError(ValueError):
    """A context value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class StackSettings:
    """What ``cdk deploy -c key=value`` can change (docs/deploying-aws.md lists them)."""

    # TLS at the load balancer: wss://<domain> on 443 with an ACM certificate and a Route 53
    # alias record in the hosted zone; unset: ws://<load balancer DNS name>:8080.
    domain: str | None = None
    hosted_zone_id: str | None = None
    # The hosted zone's own name (default: the domain's parent, e.g. example.com for
    # ocpp.example.com).
    hosted_zone_name: str | None = None
    architecture: str = "arm64"
    cpu: int = 512
    memory: int = 1024
    min_tasks: int = 1
    max_tasks: int = 4
    # Target tracking: average CPU of the service's tasks, percent (the AWS sample's 60).
    cpu_target: int = 60
    # Target tracking: connected charge points per running task (NLB active flows / healthy targets).
    connections_target: int = 5000
    # Seconds after a scale-in before the next one: each one closes (1001) and moves the CPs
    # of the tasks it stops.
    scale_in_cooldown: int = 600
    scale_out_cooldown: int = 60
    nat_gateways: int = 1
    # Interval the processor returns in BootNotification responses, seconds (its own default, 10,
    # is the sample's demonstration value: with 1,000 CPs it is 100 CALLs a second).
    heartbeat_interval: int = 300
    log_retention_days: int = 30
    container_insights: bool = False
    # Open-files limit of the gateway container: two sockets per CP (docs/deploying.md).
    nofile: int = 65536

    @property
    def tls(self) -> bool:
        return self.domain is not None

    @property
    def zone_name(self) -> str | None:
        if self.domain is None:
            return None
        return self.hosted_zone_name or self.domain.split(".", 1)[1]


# Context key (camelCase, as CDK apps spell them) -> field name.
CONTEXT_KEYS = {
    "domain": "domain",
    "hostedZoneId": "hosted_zone_id",
    "hostedZoneName": "hosted_zone_name",
    "architecture": "architecture",
    "cpu": "cpu",
    "memory": "memory",
    "minTasks": "min_tasks",
    "maxTasks": "max_tasks",
    "cpuTarget": "cpu_target",
    "connectionsTarget": "connections_target",
    "scaleInCooldown": "scale_in_cooldown",
    "scaleOutCooldown": "scale_out_cooldown",
    "natGateways": "nat_gateways",
    "heartbeatInterval": "heartbeat_interval",
    "logRetentionDays": "log_retention_days",
    "containerInsights": "container_insights",
    "nofile": "nofile",
}


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise SettingsError(f"context {key}: expected a whole number, not {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise SettingsError(f"context {key}: expected a whole number, not {value!r}") from None


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"context {key}: expected true or false, not {value!r}")


def _text(key: str, value: Any) -> str | None:
    text = str(value).strip()
    return text or None


_CONVERT: dict[str, Callable[[str, Any], Any]] = {
    "int": _integer,
    "bool": _boolean,
    "str | None": _text,
    "str": _text,
}


def settings_from_context(get: Callable[[str], Any]) -> StackSettings:
    """Build the settings from ``get(key)`` (``app.node.try_get_context``); None: the default."""
    types = {f.name: str(f.type) for f in fields(StackSettings)}
    values: dict[str, Any] = {}
    for key, name in CONTEXT_KEYS.items():
        raw = get(key)
        if raw is None:
            continue
        value = _CONVERT[types[name]](key, raw)
        if value is not None:
            values[name] = value
    return check(StackSettings(**values))


def settings_from_mapping(context: Mapping[str, Any]) -> StackSettings:
    """:func:`settings_from_context` over a plain mapping (tests, the cdk.json context)."""
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise SettingsError(
            f"unknown context {', '.join(unknown)}; known: {', '.join(CONTEXT_KEYS)}"
        )
    return settings_from_context(context.get)


def check(settings: StackSettings) -> StackSettings:
    """``settings`` if every value is usable; otherwise SettingsError naming the context key."""
    s = settings
    if s.domain is not None:
        if not _DOMAIN.fullmatch(s.domain) or s.domain.count(".") < 1:
            raise SettingsError(
                f"context domain: expected a DNS name such as ocpp.example.com, not {s.domain!r}"
            )
        if s.hosted_zone_id is None:
            raise SettingsError(
                "context domain needs hostedZoneId (the Route 53 zone that holds it)"
            )
        zone = s.zone_name or ""
        if not (s.domain == zone or s.domain.endswith("." + zone)):
            raise SettingsError(
                f"context hostedZoneName: {zone!r} does not contain the domain {s.domain!r}"
            )
    elif s.hosted_zone_id is not None or s.hosted_zone_name is not None:
        raise SettingsError("context hostedZoneId/hostedZoneName given without domain")
    if s.architecture not in ARCHITECTURES:
        raise SettingsError(
            f"context architecture: expected one of {', '.join(ARCHITECTURES)}, not {s.architecture!r}"
        )
    if s.cpu not in FARGATE_SIZES:
        raise SettingsError(
            f"context cpu: expected one of {', '.join(map(str, FARGATE_SIZES))} (CPU units), not {s.cpu}"
        )
    if s.memory not in FARGATE_SIZES[s.cpu]:
        allowed = FARGATE_SIZES[s.cpu]
        raise SettingsError(
            f"context memory: with cpu {s.cpu}, expected {allowed[0]}..{allowed[-1]} MiB in Fargate's steps, not {s.memory}"
        )
    if not 1 <= s.min_tasks <= s.max_tasks:
        raise SettingsError(
            f"context minTasks/maxTasks: need 1 <= minTasks <= maxTasks, not {s.min_tasks}/{s.max_tasks}"
        )
    if not 10 <= s.cpu_target <= 90:
        raise SettingsError(f"context cpuTarget: expected 10..90 percent, not {s.cpu_target}")
    if s.connections_target < 1:
        raise SettingsError(
            f"context connectionsTarget: expected at least 1 connection per task, not {s.connections_target}"
        )
    for key, value in (
        ("scaleInCooldown", s.scale_in_cooldown),
        ("scaleOutCooldown", s.scale_out_cooldown),
    ):
        if not 0 <= value <= 3600:
            raise SettingsError(f"context {key}: expected 0..3600 seconds, not {value}")
    if not 0 <= s.nat_gateways <= 3:
        raise SettingsError(f"context natGateways: expected 0..3, not {s.nat_gateways}")
    if not 10 <= s.heartbeat_interval <= 86400:
        raise SettingsError(
            f"context heartbeatInterval: expected 10..86400 seconds, not {s.heartbeat_interval}"
        )
    if s.log_retention_days not in LOG_RETENTION_DAYS:
        raise SettingsError(
            f"context logRetentionDays: expected one of CloudWatch's {', '.join(map(str, LOG_RETENTION_DAYS))}, not {s.log_retention_days}"
        )
    if not 1024 <= s.nofile <= 1_048_576:
        raise SettingsError(
            f"context nofile: expected 1024..1048576 (Fargate's hard limit), not {s.nofile}"
        )
    return s


# The retention periods CloudWatch Logs accepts.
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
