"""The result of an experiment: rows, their Markdown table, and where the table and figure went."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ExperimentResult:
    """One experiment's outcome."""

    name: str
    rows: list[dict[str, Any]]
    table: str
    table_path: Path
    figure_path: Path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 0.01 and value != 0 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows` (columns from the first row, in order)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def hardware() -> str:
    """Where the numbers were measured."""
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"


def finish(name: str, rows: list[dict[str, Any]], out: Path, figure: Path, settings: str) -> ExperimentResult:
    """Write ``table.md`` (settings + hardware + table) next to the figure and return the result."""
    table = markdown_table(rows)
    path = out / "table.md"
    path.write_text(f"# {name}\n\n{settings}; measured on {hardware()}.\n\n{table}\n\n![{name}]({figure.name})\n",
                    encoding="utf-8")
    return ExperimentResult(name=name, rows=rows, table=table, table_path=path, figure_path=figure)


def pyplot() -> Any:
    """matplotlib.pyplot with the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write and close a matplotlib figure; return its path."""
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path
