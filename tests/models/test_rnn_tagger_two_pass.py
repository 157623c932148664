"""The tagger's packing-free bidirectional encoder equals the packed one (states and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlpipe.models.rnn_tagger.configuration_rnn_tagger import RnnTaggerConfig
from nlpipe.models.rnn_tagger.modeling_rnn_tagger import RnnForTokenClassification


def _tagger(cell: str) -> RnnForTokenClassification:
    torch.manual_seed(0)
    config = RnnTaggerConfig(
        vocab_size=50, embedding_dim=16, hidden_size=24, cell=cell, bidirectional=True, num_layers=1,
        id2label={0: "O", 1: "B-X", 2: "I-X"}, label2id={"O": 0, "B-X": 1, "I-X": 2}, pad_token_id=0,
    )
    return RnnForTokenClassification(config)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_two_pass_equals_packed(cell: str) -> None:
    model = _tagger(cell)
    x = torch.randn(5, 9, 16, requires_grad=True)
    lengths = torch.tensor([9, 3, 7, 1, 5])
    mask = (torch.arange(9)[None] < lengths[:, None]).long()
    ours = model.encode(x, mask)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    reference = pad_packed_sequence(model.encoder(packed)[0], batch_first=True, total_length=9)[0]
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)
    weights = [x, model.encoder.weight_ih_l0, model.encoder.weight_hh_l0_reverse]
    ours_grad = torch.autograd.grad(ours.pow(2).sum(), weights)
    reference_grad = torch.autograd.grad(reference.pow(2).sum(), weights)
    for a, b in zip(ours_grad, reference_grad, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_template_is_not_saved(tmp_path) -> None:
    model = _tagger("lstm")
    before = set(model.state_dict())
    model.encode(torch.randn(2, 4, 16), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    assert set(model.state_dict()) == before
    model.save_pretrained(tmp_path)
    again = RnnForTokenClassification.from_pretrained(tmp_path)
    x, mask = torch.randn(2, 4, 16), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    torch.testing.assert_close(again.encode(x, mask), model.encode(x, mask))
