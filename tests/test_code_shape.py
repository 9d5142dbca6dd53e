"""The size rules of agent/: no class over 300 lines, no function over 60 (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parent.parent / "agent"
MAX_CLASS, MAX_FUNCTION = 300, 60


def oversized(root: Path = AGENT) -> list[str]:
    """`path:line name (N lines)` for each class or function over its limit."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                limit = MAX_FUNCTION
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                found.append(f"{rel}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_class_over_300_lines_nor_function_over_60() -> None:
    assert oversized() == []


def test_the_check_finds_an_oversized_function(tmp_path: Path) -> None:
    pkg = tmp_path / "agent"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION))
    (pkg / "big.py").write_text(f"def small():\n    pass\n\n\ndef big():\n{body}\n")
    assert oversized(pkg) == [f"agent/big.py:5 big ({MAX_FUNCTION + 1} lines)"]
