"""Shared test fixtures: an isolated nlpipe cache, the real data folder, repo paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# Real data: $NLPIPE_DATA_DIR (what users set for nlpipe itself), else this project's ../shared/data layout.
REAL_DATA_SKIP = "real data not found"

# Keep everything offline and out of the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests use tiny models: one thread is as fast, deterministic, and stops parallel jobs on a 2-core
# machine from oversubscribing it (2-thread torch slows down 10-50x beside another job).
# Subprocesses started by tests inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["NLPIPE_CACHE"] = str(tmp_path_factory.mktemp("nlpipe-cache"))


def real_data_dir() -> Path | None:
    """The folder holding the real data sets (laid out as docs/ARCHITECTURE.md says), or None."""
    candidates = [Path(os.environ["NLPIPE_DATA_DIR"])] if os.environ.get("NLPIPE_DATA_DIR") else []
    for folder in [*candidates, SHARED_DATA]:
        if (folder / "conll2003").is_dir():
            return folder
    return None


@pytest.fixture
def shared_data() -> Path:
    """The real data folder; the test is skipped (and counted in the summary line) when there is none."""
    folder = real_data_dir()
    if folder is None:
        pytest.skip(f"{REAL_DATA_SKIP}: set NLPIPE_DATA_DIR to a folder with conll2003/, multi30k/, ... "
                    f"(looked there and at {SHARED_DATA})")
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line saying how many real-data tests were skipped and why, so a missing data folder is not silent."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if REAL_DATA_SKIP in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"nlpipe: {len(skipped)} real-data tests skipped: no data folder (set NLPIPE_DATA_DIR to one laid out "
            "as README.md 'Real data' describes: conll2003/, multi30k/, ptb/, wikitext2/, samsum/)"
        )

