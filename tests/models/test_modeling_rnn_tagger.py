"""RnnForTokenClassification: cells, packing, char features, CRF loss/decoding/marginals, word dropout, reload."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from nlpipe.models.rnn_tagger.configuration_rnn_tagger import RnnTaggerConfig
from nlpipe.models.rnn_tagger.modeling_rnn_tagger import RnnForTokenClassification

LABELS = {0: "O", 1: "B-PER", 2: "I-PER"}


def make_model(**overrides) -> RnnForTokenClassification:
    values = dict(
        vocab_size=30, embedding_dim=8, hidden_size=8, dropout=0.0, embedding_dropout=0.0,
        id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, char_embedding_dim=4, char_hidden_size=4,
    )
    values.update(overrides)
    torch.manual_seed(0)
    return RnnForTokenClassification(RnnTaggerConfig(**values)).eval()


def batch(lengths: list[int], chars: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded random input_ids / attention_mask / char_ids (no char padding inside real tokens)."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    input_ids = torch.randint(1, 30, (len(lengths), longest), generator=generator)
    mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    char_ids = torch.randint(2, 8, (len(lengths), longest, chars), generator=generator)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        input_ids[row, n:] = 0
        char_ids[row, n:] = 0
    return {"input_ids": input_ids, "attention_mask": mask, "char_ids": char_ids}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_each_cell_scores_tokens_and_loss_is_cross_entropy(cell: str, bidirectional: bool) -> None:
    model = make_model(cell=cell, bidirectional=bidirectional)
    inputs = batch([5, 3])
    labels = torch.tensor([[0, 1, 2, 0, 1], [1, 0, 0, -100, -100]])
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels)
    assert out.logits.shape == (2, 5, 3)
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(out.logits[keep], labels[keep])
    assert torch.allclose(out.loss, expected)
    assert torch.equal(model.decode(out.logits, inputs["attention_mask"]), out.logits.argmax(-1))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bidirectional_outputs_do_not_depend_on_padding(cell: str) -> None:
    model = make_model(cell=cell, bidirectional=True, char_encoder="lstm", char_vocab=list("abcdef"))
    padded = batch([6, 3])
    alone = {k: v[1:, :3] for k, v in padded.items()}
    together = model(**padded).logits[1, :3]
    single = model(**alone).logits[0]
    assert torch.allclose(together, single, atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_char_features_change_outputs_and_ignore_char_padding(kind: str) -> None:
    model = make_model(char_encoder=kind, char_vocab=list("abcdef"))
    inputs = batch([4, 2])
    base = model(**inputs).logits
    other_chars = dict(inputs, char_ids=inputs["char_ids"].flip(-1))
    assert not torch.allclose(model(**other_chars).logits, base)
    # Extra character padding (longer C) must not change anything.
    wider = torch.nn.functional.pad(inputs["char_ids"], (0, 3))
    assert torch.allclose(model(**dict(inputs, char_ids=wider)).logits, base, atol=1e-6)
    assert model.char_encoder is not None


def test_char_model_without_char_ids_is_a_clear_error() -> None:
    model = make_model(char_encoder="lstm", char_vocab=list("ab"))
    inputs = batch([3])
    with pytest.raises(ValueError, match="char_ids"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])


def brute_force(emissions: torch.Tensor, crf) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log Z, best path, marginals (T, K)) by enumerating every path of one sequence."""
    transitions, start, end = crf._constrained_scores()
    seq_len, num_tags = emissions.shape
    scores, paths = [], []
    for path in itertools.product(range(num_tags), repeat=seq_len):
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, path[t]] for t in range(seq_len))
        score = score + sum(transitions[path[t - 1], path[t]] for t in range(1, seq_len))
        scores.append(score)
        paths.append(path)
    scores = torch.stack(scores)
    probs = scores.softmax(0)
    marginals = torch.zeros(seq_len, num_tags)
    for p, path in zip(probs, paths, strict=True):
        for t, tag in enumerate(path):
            marginals[t, tag] += p
    return torch.logsumexp(scores, 0), torch.tensor(paths[int(scores.argmax())]), marginals


def test_crf_loss_decode_and_marginals_match_brute_force() -> None:
    model = make_model(use_crf=True)
    with torch.no_grad():  # sharper transitions than the init, so the CRF really overrides argmax
        model.crf.transitions.normal_(0, 2.0)
    inputs = batch([4, 2])
    labels = torch.tensor([[1, 2, 0, 1], [0, 1, -100, -100]])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    path = model.decode(out.logits, mask)
    scores = model.decode_scores(out.logits, mask)
    nll = []
    for row, n in enumerate([4, 2]):
        emissions = out.logits[row, :n].detach().float()
        log_z, best, marginals = brute_force(emissions, model.crf)
        gold = model.crf.score(emissions[None], labels[row : row + 1, :n])[0]
        nll.append(log_z - gold)
        assert torch.equal(path[row, :n], best)
        # decode_scores: log-marginals with the Viterbi label swapped to the top; a distribution per token.
        probs = scores[row, :n].exp()
        assert torch.allclose(probs.sum(-1), torch.ones(n), atol=1e-5)
        assert torch.equal(probs.argmax(-1), best)
        assert torch.allclose(probs.sort(-1).values, marginals.sort(-1).values, atol=1e-5)
    assert torch.allclose(out.loss, torch.stack(nll).mean(), atol=1e-4)


def test_crf_has_iob2_constraints_from_id2label() -> None:
    model = make_model(use_crf=True)
    allowed = model.crf.allowed_transitions
    assert not allowed[0, 2] and allowed[1, 2] and allowed[2, 2]  # no O → I-PER
    assert model.crf.allowed_start.tolist() == [True, True, False]


def test_word_dropout_only_in_training_and_never_on_padding() -> None:
    model = make_model(word_dropout=0.5, unk_token_id=1)
    inputs = batch([20, 10])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert torch.equal(model._drop_words(ids, mask), ids)  # eval mode
    model.train()
    torch.manual_seed(3)
    dropped = model._drop_words(ids, mask)
    changed = dropped != ids
    assert bool((dropped[changed] == 1).all())
    assert not bool(changed[mask == 0].any())
    assert 0.25 < changed[mask == 1].float().mean() < 0.75


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_save_and_reload_keeps_crf_and_char_encoder(tmp_path: Path, kind: str) -> None:
    model = make_model(cell="gru", use_crf=True, char_encoder=kind, char_vocab=list("abcdef"))
    inputs = batch([5, 2])
    model.save_pretrained(tmp_path)
    reloaded = RnnForTokenClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.char_vocab == list("abcdef")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)
