"""Translation / summarization task hooks: encoding, generate settings, metrics vs independent references,
learning on the sample data, and the lead baseline."""

from __future__ import annotations

import re

import datasets
import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from nlpipe.data.samples import make_sample
from nlpipe.errors import NlpipeError
from nlpipe.recipe import parse_recipe
from nlpipe.tasks.seq2seq import (
    SummarizationTask,
    TranslationTask,
    bleu_by_source_length,
    lead_summary,
    validate_generate_settings,
)
from nlpipe.tokenizer_training import load_spec, train_tokenizer


def tiny_recipe(task: str = "translation", generate: dict | None = None, **model: object) -> object:
    raw = {
        "name": "tiny", "task": task, "data": {"dataset": "multi30k", "max_length": 32, "max_target_length": 32},
        "tokenizer": {"spec": "bpe", "vocab_size": 90},
        "model": {"type": "rnn_seq2seq", "embedding_dim": 24, "hidden_size": 32, "dropout": 0.0, **model},
        "generate": generate if generate is not None else {"num_beams": 3, "max_new_tokens": 20},
    }
    return parse_recipe(raw, "tiny.yaml")


@pytest.fixture(scope="module")
def sample() -> dict[str, datasets.Dataset]:
    data = make_sample("translation")
    return {
        "train": datasets.Dataset.from_list(data["train"][:1500]),
        "validation": datasets.Dataset.from_list(data["validation"][:60]),
    }


@pytest.fixture(scope="module")
def tokenizer(sample):
    spec = load_spec("bpe", {"vocab_size": 90})
    return train_tokenizer(spec, TranslationTask(tiny_recipe()).tokenizer_texts(sample["train"]))


def bound_task(tokenizer, **kwargs) -> TranslationTask:
    task = TranslationTask(tiny_recipe(**kwargs))
    task.bind_tokenizer(tokenizer)
    return task


# -- generate settings ---------------------------------------------------------------------------


def test_unknown_generate_key_is_named() -> None:
    with pytest.raises(NlpipeError, match=r"tiny.yaml: unknown key 'generate.beams'.*num_beams"):
        TranslationTask(tiny_recipe(generate={"beams": 4}))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_beams": "5"}, "generate.num_beams': expected int"),
        ({"num_beams": 0}, "generate.num_beams': must be > 0"),
        ({"early_stopping": 1}, "generate.early_stopping': expected bool"),
        ({"top_p": 1.5}, "generate.top_p': must be in"),
        ({"max_new_tokens": True}, "generate.max_new_tokens': expected int"),
    ],
)
def test_bad_generate_values(settings: dict, message: str) -> None:
    with pytest.raises(NlpipeError, match=message):
        validate_generate_settings(settings, "r.yaml")


def test_validation_is_greedy_unless_asked_and_test_uses_the_recipe(tokenizer) -> None:
    task = bound_task(tokenizer, generate={"num_beams": 4, "length_penalty": 0.6, "max_new_tokens": 9})
    assert task.generate_settings("test") == {"num_beams": 4, "length_penalty": 0.6, "max_new_tokens": 9}
    assert task.generate_settings("validation") == {"num_beams": 1, "max_new_tokens": 9}
    task = bound_task(tokenizer, generate={"num_beams": 4, "validation_num_beams": 2})
    assert task.generate_settings("validation")["num_beams"] == 2


# -- encoding ------------------------------------------------------------------------------------


def test_encode_and_collate(tokenizer, sample) -> None:
    task = bound_task(tokenizer)
    encoded = task.encode(sample["validation"].select(range(4)), tokenizer, "validation")
    row = sample["validation"][0]
    assert encoded[0]["input_ids"] == tokenizer(row["source"])["input_ids"]
    assert encoded[0]["labels"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(encoded[0]["labels"], skip_special_tokens=True) == row["target"]
    assert encoded["length"] == [len(ids) for ids in encoded["input_ids"]]
    batch = task.collate([encoded[i] for i in range(4)])
    longest = max(len(ids) for ids in encoded["labels"])
    assert batch["labels"].shape == (4, longest)
    for i in range(4):
        n = len(encoded[i]["labels"])
        assert batch["labels"][i, :n].tolist() == encoded[i]["labels"]
        assert (batch["labels"][i, n:] == -100).all()
        assert batch["attention_mask"][i].sum() == len(encoded[i]["input_ids"])
    values = task.model_values(tokenizer)
    assert values["vocab_size"] == len(tokenizer) and values["eos_token_id"] == tokenizer.eos_token_id


def test_marian_gets_pad_as_decoder_start(tokenizer) -> None:
    task = TranslationTask(parse_recipe({**tiny_recipe().to_dict(), "model": {"type": "marian"}}, "m.yaml"))
    values = task.model_values(tokenizer)
    assert values["decoder_start_token_id"] == tokenizer.pad_token_id
    assert values["max_position_embeddings"] >= 32


# -- training loss ----------------------------------------------------------------------------------


def smoothed_cross_entropy_by_hand(log_probs: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """(1 - e) * NLL of the gold token + e * mean over the vocabulary of -log p, averaged over real tokens."""
    total, count = 0.0, 0
    for b in range(labels.size(0)):
        for t in range(labels.size(1)):
            gold = int(labels[b, t])
            if gold == -100:
                continue
            row = log_probs[b, t]
            total += (1 - smoothing) * -row[gold] + smoothing * -row.mean()
            count += 1
    return total / count


@pytest.mark.parametrize("model", [{}, {"copy_mechanism": True}, {"type": "marian"}], ids=["rnn", "copy", "marian"])
def test_label_smoothing_loss_matches_the_formula_and_zero_is_the_models_loss(tokenizer, sample, model) -> None:
    settings = {"type": "rnn_seq2seq", "embedding_dim": 24, "hidden_size": 32, "dropout": 0.0, **model}
    if model.get("type") == "marian":
        settings = {"type": "marian", "d_model": 16, "encoder_layers": 1, "decoder_layers": 1,
                    "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 32,
                    "decoder_ffn_dim": 32, "dropout": 0.0, "attention_dropout": 0.0}
    tasks = {}
    for smoothing in (0.0, 0.3):
        raw = {**tiny_recipe().to_dict(), "model": settings, "train": {"label_smoothing": smoothing}}
        tasks[smoothing] = TranslationTask(parse_recipe(raw, "tiny.yaml"))
        tasks[smoothing].bind_tokenizer(tokenizer)
    torch.manual_seed(0)
    net = tasks[0.0].build_model(tokenizer).eval().requires_grad_(False)
    net.get_output_embeddings().weight.mul_(30)  # peaked outputs, far from uniform: smoothing then shows
    encoded = tasks[0.0].encode(sample["validation"].select(range(6)), tokenizer, "validation")
    batch = tasks[0.0].collate([encoded[i] for i in range(6)])
    assert (batch["labels"] == -100).any()  # rows of different lengths: padding is ignored
    assert torch.equal(tasks[0.0].loss(net, batch), net(**batch).loss)
    log_probs = torch.log_softmax(net(**batch).logits.float(), -1)
    expected = smoothed_cross_entropy_by_hand(log_probs, batch["labels"], 0.3)
    smoothed = tasks[0.3].loss(net, batch)
    assert smoothed.item() == pytest.approx(float(expected), rel=1e-5)
    assert abs(smoothed.item() - net(**batch).loss.item()) > 0.01  # the smoothing term is really there


@pytest.mark.parametrize("task, smoothing, message", [
    ("translation", 1.0, "key 'train.label_smoothing': 1.0 is out of range; use a value in [0, 1)"),
    ("translation", -0.1, "key 'train.label_smoothing': -0.1 is out of range"),
    ("token-classification", 0.1, "only translation and summarization"),
])
def test_bad_label_smoothing_is_named(task, smoothing, message) -> None:
    raw = {**tiny_recipe().to_dict(), "task": task, "train": {"label_smoothing": smoothing}}
    with pytest.raises(NlpipeError, match=re.escape(message)):
        parse_recipe(raw, "tiny.yaml")


# -- metrics against independent references -------------------------------------------------------


def test_bleu_by_length_matches_sacrebleu_on_each_bucket() -> None:
    sources = ["a b c", " ".join("x" * 1 for _ in range(15)), " ".join(["w"] * 25), "d e"]
    predictions = ["the cat sat on the mat", "a dog runs in the park today", "it is raining hard", "hello there"]
    references = ["the cat sat on a mat", "a dog runs in a park today", "it is raining very hard", "hello there"]
    scores = bleu_by_source_length(sources, predictions, references)
    short = sacrebleu.corpus_bleu([predictions[0], predictions[3]], [[references[0], references[3]]]).score
    assert scores["sacrebleu_len_01_10"] == pytest.approx(short)
    assert scores["sacrebleu_len_11_20"] == pytest.approx(sacrebleu.corpus_bleu([predictions[1]], [[references[1]]]).score)
    assert scores["n_len_21_plus"] == 1.0


def train_steps(task, model, encoded, steps: int, lr: float = 0.01) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    rows = list(range(len(encoded)))
    for step in range(steps):
        batch = task.collate([encoded[i] for i in rows[(step * 32) % len(rows):][:32]])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def test_training_improves_bleu_and_evaluate_equals_corpus_bleu(tokenizer, sample) -> None:
    task = bound_task(tokenizer, generate={"num_beams": 2, "max_new_tokens": 24})
    torch.manual_seed(0)
    model = task.build_model(tokenizer)
    train_encoded = task.encode(sample["train"], tokenizer, "train")
    val_encoded = task.encode(sample["validation"], tokenizer, "validation")
    with torch.no_grad():
        before = task.evaluate(model, val_encoded, sample["validation"], None, 16)
    train_steps(task, model, train_encoded, steps=150)
    with torch.no_grad():
        after = task.evaluate(model, val_encoded, sample["validation"], None, 16)
        outputs = task.generate_texts(model, val_encoded, None, 16, task.generate_settings("validation"))
    # a 32-unit model over ~90 subwords learns slowly: a few minutes of CPU would be needed for double-digit
    # BLEU, so the test asks for a clear gain in BLEU and in chrF (less noisy on near-zero n-gram overlap)
    gains = (before["sacrebleu"], after["sacrebleu"], before["chrf"], after["chrf"])
    assert after["sacrebleu"] > before["sacrebleu"] + 0.5 and after["chrf"] > before["chrf"] + 5, gains
    reference = sacrebleu.corpus_bleu(outputs, [list(sample["validation"]["target"])])
    assert after["sacrebleu"] == pytest.approx(reference.score)
    assert after["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, [list(sample["validation"]["target"])]).score)
    assert after["sacrebleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert after["num_beams"] == 1.0  # validation decodes greedily by default
    # the recipe's generate settings land in the saved generation config (predict and pipelines use them)
    assert model.generation_config.num_beams == 2 and model.generation_config.max_new_tokens == 24
    predicted = task.predict_texts(model, tokenizer, list(sample["validation"]["source"][:5]))
    direct = model.generate(**tokenizer(sample["validation"]["source"][0], return_tensors="pt"))
    assert predicted[0]["output"] == tokenizer.decode(direct[0], skip_special_tokens=True).strip()


# -- summarization ---------------------------------------------------------------------------------


def test_lead_baseline_and_rouge_against_rouge_score() -> None:
    dialogue = "Amanda: I baked cookies. Do you want some?\r\nJerry: Sure!\r\nAmanda: I'll bring you tomorrow :-)\r\nJerry: ok"
    assert lead_summary(dialogue, turns=2) == "Amanda: I baked cookies. Do you want some?\nJerry: Sure!"
    assert lead_summary("only one line", turns=3) == "only one line"
    data = make_sample("summarization")["test"][:40]
    predictions = [lead_summary(r["source"]) for r in data]
    references = [r["target"] for r in data]
    task = SummarizationTask(tiny_recipe("summarization"))
    scores = task.score(predictions, references, [r["source"] for r in data])
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * sum(scorer.score(r, p)[key].fmeasure for p, r in zip(predictions, references, strict=True)) / 40
        assert scores[key] == pytest.approx(expected, abs=1e-6)
    assert 0 < scores["rougeLsum"] < 100
