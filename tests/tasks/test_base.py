"""Shared task hooks."""

from __future__ import annotations

import torch

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


def test_pad_rows_and_pad_char_ids_equal_element_by_element_padding() -> None:
    """The one-tensor collation helpers equal filling the padded tensors element by element, including
    empty rows, tokens without characters (special tokens) and rows shorter than the batch."""
    import random

    from nlpipe.tasks.base import pad_rows
    from nlpipe.tasks.token_classification import flat_char_ids, pad_char_ids

    rng = random.Random(0)
    for _ in range(100):
        rows = [[rng.randint(1, 99) for _ in range(rng.randint(0, 7))] for _ in range(rng.randint(1, 5))]
        longest = max(len(r) for r in rows) + rng.randint(0, 2)
        ids, mask = pad_rows(rows, longest, -7)
        assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (len(rows), longest)
        for b, row in enumerate(rows):
            assert ids[b].tolist() == row + [-7] * (longest - len(row))
            assert mask[b].tolist() == [1] * len(row) + [0] * (longest - len(row))

        chars = [[[rng.randint(1, 50) for _ in range(rng.choice([0, 0, 1, 4, 9]))] for _ in range(len(r))]
                 for r in rows]
        flat = [flat_char_ids(row) for row in chars]
        out = pad_char_ids([ids for ids, _ in flat], [lengths for _, lengths in flat], longest)
        width = max((len(c) for row in chars for c in row), default=1) or 1
        expected = torch.zeros((len(rows), longest, width), dtype=torch.long)
        for b, row in enumerate(chars):
            for t, word in enumerate(row):
                for c, char in enumerate(word):
                    expected[b, t, c] = char
        assert torch.equal(out, expected)
