"""The package's import graph has no cycle, counting function-local imports too (issue 21): a local
import may defer a heavy import, never dodge a cycle."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import roadmap

PKG = Path(roadmap.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Set[str]:
    """The roadmap modules `path` imports anywhere in its body (absolute or relative)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "roadmap"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "roadmap":
                continue
            for a in node.names:  # `from . import faults` names a module; `from .x import f` names x
                found.add(f"{base}.{a.name}" if (PKG.parent / f"{base}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                          or (PKG.parent / f"{base}.{a.name}".replace(".", "/")).is_dir() else base)
    found.discard(name)
    return found


def graph() -> Dict[str, Set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in mods} for m, p in mods.items()}


def find_cycle(g: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> List[str]:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(g):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return []


def test_no_import_cycle():
    g = graph()
    cycle = find_cycle(g)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_every_function_fits_in_one_head():
    """A function over ~60 lines wants to be split along its seams (the project's code rules); none in
    the package is (nested functions count in their parent's lines)."""
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 60 lines: " + "; ".join(long)
