"""`TorchPredictor`: the results the server hands out, against ``pipeline()`` and ``nlpipe predict``."""

from __future__ import annotations

from pathlib import Path

import pytest

import nlpipe  # noqa: F401  (registers the pipelines)
from nlpipe.prediction import predict
from nlpipe.serving.predictors import Predictor, TorchPredictor

SENTENCE = "Peter Blackburn met EU officials in Zürich on Monday ."


def test_ner_results_are_the_pipeline_entities(ner_run: Path) -> None:
    from transformers import pipeline

    predictor = TorchPredictor(ner_run, batch_size=4)
    assert isinstance(predictor, Predictor) and predictor.task == "token-classification"
    texts = [SENTENCE, "nothing", "EU rejects German call to boycott British lamb ."]
    reference = pipeline("ner", model=str(ner_run), aggregation_strategy="simple")
    for result, text in zip(predictor.predict(texts), texts, strict=True):
        expected = reference(text)
        assert result["text"] == text
        assert [(e["entity_group"], e["start"], e["end"], e["word"]) for e in result["entities"]] == [
            (e["entity_group"], e["start"], e["end"], e["word"]) for e in expected]
        assert [e["score"] for e in result["entities"]] == pytest.approx([float(e["score"]) for e in expected], abs=1e-4)
        assert all(type(e["score"]) is float for e in result["entities"])  # JSON-ready, not numpy


def test_a_text_longer_than_the_window_is_tagged_to_its_end(ner_run: Path) -> None:
    from transformers import pipeline

    predictor = TorchPredictor(ner_run)
    window = predictor.tokenizer.model_max_length
    text = " ".join([SENTENCE] * (window // 10 + 20))  # 11 tokens each: well past one window
    cut = predictor.tokenizer(text, return_offsets_mapping=True, truncation=True)["offset_mapping"][-2][1]
    assert cut < len(text) - 200
    plain = pipeline("ner", model=str(ner_run), aggregation_strategy="simple")(text)
    assert plain and max(e["end"] for e in plain) <= cut  # what pipeline() alone does: the rest is cut off
    entities = predictor.predict([text])[0]["entities"]
    assert max(e["start"] for e in entities) > len(text) - len(SENTENCE)  # the last copy is tagged too
    assert all(text[e["start"] : e["end"]] == e["word"] for e in entities)


def test_translation_results_are_what_nlpipe_predict_prints(translation_run: Path) -> None:
    texts = ["die Katze das Buch findet .", "ein Hund läuft ."]
    results = TorchPredictor(translation_run).predict(texts)
    assert results == [{"text": r["text"], "translation": r["output"]} for r in predict(translation_run, texts)]


def test_continuation_results_are_what_nlpipe_predict_prints(tmp_path: Path) -> None:
    from nlpipe.run import run_recipe

    overrides = ["train.max_steps=3", "data.max_train_examples=96", "data.max_eval_examples=12",
                 "train.eval_every_steps=null", "eval.splits=[test]", "model.hidden_size=16", "model.embedding_dim=16",
                 "generate.do_sample=false", "generate.max_new_tokens=6"]  # greedy: comparable answers
    run_dir = run_recipe("generation-lstm", overrides, data="sample", output_dir=tmp_path / "lm", progress=False).run_dir
    prompts = ["the company said", "a young teacher"]
    results = TorchPredictor(run_dir).predict(prompts)
    expected = predict(run_dir, prompts)
    assert [r["generated_text"] for r in results] == [e["generated_text"] for e in expected]
    for result, prompt in zip(results, prompts, strict=True):
        assert result["text"] == prompt and result["generated_text"] == prompt + result["continuation"]
        assert result["continuation"]
