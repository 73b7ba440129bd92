"""Which handler answers each (OCPP version, action), and loading the modules that say so.

:func:`load_registry` registers, in this order, the built-in defaults, the
modules of the ``ocpp_gateway.handlers`` entry points (by entry-point name),
then each ``--handlers`` module in the order given: a later registration for
the same (version, action) replaces the earlier one, logged at INFO.  A module
that cannot be imported, or that registers an action the ``ocpp`` package has
no schema for, is a :class:`HandlerLoadError` (a configuration error: the
processor does not start).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from ..errors import ConfigError
from . import boot, defaults_16, defaults_201
from .actions import known_actions
from .handlers import ENTRY_POINT_GROUP, VERSIONS, Handler, marks_of

log = logging.getLogger(__name__)

BUILT_IN = (boot, defaults_16, defaults_201)


class HandlerLoadError(ConfigError):
    """A handler module could not be loaded (the message says which and why, in one line)."""


def _origin(function: Handler) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', '?')}"


class HandlerRegistry:
    """The handler of each (version, action); a later :meth:`register` wins."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Handler] = {}

    def register(self, version: str, action: str, function: Handler) -> None:
        if version not in VERSIONS:
            raise HandlerLoadError(
                f"{_origin(function)}: OCPP version {version!r} is not one of {', '.join(VERSIONS)}"
            )
        if action not in known_actions(version):
            raise HandlerLoadError(
                f"{_origin(function)}: OCPP {version} has no action {action!r} "
                "(no request schema in the ocpp package)"
            )
        previous = self._handlers.get((version, action))
        if previous is not None and previous is not function:
            log.info(
                "processor: OCPP %s %s now answered by %s (was %s)",
                version,
                action,
                _origin(function),
                _origin(previous),
            )
        self._handlers[(version, action)] = function

    def register_module(self, module: ModuleType) -> int:
        """Register the ``@handler`` functions defined in ``module`` (not those it imports).

        In the order they are defined; returns how many registrations it made.
        """
        count = 0
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) != module.__name__:
                continue
            for version, action in marks_of(value):
                self.register(version, action, value)
                count += 1
        return count

    def get(self, version: str, action: str) -> Handler | None:
        return self._handlers.get((version, action))

    def actions(self, version: str) -> frozenset[str]:
        """The actions of ``version`` that have a handler."""
        return frozenset(a for v, a in self._handlers if v == version)


def split_module_names(names: Iterable[str]) -> list[str]:
    """``--handlers`` values, each possibly comma-separated, as a list of module names."""
    return [part.strip() for name in names for part in name.split(",") if part.strip()]


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any failure of the CPO's module is reported in one line
        raise HandlerLoadError(
            f"cannot import handler module {name!r}: {type(exc).__name__}: {exc}"
        ) from None


def _load_entry_point(entry: EntryPoint) -> ModuleType:
    try:
        loaded = entry.load()
    except Exception as exc:  # noqa: BLE001 - any failure of the CPO's module is reported in one line
        raise HandlerLoadError(
            f"cannot load entry point {entry.name!r} ({entry.value}) of group "
            f"{ENTRY_POINT_GROUP}: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(loaded, ModuleType):
        raise HandlerLoadError(
            f"entry point {entry.name!r} of group {ENTRY_POINT_GROUP} names {entry.value!r}, "
            "not a module"
        )
    return loaded


def load_registry(
    modules: Sequence[str] = (), *, plugins: Iterable[EntryPoint] | None = None
) -> HandlerRegistry:
    """The built-in handlers, then the entry points' modules, then ``modules``.

    ``plugins``: the entry points to load (default: the installed ones of
    group ``ocpp_gateway.handlers``).
    """
    registry = HandlerRegistry()
    for module in BUILT_IN:
        registry.register_module(module)
    found = entry_points(group=ENTRY_POINT_GROUP) if plugins is None else plugins
    for entry in sorted(found, key=lambda e: e.name):
        module = _load_entry_point(entry)
        count = registry.register_module(module)
        log.info(
            "processor: %d handler(s) from entry point %s (%s)", count, entry.name, module.__name__
        )
    for name in split_module_names(modules):
        count = registry.register_module(_import(name))
        log.info("processor: %d handler(s) from module %s", count, name)
    return registry
