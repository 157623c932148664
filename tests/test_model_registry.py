"""The registry's shipped field index (model_fields.json) equals what the live config classes give."""

from __future__ import annotations

import json

from nlpipe.model_registry import FIELD_INDEX, MODELS, live_model_fields


def test_field_index_matches_the_live_config_classes() -> None:
    shipped = json.loads(FIELD_INDEX.read_text(encoding="utf-8"))
    assert set(shipped) == set(MODELS)
    for name in MODELS:
        assert shipped[name] == live_model_fields(name), (
            f"nlpipe/model_fields.json is stale for '{name}': run `python -m nlpipe.model_registry`"
        )


def test_field_docs_come_from_the_config_docstrings() -> None:
    tagger = {f["name"]: f for f in live_model_fields("rnn_tagger")}
    assert tagger["cell"]["default"] == "lstm" and tagger["cell"]["type"] == "str"
    assert tagger["cell"]["doc"].startswith("Recurrent cell")
    bert = {f["name"]: f for f in live_model_fields("bert")}
    assert bert["hidden_size"]["default"] == 256  # nlpipe's from-scratch default, not BERT-base's 768
    assert bert["num_attention_heads"]["doc"]
