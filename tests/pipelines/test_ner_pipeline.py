"""`pipeline("ner")` on saved runs, in a fresh process: CRF + char tagger == `nlpipe predict`; BERT works too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import TINY_CRF_TAGGER

from nlpipe.prediction import predict
from nlpipe.recipe import load_recipe
from nlpipe.run import run_recipe

TEXTS = [
    "Peter Blackburn of the U.S. met EU officials in Zürich on Monday .",
    "Germany 's representative to the European Union 's veterinary committee Werner Zwingmann said .",
    "Zoë Ngũgĩ ( Nairobi ) beat Steffi Graf 6-3 in the Wimbledon final.",
]
WORDS = ["Peter", "Blackburn", "met", "U.S.", "officials", "in", "Zürich"]

PIPELINE = """
import json, sys
import nlpipe
from transformers import pipeline
ner = pipeline("ner", model=sys.argv[1], aggregation_strategy="simple")
texts = json.loads(sys.argv[2])
words = json.loads(sys.argv[3])
out = {"class": type(ner).__name__, "texts": [ner(t) for t in texts],
       "words": ner(words, is_split_into_words=True),
       "batched": pipeline("ner", model=sys.argv[1], aggregation_strategy="simple", batch_size=3)(texts)}
print(json.dumps(out, default=float))
"""

TINY_RNN = [
    "model.hidden_size=16", "model.embedding_dim=16", "model.char_hidden_size=8", "model.char_embedding_dim=8",
    "train.max_steps=3", "data.max_train_examples=300", "data.max_eval_examples=40",
]
TINY_BERT = [
    "model.hidden_size=32", "model.num_hidden_layers=2", "model.num_attention_heads=2",
    "model.intermediate_size=64", "train.max_steps=3", "train.warmup_steps=1",
    "data.max_train_examples=100", "data.max_eval_examples=20", "tokenizer.vocab_size=400",
]


def run_pipeline_in_fresh_process(run_dir: Path, cwd: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PIPELINE, str(run_dir), json.dumps(TEXTS), json.dumps(WORDS)],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_offsets(text: str, entities: list[dict], *, words_as_written: bool = False) -> None:
    for entity in entities:
        piece = text[entity["start"] : entity["end"]]
        assert piece and piece == piece.strip()
        if words_as_written:  # nlpipe's tagger pipeline cuts the word out of the text (case, hyphens kept)
            assert entity["word"] == piece
        else:  # the standard pipeline decodes tokens (spaces between WordLevel tokens): same characters
            assert entity["word"].replace(" ", "") == piece.replace(" ", "")


@pytest.fixture(scope="module")
def crf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("ner-crf") / "run"
    run_recipe("ner-bilstm-crf", TINY_CRF_TAGGER, data="sample", output_dir=run_dir, progress=False)
    return run_dir


def test_crf_char_pipeline_in_fresh_process_equals_predict(crf_run: Path, tmp_path: Path) -> None:
    result = run_pipeline_in_fresh_process(crf_run, tmp_path)
    assert result["class"] == "RnnTaggerTokenClassificationPipeline"
    expected = predict(crf_run, TEXTS)
    total = 0
    for text, got, want in zip(TEXTS, result["texts"], expected, strict=True):
        check_offsets(text, got, words_as_written=True)
        assert [(e["entity_group"], e["start"], e["end"]) for e in got] == [
            (e["entity_group"], e["start"], e["end"]) for e in want["entities"]
        ]
        assert [e["score"] for e in got] == pytest.approx([e["score"] for e in want["entities"]], abs=1e-4)
        total += len(got)
    assert total > 0, "the model predicted no entity at all: the comparison would be empty"
    # Batched inference (chunks padded together) gives the same entities.
    for got, batched in zip(result["texts"], result["batched"], strict=True):
        assert [(e["entity_group"], e["start"], e["end"]) for e in batched] == [
            (e["entity_group"], e["start"], e["end"]) for e in got
        ]
        assert [e["score"] for e in batched] == pytest.approx([e["score"] for e in got], abs=1e-4)
    # Pre-split words (one sentence, returned as a batch of one): offsets point into the words joined by spaces.
    (split_entities,) = result["words"]
    assert split_entities
    check_offsets(" ".join(WORDS), split_entities, words_as_written=True)


def test_crf_predictions_follow_the_viterbi_path(crf_run: Path) -> None:
    # A CRF with IOB2 constraints never emits I-X right after O or after another type.
    for item in predict(crf_run, TEXTS):
        previous = "O"
        for word in item["words"]:
            if word["tag"].startswith("I-"):
                assert previous[2:] == word["tag"][2:], (item["text"], item["words"])
            previous = word["tag"]


def test_bert_recipe_runs_and_pipeline_gives_offsets(tmp_path: Path) -> None:
    result = run_recipe("ner-bert", TINY_BERT, data="sample", output_dir=tmp_path / "bert", progress=False)
    assert {"f1", "precision", "recall"} <= set(result.metrics["test"])
    out = run_pipeline_in_fresh_process(result.run_dir, tmp_path)
    for text, entities in zip(TEXTS, out["texts"], strict=True):
        for entity in entities:
            assert text[entity["start"] : entity["end"]].strip()


EVERY_NER_PIPELINE = """
import json, sys
import nlpipe
from transformers import pipeline
out = {}
for run_dir in json.loads(sys.argv[1]):
    ner = pipeline("ner", model=run_dir, aggregation_strategy="simple")
    out[run_dir] = {"class": type(ner).__name__, "texts": [ner(t) for t in json.loads(sys.argv[2])]}
print(json.dumps(out, default=float))
"""
NER_RECIPES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "recipes").glob("ner-*.yaml"))


def test_every_ner_recipe_works_through_pipeline_in_one_fresh_process(tmp_path: Path) -> None:
    """Each ner-* recipe's saved run loads with `pipeline("ner")` after `import nlpipe` in a new process; the
    recurrent taggers' entities (char features, CRF or not) are exactly those of `nlpipe predict`."""
    assert len(NER_RECIPES) >= 7
    runs = {}
    for name in NER_RECIPES:
        tiny = TINY_BERT if name == "ner-bert" else TINY_RNN
        init_from = load_recipe(name).model.get("init_from")
        if init_from:  # ner-bert-pretrained: a tiny pretraining run first, then fine-tune from it (its sizes)
            source = Path(init_from).name
            run_recipe(source, TINY_BERT, data="sample",
                       output_dir=tmp_path / source, progress=False)
            tiny = [t for t in TINY_BERT if t.startswith(("train.", "data."))] + [f"model.init_from={tmp_path / source}"]
        runs[name] = run_recipe(name, tiny, data="sample", output_dir=tmp_path / name, progress=False).run_dir
    out = subprocess.run(
        [sys.executable, "-c", EVERY_NER_PIPELINE, json.dumps([str(r) for r in runs.values()]), json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    compared = 0
    for name, run_dir in runs.items():
        got = result[str(run_dir)]
        for text, entities in zip(TEXTS, got["texts"], strict=True):
            for entity in entities:
                assert text[entity["start"] : entity["end"]].strip(), (name, entity)
        # nlpipe registers its subclass for the "ner" task; for BERT it behaves as transformers' own.
        assert got["class"] == "RnnTaggerTokenClassificationPipeline", name
        if name.startswith("ner-bert"):  # sub-token aggregation is the pipeline's own, predict tags first sub-tokens
            continue
        for text, entities, want in zip(TEXTS, got["texts"], predict(run_dir, TEXTS), strict=True):
            check_offsets(text, entities, words_as_written=True)
            spans = [(e["entity_group"], e["start"], e["end"]) for e in entities]
            assert spans == [(e["entity_group"], e["start"], e["end"]) for e in want["entities"]], name
            compared += len(spans)
    assert compared > 0, "no recurrent tagger predicted any entity: the comparison would be empty"


def test_length_sorted_batches_give_the_one_by_one_entities_in_input_order(crf_run: Path) -> None:
    """A list longer than the batch is tagged in order of length (less padding); every text still gets the
    entities (and scores) it gets alone, at its own position in the answer."""
    from transformers import TokenClassificationPipeline, pipeline

    import nlpipe  # noqa: F401  (registers the tagger pipeline)

    texts = [TEXTS[i % 3] if i % 4 else TEXTS[i % 3].split(" (")[0] for i in range(10)] + ["Paris", "EU ."]
    texts = [f"{text} Hans Berger in Bonn ." * (1 + i % 3) for i, text in enumerate(texts)]
    ner = pipeline("ner", model=str(crf_run), aggregation_strategy="simple")
    # The reference: transformers' own per-text path (preprocess → _forward → postprocess, with our hooks).
    alone = [TokenClassificationPipeline.__call__(ner, text) for text in texts]
    assert [ner(text) for text in texts] == alone  # one text takes the fast path too: same entities and scores
    for batched in (ner(texts, batch_size=4), pipeline("ner", model=str(crf_run), aggregation_strategy="simple",
                                                       batch_size=5)(texts)):
        assert len(batched) == len(texts)
        for text, got, want in zip(texts, batched, alone, strict=True):
            check_offsets(text, got, words_as_written=True)
            assert [(e["entity_group"], e["start"], e["end"]) for e in got] == [
                (e["entity_group"], e["start"], e["end"]) for e in want
            ]
            assert [e["score"] for e in got] == pytest.approx([e["score"] for e in want], abs=1e-4)
    assert sum(map(len, alone)) > 0, "no entity predicted: the comparison would be empty"
    # A text with no token (empty, blanks) in a batch has no entity instead of failing the whole batch.
    empty, first = ner(["", texts[0], "  "], batch_size=2)[:2]
    assert empty == [] and [e["start"] for e in first] == [e["start"] for e in alone[0]]
    # With stride (as `nlpipe serve` uses it), texts that fit one window take the batched path, and a batch holding a
    # text longer than the window is tagged in overlapping windows (entities up to its end), as text by text.
    windowed = pipeline("ner", model=str(crf_run), aggregation_strategy="simple", stride=16)
    long_text = " ".join([texts[0]] * (windowed.tokenizer.model_max_length // len(texts[0].split()) + 2))
    for batch in (texts[:5], [*texts[:3], long_text]):
        got = windowed(batch, batch_size=2)
        want = [TokenClassificationPipeline.__call__(windowed, text) for text in batch]
        assert [[(e["entity_group"], e["start"], e["end"]) for e in entities] for entities in got] == [
            [(e["entity_group"], e["start"], e["end"]) for e in entities] for entities in want
        ]
    # bf16 autocast (opt-in) runs the same path and answers every text, in order.
    fast = ner(texts, batch_size=4, bf16=True)
    assert len(fast) == len(texts) and all(isinstance(entities, list) for entities in fast)


def test_char_tagger_called_directly_needs_tokenize_with_chars(crf_run: Path) -> None:
    """`model(**tokenizer(text))` cannot work on a char-feature tagger (the tokenizer makes no char_ids): the error
    says what to call, and that call gives the tags `nlpipe predict` gives, alone or padded in a batch."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from nlpipe.models.rnn_tagger.pipeline_rnn_tagger import tokenize_with_chars

    model = AutoModelForTokenClassification.from_pretrained(crf_run).eval()
    tokenizer = AutoTokenizer.from_pretrained(crf_run)
    with pytest.raises(ValueError, match=r"tokenize_with_chars\(tokenizer, text, model.config\)"):
        model(**tokenizer(TEXTS[0], return_tensors="pt"))
    batch = tokenize_with_chars(tokenizer, TEXTS, model.config)
    assert batch["char_ids"].shape[:2] == batch["input_ids"].shape
    with torch.no_grad():
        tags = model.decode(model(**batch).logits, batch["attention_mask"])
    for row, want in enumerate(predict(crf_run, TEXTS)):
        alone = tokenize_with_chars(tokenizer, TEXTS[row], model.config)
        with torch.no_grad():
            single = model.decode(model(**alone).logits, alone["attention_mask"])[0].tolist()
        real = batch["attention_mask"][row].bool().tolist()
        special = tokenizer(TEXTS[row], return_special_tokens_mask=True)["special_tokens_mask"]
        special_padded = special + [1] * (len(real) - len(special))  # padding positions count as special
        got = [model.config.id2label[t] for t, keep, sp in zip(tags[row].tolist(), real, special_padded, strict=True)
               if keep and not sp]
        assert got == [model.config.id2label[t] for t, sp in zip(single, special, strict=True) if not sp]
        assert got == [w["tag"] for w in want["words"]], TEXTS[row]
