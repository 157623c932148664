"""Tokenizer specs: every kind trains, round-trips through save/load, and is reused from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from nlpipe.errors import NlpipeError
from nlpipe.tokenizer_training import cache_dir, list_specs, load_spec, train_tokenizer

TEXTS = [
    "Angela Merkel visited Paris on Monday .",
    "The U.S. economy grew 2.5 percent , officials said .",
    "Der Hund läuft schnell nach Hause .",
    "the company said it expects earnings to rise",
] * 30

SUBWORD = {"vocab_size": 120}


@pytest.mark.parametrize("name", sorted(list_specs()))
def test_every_spec_trains_and_round_trips(name: str, tmp_path: Path) -> None:
    spec = load_spec(name, {} if name.startswith("word-level") else SUBWORD)
    tokenizer = train_tokenizer(spec, TEXTS, tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = "Angela Merkel visited Paris ."
    ids = tokenizer(text)["input_ids"]
    assert reloaded(text)["input_ids"] == ids
    assert tokenizer.pad_token_id is not None
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    if name in ("word-level", "word-level-lm"):
        assert decoded == text  # words joined by single spaces
    elif name == "wordpiece":
        assert decoded == "Angela Merkel visited Paris."  # BERT-style cleanup joins punctuation
    else:
        assert decoded.strip() == text  # subword tokenizers reproduce the text exactly
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    # offsets cover the text in order (a standalone "▁" piece shares its span with the next piece)
    word_spans = [text[a:b].strip() for a, b in sorted(set(map(tuple, offsets))) if b > a]
    assert "".join(word_spans).replace("▁", "") == text.replace(" ", "")


def test_word_level_splits_punctuation_like_conll() -> None:
    tokenizer = train_tokenizer(load_spec("word-level"), TEXTS)
    assert tokenizer.tokenize("Paris, U.S.") == ["Paris", ",", "U", ".", "S", "."]
    assert tokenizer.convert_ids_to_tokens(tokenizer("Zyxw")["input_ids"]) == ["[UNK]"]


def test_lowercase_and_digit_normalization_share_words_and_keep_offsets(tmp_path: Path) -> None:
    spec = load_spec("word-level", {"lowercase": True, "normalize_digits": True})
    tokenizer = train_tokenizer(spec, TEXTS, tmp_path / "tok")
    text = "ANGELA grew 7.9 to 1996"
    encoded = tokenizer(text, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    # "angela" and "0" were seen in training ("Angela", "2" of "2.5"); "0000" was not
    assert tokens == ["angela", "grew", "0", ".", "0", "to", "[UNK]"]
    # offsets still point at the original characters, so entity spans show the text as written
    assert [text[a:b] for a, b in encoded["offset_mapping"]] == ["ANGELA", "grew", "7", ".", "9", "to", "1996"]
    # the normalizers are part of the saved tokenizer: a reload without nlpipe maps the same way
    assert AutoTokenizer.from_pretrained(tmp_path / "tok")(text)["input_ids"] == encoded["input_ids"]
    plain = train_tokenizer(load_spec("word-level"), TEXTS)
    assert plain.convert_ids_to_tokens(plain("ANGELA 7")["input_ids"]) == ["[UNK]", "[UNK]"]


DIALOGUE = "Amanda: cookies?\nJerry: Sure!  \n\nAmanda: tomorrow :-)"


@pytest.mark.parametrize("name", ["unigram", "sentencepiece", "bpe", "byte-level-bpe", "word-level"])
def test_line_break_token_is_one_reserved_piece_per_turn(name: str, tmp_path: Path) -> None:
    texts = [DIALOGUE.replace("Amanda", who) for who in ("Amanda", "Hannah", "Tom")] * 20 + TEXTS
    spec = load_spec(name, {"line_break_token": "<turn>", **({} if name == "word-level" else SUBWORD)})
    tokenizer = train_tokenizer(spec, texts, tmp_path / "tok")
    turn = tokenizer.convert_tokens_to_ids("<turn>")
    assert turn != tokenizer.unk_token_id
    ids = tokenizer(DIALOGUE)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    # each line break, blank lines and trailing spaces included, is exactly one reserved token between turns
    assert ids.count(turn) == 2
    first, second = (i for i, t in enumerate(ids) if t == turn)
    assert not any("\n" in t or "turn" in t for t in tokens if t != "<turn>")  # no piece half of it
    # every turn is tokenized exactly as the same line on its own
    assert ids[:first] == tokenizer("Amanda: cookies?", add_special_tokens=False)["input_ids"]
    assert ids[first + 1 : second] == tokenizer("Jerry: Sure!", add_special_tokens=False)["input_ids"]
    assert ids[second + 1 :] == tokenizer("Amanda: tomorrow :-)")["input_ids"]
    # a reload with transformers alone (no nlpipe) maps line breaks the same way
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded(DIALOGUE)["input_ids"] == ids
    assert "<turn>" not in reloaded.decode(ids, skip_special_tokens=True)
    # without the setting a line break is ordinary text
    plain = train_tokenizer(load_spec(name, {} if name == "word-level" else SUBWORD), texts)
    assert "<turn>" not in plain.get_vocab()


def test_line_break_token_errors() -> None:
    for bad in ("two words", "[PAD]"):
        with pytest.raises(NlpipeError, match=r"recipe: key 'tokenizer.line_break_token': .* one word"):
            load_spec("word-level", {"line_break_token": bad})


def test_bert_template_and_special_tokens() -> None:
    tokenizer = train_tokenizer(load_spec("wordpiece", SUBWORD), TEXTS)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Paris")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"


def test_cache_reuses_when_spec_and_data_unchanged() -> None:
    spec = load_spec("bpe", SUBWORD)
    train_tokenizer(spec, TEXTS)
    folders = sorted((cache_dir() / "tokenizers").glob("bpe-*"))
    stamp = {p: (p / "tokenizer.json").stat().st_mtime_ns for p in folders}
    train_tokenizer(spec, TEXTS)
    assert sorted((cache_dir() / "tokenizers").glob("bpe-*")) == folders
    assert {p: (p / "tokenizer.json").stat().st_mtime_ns for p in folders} == stamp  # not retrained
    train_tokenizer(spec, [*TEXTS, "new data changes the key"])
    assert len(list((cache_dir() / "tokenizers").glob("bpe-*"))) == len(folders) + 1
    train_tokenizer(load_spec("bpe", {"vocab_size": 130}), TEXTS)
    assert len(list((cache_dir() / "tokenizers").glob("bpe-*"))) == len(folders) + 2


def test_spec_errors() -> None:
    with pytest.raises(NlpipeError, match="unknown tokenizer spec 'nope'"):
        load_spec("nope")
    with pytest.raises(NlpipeError, match="unknown key 'vocab'"):
        load_spec("bpe", {"vocab": 3})
    with pytest.raises(NlpipeError, match="key 'kind'"):
        load_spec("bpe", {"kind": "magic"})
    with pytest.raises(NlpipeError, match="no training text"):
        train_tokenizer(load_spec("bpe"), ["", "  "])


def test_tokenizers_folder_holds_no_python() -> None:
    folder = Path(__file__).resolve().parents[1] / "tokenizers"
    assert not list(folder.glob("*.py")), "tokenizers/ must stay data-only (it would shadow the tokenizers package)"
