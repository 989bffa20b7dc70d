"""The import layering in pyproject.toml ([tool.importlinter]) is a contract: import-linter checks it.

Each contract runs on its own (``lint-imports --contract ID``, with the current interpreter and
the ``safetynet`` these tests import), so a failure names the broken contract and prints
import-linter's report: importer, imported module and line. Function-level imports count. A
missing import-linter is a skip locally and a failure under CI=true (conftest.require_module).
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, require_module

PYPROJECT = REPO / "pyproject.toml"


def _contracts() -> list[dict]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11, as import-linter itself
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]


def _lint(config: Path, contract: str | None, package_parent: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on one contract of `config` (None: all), this interpreter, the package in `package_parent`."""
    require_module("importlinter", install='pip install -e ".[test]" (import-linter)')
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True, "
            f"limit_to_contracts={(contract,) if contract else ()!r}))")
    env = {**os.environ, "PYTHONPATH": str(package_parent), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False, timeout=300)


def _package_parent() -> Path:
    import safetynet

    return Path(safetynet.__file__).resolve().parents[1]  # the src/ folder of the checkout under test


@pytest.mark.parametrize("contract", [c["id"] for c in _contracts()] if sys.version_info >= (3, 11) else [])
def test_import_contract_is_kept(contract, tmp_path):
    r = _lint(PYPROJECT, contract, _package_parent(), tmp_path)
    details = _sibling_cycles() if contract == "acyclic" and r.returncode else ""
    assert r.returncode == 0, f"import contract {contract!r} broken:\n{r.stdout}\n{r.stderr}\n{details}"
    assert "BROKEN" not in r.stdout and "1 kept" in r.stdout, r.stdout


def _sibling_cycles() -> str:
    """Every import (module, line) on both sides of each sibling cycle: acyclic_siblings names only one edge."""
    import grimp

    graph = grimp.build_graph("safetynet")
    lines = []
    for parent in sorted(m for m in graph.modules if graph.find_children(m)):
        kids = sorted(graph.find_children(parent))
        for i, a in enumerate(kids):
            for b in kids[i + 1:]:
                if graph.chain_exists(a, b, as_packages=True) and graph.chain_exists(b, a, as_packages=True):
                    lines.append(f"cycle {a} <-> {b}:")
                    for x, y in ((a, b), (b, a)):
                        for chain in sorted(graph.find_shortest_chains(x, y, as_packages=True)):
                            first = graph.get_import_details(importer=chain[0], imported=chain[1])
                            where = ", ".join(f"l.{d['line_number']} {d['line_contents']}" for d in first)
                            lines.append(f"  {' -> '.join(chain)}   ({where})")
    return "\n".join(lines)


def test_every_top_level_module_is_in_a_layer():
    """A new module outside every layer would escape the layering contract unnoticed."""
    import safetynet

    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    named = {name.strip().strip("()").removeprefix("safetynet.") for layer in layers["layers"]
             for name in layer.replace("|", ":").split(":")}
    modules = {m.name for m in pkgutil.iter_modules(safetynet.__path__)}
    assert modules <= named, f"modules in no layer of [tool.importlinter]: {sorted(modules - named)}"
    assert "tasks" in named


def _toy_package(root: Path, *, violate: bool) -> Path:
    """A package ``toy`` with layers high > low, and (if ``violate``) a function-level import low -> high and
    a cycle between the siblings ``ring.a`` and ``ring.b``."""
    pkg = root / "toy"
    (pkg / "ring").mkdir(parents=True)
    for f in ("__init__.py", "ring/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "high.py").write_text("from toy import low\n")
    (pkg / "low.py").write_text("def f():\n    from toy import high  # a function-level import counts\n"
                                if violate else "X = 1\n")
    (pkg / "ring" / "a.py").write_text("from toy.ring import b\n")
    (pkg / "ring" / "b.py").write_text("from toy.ring import a\n" if violate else "Y = 2\n")
    config = root / "contracts.toml"
    config.write_text(textwrap.dedent("""\
        [tool.importlinter]
        root_package = "toy"

        [[tool.importlinter.contracts]]
        id = "layers"
        name = "toy layers"
        type = "layers"
        layers = ["toy.high", "(toy.tasks)", "toy.low"]

        [[tool.importlinter.contracts]]
        id = "acyclic"
        name = "toy acyclic"
        type = "acyclic_siblings"
        ancestors = ["toy"]
        """))
    return config


def test_the_linter_run_catches_a_broken_layer_and_a_cycle(tmp_path):
    """The harness above can fail: the same run on a toy package reports an upward import and a cycle."""
    bad, good = tmp_path / "bad", tmp_path / "good"
    r = _lint(_toy_package(bad, violate=True), None, bad, bad)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "toy.low -> toy.high (l.2)" in r.stdout and "No cycles are allowed in toy.ring" in r.stdout, r.stdout
    r = _lint(_toy_package(good, violate=False), None, good, good)
    assert r.returncode == 0 and "2 kept, 0 broken" in r.stdout, r.stdout + r.stderr
