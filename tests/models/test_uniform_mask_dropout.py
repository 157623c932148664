"""The recurrent families' dropout (`uniform_mask_dropout`): F.dropout's distribution with a faster CPU mask.

Each family carries its own copy (one model, one folder); all copies must stay the same function.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from nlpipe.models.rnn_lm import modeling_rnn_lm
from nlpipe.models.rnn_seq2seq import modeling_rnn_seq2seq
from nlpipe.models.rnn_tagger import modeling_rnn_tagger

COPIES = [modeling_rnn_tagger.uniform_mask_dropout, modeling_rnn_seq2seq.uniform_mask_dropout,
          modeling_rnn_lm.uniform_mask_dropout]


def test_the_copies_are_one_function() -> None:
    sources = {inspect.getsource(f) for f in COPIES}
    assert len(sources) == 1
    assert inspect.getsource(modeling_rnn_tagger.UniformMaskDropout) == inspect.getsource(
        modeling_rnn_seq2seq.UniformMaskDropout)


@pytest.mark.parametrize("dropout", COPIES)
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_same_distribution_as_f_dropout(dropout, rate: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 2500, requires_grad=True)
    y = dropout(x, rate, True)
    kept = y != 0
    # each element kept with probability 1 - rate (std of the fraction ≈ 0.0005 here), survivors scaled up
    assert abs(kept.float().mean().item() - (1 - rate)) < 0.003
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - rate)))
    # masks are independent across rows and columns, not one pattern repeated
    assert not torch.equal(kept[0], kept[1]) and not torch.equal(kept[:, 0], kept[:, 1])
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the gradient is the scaled mask, as for F.dropout


@pytest.mark.parametrize("dropout", COPIES)
def test_identity_outside_training_and_dtype_kept(dropout) -> None:
    x = torch.randn(3, 4, 5)
    assert dropout(x, 0.5, False) is x and dropout(x, 0.0, True) is x
    half = dropout(x.to(torch.bfloat16), 0.3, True)
    assert half.dtype == torch.bfloat16
    torch.manual_seed(1)
    a = dropout(x, 0.3, True)
    torch.manual_seed(1)
    assert torch.equal(a, dropout(x, 0.3, True))  # reproducible under a seed


def test_modules_use_it_and_keep_nn_dropout_settings() -> None:
    layer = modeling_rnn_tagger.UniformMaskDropout(0.25)
    assert isinstance(layer, torch.nn.Dropout) and layer.p == 0.25
    layer.eval()
    x = torch.randn(4, 4)
    assert torch.equal(layer(x), x)
