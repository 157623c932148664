"""Shared test fixtures: an isolated nlpipe cache, the real data folder, repo paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real data beside the checkout; NLPIPE_SHARED_DATA points elsewhere (a git worktree, CI cache).
SHARED_DATA = Path(os.environ.get("NLPIPE_SHARED_DATA") or REPO.parent / "shared" / "data")

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


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "conll2003").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
