"""Medians of several `python -m bench.tunnel --json FILE` runs, as one table.

    python -m bench.medians run1.json run2.json run3.json [--markdown FILE]

Each cell is the median of that cell over the runs (ratios are medians of the per-run
ratios); a cell missing in some run is the median of the runs that have it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.tunnel import HEADER, rows


def _number(cell: Any) -> float | None:
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, (int, float)):
        return float(cell)
    try:
        return float(str(cell).lstrip(">="))
    except ValueError:
        return None


def median_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    tables = [rows(r) for r in results]
    out = []
    for i, first in enumerate(tables[0]):
        line: list[Any] = [first[0]]
        for col in range(1, len(first)):
            values = [n for t in tables if (n := _number(t[i][col])) is not None]
            line.append(round(statistics.median(values), 3) if values else None)
        out.append(line)
    return out


def markdown(table: list[list[Any]], runs: int) -> str:
    head = [f"median of {runs}", *HEADER[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    results = [json.loads(f.read_text()) for f in args.files]
    text = markdown(median_rows(results), len(results))
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
