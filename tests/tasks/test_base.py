"""Shared task hooks."""

from __future__ import annotations

from nlpipe.recipe import load_recipe
from nlpipe.tasks import get_task
from nlpipe.tokenizer_training import load_spec, train_tokenizer


def test_vocab_size_covers_every_token_id_even_with_special_tokens_in_the_text() -> None:
    # "[UNK]" written in the data itself makes the WordLevel trainer skip an id.
    texts = ["EU rejects [UNK] call to boycott British lamb ."] * 5 + ["Peter Blackburn [UNK] ."] * 3
    tokenizer = train_tokenizer(load_spec("word-level"), texts)
    task = get_task(load_recipe("ner-bilstm-words", ["model.hidden_size=8", "model.embedding_dim=8"]))
    task.labels = ["O", "B-PER", "I-PER"]
    task.bind_tokenizer(tokenizer)
    values = task.model_values(tokenizer)
    assert values["vocab_size"] > max(tokenizer.get_vocab().values())
    model = task.build_model(tokenizer)
    ids = tokenizer("EU rejects Peter Blackburn lamb", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[:2] == ids.shape
