"""CharWordEncoder against a per-word, unpadded recomputation, and the char-id helper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlpipe.models.rnn_tagger import char_encoder
from nlpipe.models.rnn_tagger.char_encoder import CharWordEncoder, distinct_rows, encode_words_to_char_ids

CHARS = {char: i + 2 for i, char in enumerate("abcdefghijklmnopqrstuvwxyz")}  # 0 pad, 1 unk
NUM_CHARS = len(CHARS) + 2


def batch_of(sentences: list[list[str]], max_chars: int = 20) -> torch.Tensor:
    """(B, T, C) char ids, padded with 0 on words and characters."""
    encoded = [encode_words_to_char_ids(words, CHARS, max_chars) for words in sentences]
    num_words = max(len(sentence) for sentence in encoded)
    num_chars = max(len(word) for sentence in encoded for word in sentence)
    char_ids = torch.zeros(len(sentences), num_words, num_chars, dtype=torch.long)
    for b, sentence in enumerate(encoded):
        for t, word in enumerate(sentence):
            char_ids[b, t, : len(word)] = torch.tensor(word)
    return char_ids


def reference_vector(encoder: CharWordEncoder, word: str) -> torch.Tensor:
    """The word encoded alone, with no padding at all and without packing."""
    ids = torch.tensor([CHARS[char] for char in word]).unsqueeze(0)  # (1, L)
    embedded = encoder.embedding(ids)  # (1, L, E)
    if encoder.kind == "lstm":
        outputs, _ = encoder.lstm(embedded)  # (1, L, 2H)
        hidden = outputs.size(2) // 2
        # Final forward state is at the last character, final backward state at the first.
        return torch.cat([outputs[0, -1, :hidden], outputs[0, 0, hidden:]])
    conv = encoder.conv
    features = F.conv1d(embedded.transpose(1, 2), conv.weight, conv.bias, padding=conv.padding)  # (1, H, L)
    return features[0].max(dim=1).values


@pytest.mark.parametrize("kind,expected_dim", [("lstm", 2 * 16), ("cnn", 16)])
def test_shape_zeros_and_padding_independence(kind, expected_dim):
    torch.manual_seed(0)
    encoder = CharWordEncoder(NUM_CHARS, char_embedding_dim=8, hidden_size=16, kind=kind)
    assert encoder.output_dim == expected_dim

    with_long = [["cat", "extraordinarily", "a"], ["internationalization"]]
    with_short = [["ox"], ["by", "cat"], ["a", "b", "c", "d"]]
    long_ids, short_ids = batch_of(with_long), batch_of(with_short)
    assert long_ids.size(2) == 20 and short_ids.size(2) == 3  # really different char padding

    long_out = encoder(long_ids)
    short_out = encoder(short_ids)
    assert long_out.shape == (2, 3, expected_dim)
    assert short_out.shape == (3, 4, expected_dim)

    reference = reference_vector(encoder, "cat")
    torch.testing.assert_close(long_out[0, 0], reference, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(short_out[1, 1], reference, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(long_out[0, 1], reference_vector(encoder, "extraordinarily"), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(short_out[2, 3], reference_vector(encoder, "d"), atol=1e-6, rtol=1e-5)

    # Padding words are exactly zero; real words are not.
    assert long_out[1, 1:].eq(0).all()
    assert short_out[0, 1:].eq(0).all() and short_out[1, 2:].eq(0).all()
    assert long_out[0, 2].abs().sum() > 0

    # Extra trailing character padding changes nothing.
    wider = F.pad(long_ids, (0, 5))
    torch.testing.assert_close(encoder(wider), long_out, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_gradients_reach_every_part(kind):
    torch.manual_seed(1)
    encoder = CharWordEncoder(NUM_CHARS, char_embedding_dim=8, hidden_size=8, kind=kind, kernel_size=5)
    encoder(batch_of([["abc", "de"], ["fgh"]])).sum().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # The padding row never receives gradient.
    assert encoder.embedding.weight.grad[0].eq(0).all()


def test_all_padding_batch_gives_zeros():
    encoder = CharWordEncoder(NUM_CHARS, hidden_size=4)
    out = encoder(torch.zeros(2, 3, 5, dtype=torch.long))
    assert out.shape == (2, 3, 8) and out.eq(0).all()


def test_reset_parameters_keeps_padding_row_zero():
    encoder = CharWordEncoder(NUM_CHARS, kind="cnn")
    with torch.no_grad():
        for param in encoder.parameters():
            param.fill_(3.0)
    encoder.reset_parameters()
    assert encoder.embedding.weight[0].eq(0).all()
    for param in encoder.parameters():
        assert param.ne(3.0).any()


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match='"lstm" or "cnn"'):
        CharWordEncoder(10, kind="gru")
    with pytest.raises(ValueError, match="odd"):
        CharWordEncoder(10, kind="cnn", kernel_size=4)
    with pytest.raises(ValueError, match="batch, words, chars"):
        CharWordEncoder(10)(torch.zeros(2, 3, dtype=torch.long))


def test_encode_words_to_char_ids_truncates_keeping_prefix_and_suffix():
    ids = encode_words_to_char_ids(["internationalization", "cat", "ab?", ""], CHARS, max_chars=6)
    decode = {i: char for char, i in CHARS.items()}
    assert "".join(decode[i] for i in ids[0]) == "int" + "ion"
    assert ids[1] == [CHARS["c"], CHARS["a"], CHARS["t"]]  # short words unchanged
    assert ids[2] == [CHARS["a"], CHARS["b"], 1]  # unknown character -> unk_id
    assert ids[3] == [1]  # an empty word is not mistaken for padding

    odd = encode_words_to_char_ids(["abcdefghij"], CHARS, max_chars=5, unk_id=9)[0]
    assert "".join(decode[i] for i in odd) == "ab" + "hij"  # 5 // 2 = 2 first, 3 last
    assert encode_words_to_char_ids(["abcdef"], CHARS, max_chars=6)[0] == [CHARS[c] for c in "abcdef"]
    with pytest.raises(ValueError, match="max_chars"):
        encode_words_to_char_ids(["a"], CHARS, max_chars=0)


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_repeated_words_get_the_gradients_of_separate_encodings(kind):
    """Distinct spellings are encoded once; vectors and gradients equal encoding every occurrence alone."""
    torch.manual_seed(3)
    encoder = CharWordEncoder(NUM_CHARS, char_embedding_dim=8, hidden_size=6, kind=kind)
    sentences = [["the", "cat", "the", "a"], ["a", "the", "dog"], ["the"]]
    char_ids = batch_of(sentences)
    weights = torch.randn(len(sentences), 4, encoder.output_dim)
    out = encoder(char_ids)
    (out * weights).sum().backward()
    ours = {name: p.grad.clone() for name, p in encoder.named_parameters()}
    encoder.zero_grad()
    reference = torch.zeros_like(out)
    for b, sentence in enumerate(sentences):
        for t, word in enumerate(sentence):
            reference[b, t] = reference_vector(encoder, word)
    torch.testing.assert_close(out.detach(), reference.detach(), atol=1e-6, rtol=1e-5)
    (reference * weights).sum().backward()
    for name, param in encoder.named_parameters():
        torch.testing.assert_close(ours[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", ["cnn", "lstm"])
def test_gradients_are_bit_identical_with_several_threads(kind):
    """Enough words that torch parallelises the backward of the gather of distinct spellings: with
    ``encoded[occurrence]`` (atomic adds) two backward passes differed in the last bits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        encoder = CharWordEncoder(num_chars=12, char_embedding_dim=30, hidden_size=30, kind=kind)
        char_ids = torch.randint(1, 12, (64, 40, 2))  # 2,560 words, few distinct spellings
        weights = torch.randn(64, 40, encoder.output_dim)
        grads = []
        for _ in range(8):
            encoder.zero_grad()
            (encoder(char_ids) * weights).sum().backward()
            grads.append([p.grad.clone() for p in encoder.parameters()])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for later in grads[1:] for a, b in zip(grads[0], later, strict=True))


def _rows(count: int, seed: int, high: int = 90) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randint(1, high, (count // 3 + 1, 12), generator=gen)
    lengths = torch.randint(1, 13, (pool.shape[0],), generator=gen)
    pool[torch.arange(12)[None] >= lengths[:, None]] = 0  # right-padded spellings, many repeated below
    return pool[torch.randint(0, pool.shape[0], (count,), generator=gen)]


@pytest.mark.parametrize("seed", range(5))
def test_distinct_rows_equals_the_row_wise_unique(seed: int) -> None:
    words = _rows(700, seed)
    distinct, occurrence = distinct_rows(words)
    expected, _ = torch.unique(words, dim=0, return_inverse=True)
    assert torch.equal(distinct[occurrence], words)  # every word maps back to its own spelling
    assert distinct.shape == expected.shape  # each spelling once
    assert torch.equal(torch.unique(distinct, dim=0), expected)


def test_distinct_rows_stays_exact_when_keys_collide(monkeypatch) -> None:
    words = _rows(300, 7)
    monkeypatch.setattr(char_encoder, "ROW_KEY_WEIGHTS", torch.zeros(64, dtype=torch.int64))  # every key equal
    distinct, occurrence = distinct_rows(words)
    assert torch.equal(distinct[occurrence], words)
    assert torch.equal(distinct, torch.unique(words, dim=0))
    wide = _rows(50, 8, high=2**21)  # ids too large for the key: the row-wise unique answers
    distinct, occurrence = distinct_rows(wide)
    assert torch.equal(distinct[occurrence], wide)
