"""``train.teacher``: a BiLSTM student learns a BERT teacher's per-word label distribution.

The teacher is a tiny BERT tagger trained for two steps on sample data; the soft labels the student
sees are checked against the teacher run directly on one sentence (softmax at each word's first
sub-token), and the KL term against a hand computation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nlpipe.distill import distillation_loss
from nlpipe.errors import NlpipeError
from nlpipe.recipe import load_recipe
from nlpipe.run import run_recipe

TINY = ["data.max_train_examples=48", "data.max_eval_examples=12", "train.batch_size=8", "eval.splits=[test]"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "bert"
    run_recipe("ner-bert", [*TINY, "model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
                            "model.intermediate_size=64", "tokenizer.vocab_size=300", "train.max_steps=2",
                            "train.warmup_steps=0"], data="sample", output_dir=out, progress=False)
    return out


def test_distillation_loss_by_hand() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])  # (1, 2, 2); the second token has no teacher row
    soft = torch.tensor([[[0.25, 0.75], [0.0, 0.0]]])
    p = torch.softmax(torch.tensor([1.0, 0.0]), -1)  # student at T = 2
    kl = 0.25 * math.log(0.25 / p[0]) + 0.75 * math.log(0.75 / p[1])
    out = distillation_loss(torch.tensor(1.0), logits, soft, alpha=0.5, temperature=2.0)
    assert float(out) == pytest.approx(0.5 * 1.0 + 0.5 * 4 * kl, rel=1e-5)


def test_student_learns_from_the_teacher_soft_labels(teacher: Path, tmp_path: Path) -> None:
    from nlpipe.data.catalog import load_data
    from nlpipe.run_folder import open_run
    from nlpipe.tasks import get_task

    recipe = load_recipe("ner-bilstm", [f"train.teacher={teacher}", "train.distill_temperature=1.0"])
    task = get_task(recipe)
    data = load_data("conll2003", source="sample", max_train_examples=8)
    task.setup(data, "conll2003")
    from nlpipe.tokenizer_training import load_spec, train_tokenizer

    tokenizer = train_tokenizer(load_spec("word-level"), task.tokenizer_texts(data["train"]))
    task.bind_tokenizer(tokenizer)
    encoded = task.encode(data["train"], tokenizer, "train")
    _, model, teacher_tok = open_run(teacher, "test")
    words = data["train"][0]["tokens"]
    enc = teacher_tok(words, is_split_into_words=True, return_tensors="pt")
    probs = torch.softmax(model(**enc).logits[0].detach(), -1)
    firsts = [enc.word_ids().index(w) for w in range(len(words))]
    teacher_ids = {v: int(k) for k, v in model.config.id2label.items()}
    soft = encoded[0]["soft_labels"]
    student_first = encoded[0]["first_piece"]
    for word, position in enumerate(firsts):
        expected = [float(probs[position, teacher_ids[label]]) for label in task.labels]
        assert soft[student_first[word]] == pytest.approx(expected, abs=1e-5)
    # End to end: a tiny student run with the teacher finishes and is scored.
    result = run_recipe("ner-bilstm", [*TINY, f"train.teacher={teacher}", "train.max_steps=3", "model.hidden_size=16",
                                       "model.embedding_dim=16"], data="sample", output_dir=tmp_path / "student",
                        progress=False)
    assert "f1" in json.loads((result.run_dir / "metrics.json").read_text())["test"]


def test_teacher_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(NlpipeError, match="key 'train.teacher': only token-classification"):
        load_recipe("generation-gru", [f"train.teacher={tmp_path}"])
    with pytest.raises(NlpipeError, match="key 'train.teacher'"):
        run_recipe("ner-bilstm", [*TINY, f"train.teacher={tmp_path / 'none'}", "train.max_steps=1"], data="sample",
                   output_dir=tmp_path / "s", progress=False)
