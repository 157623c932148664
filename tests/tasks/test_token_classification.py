"""Token classification task: char ids from token offsets, padding, char vocabulary, BERT sub-token labels."""

from __future__ import annotations

import datasets
import pytest
import torch

from nlpipe.errors import NlpipeError
from nlpipe.recipe import load_recipe
from nlpipe.tasks import get_task
from nlpipe.tasks.token_classification import continuation_tag
from nlpipe.tokenizer_training import load_spec, train_tokenizer

TRAIN = {
    "tokens": [["U.S.", "officials", "met", "Peter", "Blackburn", "."], ["EU", "rejects", "German", "call", "."]],
    "tags": [["B-LOC", "O", "O", "B-PER", "I-PER", "O"], ["B-ORG", "O", "B-MISC", "O", "O"]],
}
TEST = {"tokens": [["Zürich", "welcomed", "Blackburn-Smithsonianization"]], "tags": [["B-LOC", "O", "B-PER"]]}


def data() -> datasets.DatasetDict:
    return datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(TRAIN),
        "validation": datasets.Dataset.from_dict(TRAIN),
        "test": datasets.Dataset.from_dict(TEST),
    })


def prepared(recipe_name: str, overrides: list[str] | None = None, source: str = "conll2003"):
    recipe = load_recipe(recipe_name, overrides or [])
    task = get_task(recipe)
    raw = data()
    task.setup(raw, source)
    spec = load_spec(recipe.tokenizer["spec"], {k: v for k, v in recipe.tokenizer.items() if k != "spec"}, "test")
    tokenizer = train_tokenizer(spec, task.tokenizer_texts(raw["train"]))
    task.bind_tokenizer(tokenizer)
    return task, tokenizer, raw


def test_char_vocab_comes_from_training_words_and_reaches_the_config() -> None:
    task, tokenizer, _ = prepared("ner-bilstm-crf")
    training_chars = {c for sentence in TRAIN["tokens"] for word in sentence for c in word}
    assert set(task.char_vocab) == training_chars and len(task.char_vocab) == len(training_chars)
    values = task.model_values(tokenizer)
    assert values["char_vocab"] == task.char_vocab
    assert values["unk_token_id"] == tokenizer.unk_token_id
    model = task.build_model(tokenizer)
    assert model.config.char_vocab == task.char_vocab and model.config.use_crf


def nested_chars(row: dict) -> list[list[int]]:
    """An encoded row's char ids split per token (the dataset keeps them flat, with ``char_lengths``)."""
    flat, out = iter(row["char_ids"]), []
    for length in row["char_lengths"]:
        out.append([next(flat) for _ in range(length)])
    assert next(flat, None) is None, "char_lengths must account for every char id"
    return out


def test_char_ids_are_the_characters_of_each_token_piece() -> None:
    task, tokenizer, raw = prepared("ner-bilstm-crf", ["model.max_word_chars=8"])
    id_to_char = {i + 2: c for i, c in enumerate(task.char_vocab)}
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    for split in ("train", "test"):
        encoded = task.encode(raw[split], tokenizer, split)
        for row, words in zip(encoded, raw[split]["tokens"], strict=True):
            # Reference: the pieces the tokenizer's own pre-tokenizer cuts each word into.
            pieces = [piece for word in words for piece, _ in pre_tokenizer.pre_tokenize_str(word)]
            token_chars = nested_chars(row)
            assert len(token_chars) == len(row["input_ids"]) == len(pieces)
            for chars, piece in zip(token_chars, pieces, strict=True):
                expected = piece if len(piece) <= 8 else piece[:4] + piece[-4:]
                assert "".join(id_to_char.get(i, "?") for i in chars) == "".join(
                    c if c in task.char_vocab else "?" for c in expected
                )
                assert all(i == 1 for i, c in zip(chars, expected, strict=True) if c not in task.char_vocab)
    # "U.S." is split into four pieces, each with its own characters.
    assert [p for p, _ in pre_tokenizer.pre_tokenize_str("U.S.")] == ["U", ".", "S", "."]


def test_training_loader_fetches_only_what_collate_reads() -> None:
    """The training loader leaves out the evaluation-only columns and still yields exactly the collated rows."""
    task, tokenizer, raw = prepared("ner-bilstm-crf", ["train.batch_size=1"])
    encoded = task.encode(raw["train"], tokenizer, "train")
    assert {"first_piece", "length"} <= set(encoded.column_names)
    loader, sampler = task.train_loader(encoded, task.recipe)
    assert set(loader.dataset.column_names) == {"input_ids", "labels", "char_ids", "char_lengths"}
    batches = list(loader)
    assert len(batches) == len(sampler) > 1
    for indices, batch in zip(sampler, batches, strict=True):
        expected = task.collate([encoded[i] for i in indices])  # every column fetched
        assert batch.keys() == expected.keys()
        assert all(torch.equal(batch[k], expected[k]) for k in expected)


def test_collate_pads_char_ids_with_zeros() -> None:
    task, tokenizer, raw = prepared("ner-bilstm-crf")
    encoded = task.encode(raw["train"], tokenizer, "train")
    rows = [encoded[0], encoded[1]]
    batch = task.collate(rows)
    longest_word = max(len(c) for row in rows for c in nested_chars(row))
    assert batch["char_ids"].shape == (2, batch["input_ids"].shape[1], longest_word)
    for b, row in enumerate(rows):
        for t, chars in enumerate(nested_chars(row)):
            assert batch["char_ids"][b, t, : len(chars)].tolist() == chars
            assert int(batch["char_ids"][b, t, len(chars) :].abs().sum()) == 0
        assert int(batch["char_ids"][b, len(nested_chars(row)) :].abs().sum()) == 0
    # A batch trains: the model accepts it and returns a finite CRF loss.
    model = task.build_model(tokenizer)
    assert torch.isfinite(model(**batch).loss)


def test_word_only_recipe_has_no_char_ids() -> None:
    task, tokenizer, raw = prepared("ner-bilstm-words")
    encoded = task.encode(raw["train"], tokenizer, "train")
    assert "char_ids" not in encoded.column_names
    assert "char_ids" not in task.collate([encoded[0]])
    assert "char_vocab" not in task.model_values(tokenizer)


def test_saved_config_restores_char_settings_for_evaluation() -> None:
    task, tokenizer, _ = prepared("ner-bilstm-crf", ["model.max_word_chars=7"])
    config = task.build_model(tokenizer).config
    fresh = get_task(load_recipe("ner-bilstm-words"))  # a recipe without chars: the config must switch them on
    fresh.set_labels_from_config(config)
    assert fresh.uses_chars and fresh.char_vocab == task.char_vocab and fresh.max_word_chars == 7
    assert fresh.labels == task.labels


def test_bert_labels_all_sub_tokens_and_evaluates_the_first() -> None:
    task, tokenizer, raw = prepared("ner-bert")
    label2id = {label: i for i, label in enumerate(task.labels)}
    encoded = task.encode(raw["test"], tokenizer, "test")
    row = encoded[0]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert row["labels"][0] == -100 and row["labels"][-1] == -100
    words, tags = raw["test"]["tokens"][0], raw["test"]["tags"][0]
    word_ids = tokenizer(words, is_split_into_words=True).word_ids()
    assert any(word_ids.count(w) > 1 for w in range(len(words)))  # the long word has several sub-tokens
    for word, tag in enumerate(tags):
        positions = [p for p, w in enumerate(word_ids) if w == word]
        assert row["first_piece"][word] == positions[0]
        assert row["labels"][positions[0]] == label2id[tag]
        assert all(row["labels"][p] == label2id[continuation_tag(tag)] for p in positions[1:])


def test_types_seen_only_as_b_tags_get_their_i_tag_too() -> None:
    """Local data outside the catalog where PER only ever tags one word (B-PER, never I-PER): the label set
    still has I-PER, which the later pieces of a split person name are trained with (was KeyError 'I-PER')."""
    recipe = load_recipe("ner-bert")
    task = get_task(recipe)
    only_b = {"tokens": [["Blackburn", "met", "EU", "officials"]], "tags": [["B-PER", "O", "B-ORG", "O"]]}
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict(only_b),
                                "validation": datasets.Dataset.from_dict(only_b),
                                "test": datasets.Dataset.from_dict(TEST | {"tags": [["O", "O", "B-PER"]]})})
    task.setup(raw, "my-ner-files")
    assert task.labels == ["O", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    spec = load_spec(recipe.tokenizer["spec"], {k: v for k, v in recipe.tokenizer.items() if k != "spec"}, "test")
    tokenizer = train_tokenizer(spec, task.tokenizer_texts(raw["train"]))
    task.bind_tokenizer(tokenizer)
    encoded = task.encode(raw["test"], tokenizer, "test")  # the long name is several pieces: B-PER, I-PER, ...
    assert task.labels.index("I-PER") in encoded[0]["labels"]


def test_tags_that_are_not_iob_are_rejected_for_every_source() -> None:
    recipe = load_recipe("ner-bilstm")
    task = get_task(recipe)
    raw = data()
    raw["validation"] = datasets.Dataset.from_dict({"tokens": [["a", "b"]], "tags": [["O", "b-per"]]})
    with pytest.raises(NlpipeError, match=r"split 'validation', sentence 1: tag 'b-per' is not an IOB tag"):
        task.setup(raw, "my-ner-files")
