"""Guard against silent quality regressions: a short training on a real CoNLL-2003 slice must learn.

3,000 training sentences, 2 short epochs, 1,000 dev sentences. Chance level (all "O") is F1 0; a
working BiLSTM reaches ~60–70 here. Taking ~20 s on 2 cores, it is the test that would notice a
broken loss, label alignment, packing or metric.
"""

from __future__ import annotations

from pathlib import Path

from nlpipe.run import run_recipe


def test_bilstm_learns_real_conll_slice(shared_data: Path, tmp_path: Path) -> None:
    result = run_recipe(
        "ner-bilstm",
        ["data.max_train_examples=3000", "data.max_eval_examples=1000", "train.max_epochs=2",
         "train.learning_rate=0.004", "eval.splits=[validation]"],
        data_dir=shared_data, output_dir=tmp_path / "run", progress=False,
    )
    f1 = result.metrics["validation"]["f1"]
    assert f1 > 40, f"dev F1 {f1:.1f} on a 3k-sentence slice: something is broken"
    assert result.metrics["validation"]["accuracy"] > 85
