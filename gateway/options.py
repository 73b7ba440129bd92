"""Options declared once: the flag, the environment variable, the checks and the documentation.

A program's configuration is a frozen dataclass whose fields are declared
with :func:`option`::

    @dataclass(frozen=True)
    class Config:
        port: int = option(8080, "WebSocket port (0: any free port)", group="server", min=0, max=65535)

From that one declaration come the flag ``--port``, the environment variable
``<PREFIX>PORT`` (``GATEWAY_PORT``), the conversion of its text, its checks
(range, choices, a custom check), its line in ``--help`` and in
docs/configuration.md.  A flag wins over the variable, the variable over the
default; an empty variable counts as unset.  Secrets are never shown: their
field has ``repr=False`` and nothing here prints a secret's value or default.

Checks that involve several options belong to the program (its
``load_config``); they raise :class:`~gateway.errors.ConfigError`.
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")

_KEY = "gateway.option"
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class Option:
    """What a field's declaration says beyond its name, type and default."""

    help: str
    group: str
    min: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound
    max: float | None = None  # inclusive
    note: str = ""  # appended to a range complaint, e.g. "(0: never)"
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = (
        None  # the value -> a complaint ("must ...") or None
    )
    parse: Callable[[str], Any] | None = None  # text -> value, instead of the type's own conversion
    is_file: bool = False  # a Path that must name an existing file
    secret: bool = False
    negative_flag: str | None = None  # a tri-state bool: --processor / --no-processor
    default_text: str | None = (
        None  # how the default reads in help and docs, when its repr does not say it
    )
    metavar: str | None = None


def option(
    default: Any,
    help: str,
    *,
    group: str,
    min: float | None = None,
    above: float | None = None,
    max: float | None = None,
    note: str = "",
    choices: Iterable[Any] | None = None,
    check: Callable[[Any], str | None] | None = None,
    parse: Callable[[str], Any] | None = None,
    is_file: bool = False,
    secret: bool = False,
    negative_flag: str | None = None,
    default_text: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option (see the module's docstring)."""
    declared = Option(
        help=help,
        group=group,
        min=min,
        above=above,
        max=max,
        note=note,
        choices=tuple(choices) if choices is not None else None,
        check=check,
        parse=parse,
        is_file=is_file,
        secret=secret,
        negative_flag=negative_flag,
        default_text=default_text,
        metavar=metavar,
    )
    return field(default=default, repr=not secret, metadata={_KEY: declared})


@dataclass(frozen=True)
class Spec:
    """One option of one program, resolved: its names, type and default."""

    name: str
    kind: Any  # the field's type, e.g. int, Path | None
    default: Any
    option: Option
    flag: str
    env: str

    @property
    def base(self) -> Any:
        """The type without ``| None``."""
        args = [a for a in typing.get_args(self.kind) if a is not type(None)]
        if isinstance(self.kind, types.UnionType) and len(args) == 1:
            return args[0]
        return self.kind

    @property
    def optional(self) -> bool:
        return isinstance(self.kind, types.UnionType) and type(None) in typing.get_args(self.kind)

    @property
    def is_bool(self) -> bool:
        return self.base is bool

    def convert(self, text: str) -> Any:
        """Text from the command line or the environment -> the value (ConfigError with the reason)."""
        if self.option.parse is not None:
            return self.option.parse(text)
        base = self.base
        if base is bool:
            value = _BOOLEANS.get(text.strip().lower())
            if value is None:
                raise ConfigError(f"expected true or false, not {text!r}")
            return value
        if base is int:
            try:
                return int(text)
            except ValueError:
                raise ConfigError(f"invalid int value: {text!r}") from None
        if base is float:
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ConfigError(f"invalid float value: {text!r}")
            return number
        if base is Path:
            return Path(text).expanduser()
        if typing.get_origin(base) is tuple:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return text

    def complaint(self, value: Any) -> str | None:
        """What is wrong with ``value`` (a sentence after the option's name), or None."""
        o = self.option
        if value is None:
            return None
        if o.choices is not None and value not in o.choices:
            return f"must be one of {', '.join(map(str, o.choices))}, not {value!r}"
        note = f" {o.note}" if o.note else ""
        if o.min is not None and o.max is not None and not o.min <= value <= o.max:
            return f"must be between {_number(o.min)} and {_number(o.max)}{note}"
        if o.min is not None and value < o.min:
            return f"must be >= {_number(o.min)}{note}"
        if o.above is not None and value <= o.above:
            return f"must be > {_number(o.above)}{note}"
        if o.max is not None and value > o.max:
            return f"must be <= {_number(o.max)}{note}"
        return o.check(value) if o.check is not None else None

    def shown_default(self) -> str | None:
        """The default as help and docs show it; None: nothing to show."""
        if self.option.default_text is not None:
            return self.option.default_text
        if self.option.secret or self.default is None:
            return None
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, tuple):
            return ",".join(map(str, self.default))
        if isinstance(self.default, str) and not self.default:
            return '""'
        return str(self.default)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def specs(cls: type[Any], prefix: str) -> list[Spec]:
    """The options of a configuration class, in declaration order; ``prefix``: e.g. ``GATEWAY_``."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in fields(cls):
        declared = f.metadata.get(_KEY)
        if declared is None:
            continue
        default = f.default if f.default is not MISSING else None
        found.append(
            Spec(
                name=f.name,
                kind=hints[f.name],
                default=default,
                option=declared,
                flag="--" + f.name.replace("_", "-"),
                env=prefix + f.name.upper(),
            )
        )
    return found


def _help(spec: Spec) -> str:
    extra = [f"env {spec.env}"]
    shown = spec.shown_default()
    if shown is not None:
        extra.insert(0, f"default: {shown}")
    return f"{spec.option.help} ({'; '.join(extra)})".replace("%", "%%")


def build_parser(
    cls: type[Any], prefix: str, groups: Mapping[str, str] | None = None, **parser_args: Any
) -> tuple[argparse.ArgumentParser, list[Spec]]:
    """An argparse parser whose flags leave unset options out of the namespace.

    ``groups`` (group name -> heading): --help lists the options under these headings.
    """
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS, **parser_args)
    sections = {
        name: parser.add_argument_group(heading) for name, heading in (groups or {}).items()
    }
    for spec in specs(cls, prefix):
        o = spec.option
        target: Any = sections.get(o.group, parser)
        if spec.is_bool and o.negative_flag is not None:
            group = target.add_mutually_exclusive_group()
            group.add_argument(
                spec.flag, dest=spec.name, action="store_const", const=True, help=_help(spec)
            )
            group.add_argument(
                o.negative_flag,
                dest=spec.name,
                action="store_const",
                const=False,
                help=f"the opposite of {spec.flag}",
            )
        elif spec.is_bool:
            target.add_argument(
                spec.flag, dest=spec.name, action="store_const", const=True, help=_help(spec)
            )
        else:
            metavar = o.metavar
            if metavar is None and o.choices is not None:
                metavar = "{" + ",".join(map(str, o.choices)) + "}"
            # int and float are converted by argparse itself ("argument --port: invalid int value").
            kind = spec.base if spec.base in (int, float) and o.parse is None else str
            target.add_argument(
                spec.flag,
                dest=spec.name,
                type=kind,
                metavar=metavar or spec.name.upper(),
                help=_help(spec),
            )
    return parser, specs(cls, prefix)


def resolve(
    cls: type[T],
    parser: argparse.ArgumentParser,
    found: list[Spec],
    argv: Sequence[str] | None,
    environ: Mapping[str, str],
) -> tuple[T, dict[str, str]]:
    """Parse ``argv``, read ``environ``, check each option's value on its own.

    Returns the configuration and the options set, each with where it came from (its flag or
    its variable, for messages).  Files are checked later, by :func:`check_files`, once the
    program has checked how its options go together.

    Argparse's own errors (an unknown flag, ``--port eighty``) exit with its usage message; an
    option's bad value raises ConfigError naming the flag or the variable it came from.
    """
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for spec in found:
        text = environ.get(spec.env, "")
        if spec.name in args:
            label, raw = spec.flag, args[spec.name]
        elif text != "":
            label, raw = spec.env, text
        else:
            continue
        try:
            value = spec.convert(raw) if isinstance(raw, str) else raw
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None
        why = spec.complaint(value)
        if why is not None:
            raise ConfigError(f"{label} {why}")
        values[spec.name] = value
        given[spec.name] = label
    defaults = cls()
    for spec in found:
        if spec.name not in values:
            why = spec.complaint(getattr(defaults, spec.name))
            if why is not None:  # a default that fails its own check is a bug: say where
                raise ConfigError(f"{spec.flag} (default) {why}")
    return replace(defaults, **values), given  # type: ignore[type-var]


def check_files(config: Any, found: list[Spec], given: Mapping[str, str]) -> None:
    """Every file option set names an existing file (ConfigError naming the flag or variable)."""
    for spec in found:
        value = getattr(config, spec.name)
        if spec.option.is_file and value is not None and not Path(value).is_file():
            raise ConfigError(f"{given.get(spec.name, spec.flag)} names no such file: {value}")


def markdown(cls: type[Any], prefix: str, groups: Mapping[str, str]) -> str:
    """The options as Markdown tables, one per group (``groups``: name -> heading, in order)."""
    found = specs(cls, prefix)
    out: list[str] = []
    for group, heading in groups.items():
        members = [s for s in found if s.option.group == group]
        if not members:
            continue
        out += [f"### {heading}", "", "| Flag | Environment variable | Default | Meaning |"]
        out.append("|---|---|---|---|")
        for spec in members:
            flag = f"`{spec.flag}`"
            if spec.option.negative_flag:
                flag += f" / `{spec.option.negative_flag}`"
            shown = spec.shown_default()
            default = "" if shown is None else f"`{shown}`"
            meaning = spec.option.help.replace("|", "\\|")
            if spec.option.secret:
                meaning += " (a secret: never logged)"
            out.append(f"| {flag} | `{spec.env}` | {default} | {meaning} |")
        out.append("")
    missing = {s.option.group for s in found} - set(groups)
    if missing:
        raise ValueError(f"groups without a heading: {sorted(missing)}")
    return "\n".join(out)


def section(config: Any, cls: type[T], group: str, prefix: str = "") -> T:
    """The frozen sub-configuration ``cls`` built from the options of ``group``.

    Its fields are named like the options without ``prefix`` (``mqtt_host`` -> ``host``).
    """
    values = {
        f.name.removeprefix(prefix): getattr(config, f.name)
        for f in fields(config)
        if _KEY in f.metadata and f.metadata[_KEY].group == group
    }
    return cls(**values)
