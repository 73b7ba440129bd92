"""The dependency direction: the product (gateway) never imports its stand-in (fakeiot).

Checked statically, from the source of every module (ast), so that an import hidden in a
branch or a function counts too; and once dynamically, by importing the product with
fakeiot and amqtt made unimportable, as in the container.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = "gateway.devstack"  # the development stack: the one gateway module that imports fakeiot


@dataclass(frozen=True)
class Import:
    importer: str  # dotted name of the importing module
    target: str  # dotted name of what it imports
    line: int
    top_level: bool  # executed when the module is imported (not inside a function)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    # ``from . import devstack`` imports a module; ``from .x import y`` imports x (and maybe y).
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def imports_of(path: Path) -> Iterator[Import]:
    importer = module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)

    def walk(node: ast.AST, top_level: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, importer, path.name == "__init__.py"):
                    yield Import(importer, target, child.lineno, top_level)
            yield from walk(child, top_level and not isinstance(child, functions))

    yield from walk(tree, True)


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def is_in(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def test_the_walker_sees_imports_of_every_kind() -> None:
    """Guards the checks below against passing because nothing was found."""
    found = {(i.target, i.top_level) for i in imports_of(ROOT / "gateway" / "devstack.py")}
    assert ("fakeiot", True) in found and ("fakeiot.policy", True) in found
    assert ("gateway.app", True) in found  # a relative import, resolved
    lazy = [i for i in imports_of(ROOT / "gateway" / "__main__.py") if is_in(i.target, LAUNCHER)]
    assert lazy and not any(i.top_level for i in lazy)
    assert len(modules("gateway")) > 20 and len(modules("fakeiot")) > 10


def test_no_gateway_module_imports_fakeiot_except_the_development_launcher() -> None:
    offending = [
        f"{i.importer}:{i.line} imports {i.target}"
        for path in modules("gateway")
        for i in imports_of(path)
        if is_in(i.target, "fakeiot") and i.importer != LAUNCHER
    ]
    assert offending == []


def test_only_gateway_main_imports_the_launcher_and_only_when_it_runs_it() -> None:
    importers = [
        i
        for package in ("gateway", "fakeiot")
        for path in modules(package)
        for i in imports_of(path)
        if is_in(i.target, LAUNCHER)
    ]
    assert {i.importer for i in importers} == {"gateway.__main__"}
    assert not any(i.top_level for i in importers), "gateway/__main__.py imports it lazily"


def test_no_fakeiot_module_imports_gateway() -> None:
    offending = [
        f"{i.importer}:{i.line} imports {i.target}"
        for path in modules("fakeiot")
        for i in imports_of(path)
        if is_in(i.target, "gateway")
    ]
    assert offending == []


def test_the_product_imports_without_fakeiot_or_amqtt() -> None:
    """As in the container, where neither is installed."""
    product = [
        module_name(path)
        for path in modules("gateway")
        if module_name(path) != LAUNCHER and path.name != "__main__.py"
    ] + ["gateway.__main__", "gateway.processor.__main__"]
    code = (
        "import importlib, sys\n"
        "sys.modules['fakeiot'] = sys.modules['amqtt'] = None\n"
        f"for name in {product!r}:\n"
        "    importlib.import_module(name)\n"
        "print('imported', len(sys.argv) and 'ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported ok"
