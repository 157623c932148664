"""One place that appends benchmark figures to benchmarks/results.jsonl.

Every line gets the machine, the nlpipe commit, the UTC date and the command that made it, so each figure in
BENCHMARKS.md can be traced and re-run.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.jsonl"


def script_command() -> str:
    """The command line that ran this benchmark, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return " ".join(["python", str(script), *sys.argv[1:]])


def append_results(lines: list[dict[str, Any]], *, command: str | None = None) -> None:
    """Append `lines` (each at least ``metric`` and ``value``), stamped with device, commit, date and command."""
    from nlpipe.run import git_commit, machine_description

    stamp = {"device": machine_description(), "commit": git_commit(),
             "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), "command": command or script_command()}
    with open(RESULTS, "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps({**stamp, **line}) + "\n")
