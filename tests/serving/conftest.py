"""Fixtures for `nlpipe serve` tests: tiny trained runs and a shared NER server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="nlpipe serve needs the `serve` extra (pip install -e '.[test]')")
pytest.importorskip("uvicorn", reason="nlpipe serve needs the `serve` extra (pip install -e '.[test]')")

from server_process import ServerProcess  # noqa: E402
from tiny_models import TINY_CRF_TAGGER  # noqa: E402

from nlpipe.run import run_recipe  # noqa: E402

TINY_TRANSLATION = [
    "tokenizer.vocab_size=90", "model.embedding_dim=16", "model.hidden_size=32", "train.max_steps=30",
    "data.max_train_examples=200", "data.max_eval_examples=8", "generate.num_beams=1", "generate.max_new_tokens=12",
]



@pytest.fixture(scope="session")
def ner_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("serve-ner") / "run"
    run_recipe("ner-bilstm-crf", TINY_CRF_TAGGER, data="sample", output_dir=run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def translation_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("serve-translation") / "run"
    run_recipe("translation-gru-attn", TINY_TRANSLATION, data="sample", output_dir=run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def ner_server(ner_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One NER server for the whole session; waits 20 ms to group concurrent requests."""
    log = tmp_path_factory.mktemp("serve-logs") / "ner.log"
    with ServerProcess(ner_run, log, "--max-wait-ms", "20", "--max-texts", "8", "--max-chars", "500") as server:
        yield server
