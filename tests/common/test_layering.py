"""The floors: convbert_common below both frameworks, convbert_tools above them, no cycles, no private APIs.

Static checks parse every module of ``src`` (no import needed); the import checks run in a fresh
interpreter, so that what this test process already imported does not hide a framework import.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
PACKAGES = ("convbert_common", "convbert_pt", "convbert_tf", "convbert_tools")
FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "triton")
# Each floor may import from these of ours (a lazy import inside a function counts too).
ALLOWED = {
    "convbert_common": {"convbert_common"},
    "convbert_pt": {"convbert_common", "convbert_pt"},
    "convbert_tf": {"convbert_common", "convbert_tf"},
    "convbert_tools": set(PACKAGES),
}
PRIVATE = ("tensorflow.python", "keras.src", "torch._", "jax._src")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            parts = path.relative_to(SRC).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import statement of the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in top))
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def test_each_floor_imports_only_from_its_own_floor_and_below():
    wrong = []
    for name, path in _modules().items():
        floor = name.split(".")[0]
        for module, _ in _imports(path):
            root = module.split(".")[0]
            if root in PACKAGES and root not in ALLOWED[floor]:
                wrong.append(f"{name} imports {module}")
    assert not wrong


def test_convbert_common_imports_no_framework_at_module_level():
    wrong = [f"{name} imports {module}" for name, path in _modules().items() if name.startswith("convbert_common")
             for module, top in _imports(path) if top and module.split(".")[0] in FRAMEWORKS]
    assert not wrong


def test_no_private_framework_module_is_imported():
    wrong = [f"{name} imports {module}" for name, path in _modules().items()
             for module, _ in _imports(path) if module.startswith(PRIVATE)]
    assert not wrong


def test_no_import_cycle_between_our_modules():
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for module, top in _imports(path):
            if not top:
                continue  # a lazy import runs after both modules exist
            target = module if module in modules else module.rsplit(".", 1)[0]
            if target in modules and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    cycles = []

    def visit(node, stack, done):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        done.add(node)
        for nxt in sorted(graph[node]):
            visit(nxt, stack + [node], done)

    done: set[str] = set()
    for node in sorted(graph):
        visit(node, [], done)
    assert not cycles


def test_cycle_checker_finds_a_planted_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "convbert_common"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from convbert_common import b\n")
    (pkg / "b.py").write_text("import convbert_common.a\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("convbert_common",))
    with pytest.raises(AssertionError):
        test_no_import_cycle_between_our_modules()


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_importing_every_convbert_common_module_and_the_cli_loads_no_framework():
    names = [n for n in _modules() if n.startswith("convbert_common")] + ["convbert_tools.cli",
                                                                           "convbert_tools.convert"]
    code = (f"import importlib, sys\nfor n in {names!r}:\n    importlib.import_module(n)\n"
            f"print(','.join(m for m in {FRAMEWORKS + ('convbert_pt', 'convbert_tf')!r} if m in sys.modules))")
    assert _fresh(code) == ""
