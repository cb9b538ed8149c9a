"""The layout docs/architecture.md describes holds: every package says what it owns, and packages
import only the layers below them (read from the source with ast, lazy imports inside functions
included), with no cycle between sibling packages."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOPS = ("edgellm", "quantize")
FOUNDATION = {"edgellm", "edgellm.errors", "edgellm.paths", "edgellm.durable", "edgellm.units", "edgellm.textfile"}
ENTRY = {"edgellm.cli", "edgellm.__main__"}

BOTTOM = {"foundation"}
STORE = BOTTOM | {"edgellm.models"}
RUNTIME = STORE | {"edgellm.runtime"}
QUANTIZE = {"quantize", "quantize.families", "quantize.sources", "quantize.vocab", "quantize.imatrix"}
# What each package may import besides itself (its subpackages count as itself).
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "edgellm.models": BOTTOM,
    "edgellm.runtime": STORE,
    "edgellm.measure": RUNTIME,
    "edgellm.server": RUNTIME,
    "edgellm.tui": RUNTIME,
    "edgellm.commands": RUNTIME | {"edgellm.measure", "edgellm.server", "edgellm.tui"} | QUANTIZE,
    "cli": BOTTOM | {"edgellm.commands"},
    **{q: RUNTIME | QUANTIZE for q in QUANTIZE},
}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of edgellm and quantize."""
    found = {}
    for top in TOPS:
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()
PACKAGES = sorted(name for name, path in MODULES.items() if path.name == "__init__.py")


def unit(module: str) -> str:
    """The package a module belongs to, as ALLOWED names it."""
    if module in FOUNDATION:
        return "foundation"
    if module in ENTRY:
        return "cli"
    top, _, rest = module.partition(".")
    sub = rest.partition(".")[0]
    return f"{top}.{sub}" if f"{top}.{sub}" in PACKAGES else top


def imported(path: Path, module: str) -> Iterator[str]:
    """The edgellm/quantize modules ``module`` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name in ``base``
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                yield name


def edges() -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) -> the 'module -> module' lines behind it."""
    found: dict[tuple[str, str], list[str]] = {}
    for module, path in MODULES.items():
        src = unit(module)
        for target in imported(path, module):
            dst = unit(target)
            if dst != src:
                found.setdefault((src, dst), []).append(f"{module} -> {target}")
    return found


EDGES = edges()


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_what_it_owns(package: str) -> None:
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text()))
    assert doc and len(doc) > 20, f"{MODULES[package]}: no docstring saying what the package owns"


def test_every_package_has_its_place_in_the_layers() -> None:
    units = {unit(m) for m in MODULES}
    assert units <= set(ALLOWED), f"new packages: {sorted(units - set(ALLOWED))}: add them to ALLOWED and " \
        "docs/architecture.md"  # fmt: skip


def test_packages_import_only_the_layers_below() -> None:
    bad = {pair: lines for pair, lines in EDGES.items()
           if pair[1] not in ALLOWED[pair[0]] and not _nested(*pair)}  # fmt: skip
    assert not bad, "\n".join(f"{a} may not import {b}: {lines}" for (a, b), lines in bad.items())


def test_no_cycle_between_sibling_packages() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in EDGES:
        if not _nested(a, b):
            graph.setdefault(a, set()).add(b)
    cycles = [c for c in (_cycle_from(start, graph) for start in graph) if c]
    assert not cycles, f"import cycles: {cycles} ({[EDGES[(c[0], c[1])] for c in cycles]})"


def test_the_product_never_imports_benches_or_tests() -> None:
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            found += [f"{module} -> {n}" for n in names if n.partition(".")[0] in ("bench", "tests")]
    assert not found, found


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    path = ROOT / "edgellm" / "measure" / "plot.py"
    assert "edgellm.durable" in set(imported(path, "edgellm.measure.plot"))
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from ..models import store\n    import quantize.vocab.bpe\n")
    assert set(imported(fake, "edgellm.runtime.m")) == {"edgellm.models.store", "quantize.vocab.bpe"}


def _nested(a: str, b: str) -> bool:
    """A package and its own subpackage (quantize and quantize.vocab): one tree, not siblings."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack = [(start, [start])]
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in path:
                stack.append((nxt, [*path, nxt]))
    return None
