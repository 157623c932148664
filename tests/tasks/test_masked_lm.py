"""masked-lm: unlabelled training text only, whole-word masking, and pretrain-bert → ner-bert-pretrained.

The end-to-end test pretrains a tiny BERT on sample data through the CLI, fine-tunes it with
``ner-bert-pretrained`` (``train.max_epochs=0``: the saved tagger is the initialised one) and checks
that the tagger's body is the pretrained encoder bit for bit, read back with ``safetensors``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

from nlpipe.errors import NlpipeError
from nlpipe.recipe import load_recipe
from nlpipe.tasks import get_task
from nlpipe.tasks.masked_lm import texts_of
from nlpipe.tokenizer_training import load_spec, train_tokenizer

TINY = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
        "model.intermediate_size=64"]


def _ner_split(sentences: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"tokens": [s.split() for s in sentences],
                                       "tags": [["O"] * len(s.split()) for s in sentences]})


def test_corpus_is_training_text_only_with_a_held_out_slice() -> None:
    recipe = load_recipe("pretrain-bert", ["data.extra_datasets=[]"])
    task = get_task(recipe)
    train = [f"train sentence number {i} here" for i in range(200)]
    data = datasets.DatasetDict({"train": _ner_split(train), "validation": _ner_split(["SECRET dev text"]),
                                 "test": _ner_split(["SECRET test text"])})
    corpus = task.corpus(data)
    seen = [*corpus["train"]["text"], *corpus["validation"]["text"], *corpus["test"]["text"]]
    assert not any("SECRET" in text for text in seen)  # never the downstream validation/test text
    assert set(corpus["validation"]["text"]) <= set(train)
    assert not set(corpus["validation"]["text"]) & set(corpus["train"]["text"])  # held out, not trained on
    assert len(corpus["validation"]) == 4 and len(corpus["train"]) == 196
    assert texts_of(datasets.Dataset.from_dict({"source": ["a b"], "target": ["c"]})) == ["a b", "c"]


def test_text_files_are_read_and_missing_ones_named(tmp_path: Path) -> None:
    (tmp_path / "more.txt").write_text("first extra line\n\nsecond extra line\n")
    data = datasets.DatasetDict({split: _ner_split([f"{split} words"] * 3) for split in ("train", "validation", "test")})
    task = get_task(load_recipe("pretrain-bert", ["data.extra_datasets=[]", "data.text_files=[more.txt]"]))
    texts = set(task.corpus(data, data_dir=tmp_path)["train"]["text"]) | set(task.corpus(data, data_dir=tmp_path)["validation"]["text"])
    assert {"first extra line", "second extra line"} <= texts
    with pytest.raises(NlpipeError, match="key 'data.text_files': missing.txt not found"):
        get_task(load_recipe("pretrain-bert", ["data.text_files=[missing.txt]", "data.extra_datasets=[]"])).corpus(
            data, data_dir=tmp_path)
    with pytest.raises(NlpipeError, match="key .data.text_files.: only tasks masked-lm and causal-lm read unlabelled text"):
        load_recipe("ner-bert", ["data.text_files=[more.txt]"])


def test_whole_word_masking_masks_every_piece_of_a_chosen_word() -> None:
    recipe = load_recipe("pretrain-bert", ["tokenizer.vocab_size=120", "tokenizer.min_frequency=1"])
    task = get_task(recipe)
    rng = random.Random(0)  # many distinct long words: a 120-piece vocabulary must split them
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(6, 12))) for _ in range(300)]
    texts = [" ".join(rng.sample(words, 8)) for _ in range(200)]
    tokenizer = train_tokenizer(load_spec("wordpiece", {"vocab_size": 120, "min_frequency": 1}), texts)
    task.bind_tokenizer(tokenizer)
    encoded = task.encode(datasets.Dataset.from_dict({"text": texts}), tokenizer, "train")
    torch.manual_seed(0)
    batch = task.collate([encoded[i] for i in range(len(encoded))])
    masked = batch["labels"] != -100
    assert 0.05 < masked.float().mean() < 0.5
    split_words = 0
    for row in range(len(encoded)):
        enc = tokenizer(texts[row])
        ids = torch.tensor(enc["input_ids"])
        assert torch.equal(batch["labels"][row][masked[row]], ids[masked[row][: len(ids)]])  # labels = originals
        assert (batch["input_ids"][row][masked[row]] == tokenizer.mask_token_id).all()
        for word in set(w for w in enc.word_ids() if w is not None):
            pieces = [p for p, w in enumerate(enc.word_ids()) if w == word]
            split_words += len(pieces) > 1
            assert len({bool(masked[row, p]) for p in pieces}) == 1, (row, word)  # all pieces or none
        specials = [p for p, w in enumerate(enc.word_ids()) if w is None]
        assert not masked[row, specials].any()
    assert split_words > 100  # the test really had words of several pieces


def test_training_loss_on_masked_positions_equals_the_models_own_loss() -> None:
    """The head run on masked positions only gives BertForMaskedLM's loss and gradients (full recomputation),
    and the model is left as it was (same modules, same state_dict keys)."""
    from transformers import BertConfig, BertForMaskedLM

    task = get_task(load_recipe("pretrain-bert", []))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0))
    input_ids = torch.randint(5, 300, (4, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2:, 9:] = 0
    labels = torch.full_like(input_ids, -100)
    labels[torch.rand(4, 12) < 0.2] = 7
    labels[0, 3] = 11
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    keys = list(model.state_dict())
    expected = model(**batch).loss
    expected.backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    got = task.loss(model, batch)
    got.backward()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    for name, param in model.named_parameters():
        if name in expected_grads:
            assert torch.allclose(param.grad, expected_grads[name], rtol=1e-4, atol=1e-6), name
    assert list(model.state_dict()) == keys and type(model.cls).__name__ == "BertOnlyMLMHead"


def test_pretrain_then_fine_tune_from_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "NLPIPE_CACHE": str(tmp_path / "cache")}
    common = ["--data", "sample", "--no-progress", "data.max_train_examples=64", "data.max_eval_examples=16"]
    pretrain = subprocess.run(
        [sys.executable, "-m", "nlpipe", "run", "recipe", "pretrain-bert", *common, *TINY, "train.budget.tokens=2500",
         "train.warmup_steps=2", "--output-dir", "runs/pretrain-bert"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs/pretrain-bert/metrics.json").read_text())
    assert metrics["validation"]["perplexity"] > 1 and 0 <= metrics["validation"]["masked_accuracy"] <= 100
    assert metrics["train"]["stopped_because"] == "budget"
    # ner-bert-pretrained's own init_from (runs/pretrain-bert), resolved from the working folder.
    fine = subprocess.run(
        [sys.executable, "-m", "nlpipe", "run", "recipe", "ner-bert-pretrained", *common, "train.max_epochs=0",
         "eval.splits=[validation]", "--output-dir", "runs/ner"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert fine.returncode == 0, fine.stderr[-3000:]
    pretrained = load_file(str(tmp_path / "runs/pretrain-bert/model.safetensors"))
    tagger = load_file(str(tmp_path / "runs/ner/model.safetensors"))
    body = [k for k in tagger if k.startswith("bert.")]
    assert len(body) > 10
    for key in body:
        assert torch.equal(tagger[key], pretrained[key]), key
    assert "classifier.weight" in tagger and not any(k.startswith("cls.") for k in tagger)
    predict = subprocess.run(
        [sys.executable, "-m", "nlpipe", "predict", "runs/pretrain-bert", "the [MASK] said", "--format", "json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert predict.returncode == 0, predict.stderr[-3000:]
    filled = json.loads(predict.stdout.strip().splitlines()[-1])
    assert len(filled["predictions"]) == 5 and "[MASK]" not in filled["output"]
