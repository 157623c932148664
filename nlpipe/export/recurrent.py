"""Recurrent layers over right-padded batches in plain, exportable ops (no packing).

``pack_padded_sequence`` has no ONNX equivalent that both exporters handle, and nlpipe's CPU fast path
(``two_pass_rnn.py``) swaps weights with ``torch.func.functional_call``. For export every layer and direction
becomes its own one-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU`` holding copies of the original weights (one
ONNX ``LSTM``/``GRU``/``RNN`` node each); the backward direction runs over each row reversed within its length,
which is exactly what packing computes.
"""

from __future__ import annotations

import torch
from torch import nn


def reverse_within_length(lengths: torch.Tensor, max_length: torch.Tensor | int) -> torch.Tensor:
    """Index map `(B, T)` reversing each row's first ``lengths[b]`` positions, padding left in place."""
    steps = torch.arange(max_length, device=lengths.device)  # (T,)
    real = steps[None] < lengths[:, None]  # (B, T)
    return torch.where(real, lengths[:, None] - 1 - steps[None], steps[None])  # (B, T)


class PaddedRnn(nn.Module):
    """The outputs of a batch-first ``rnn`` (any layers, uni- or bidirectional) over right-padded inputs,
    as packing gives them (zeros at padding), starting from a zero state.

    Args:
        rnn: the trained ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (batch_first); its weights are copied.
    """

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        if not rnn.batch_first or getattr(rnn, "proj_size", 0):
            raise ValueError("PaddedRnn needs a batch_first RNN without projections")
        self.bidirectional = rnn.bidirectional
        options = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
        directions = 2 if rnn.bidirectional else 1
        suffixes = ["", "_reverse"][:directions]
        self.cells = nn.ModuleList()
        for layer in range(rnn.num_layers):
            input_size = rnn.input_size if layer == 0 else directions * rnn.hidden_size
            for suffix in suffixes:
                cell = type(rnn)(input_size, rnn.hidden_size, batch_first=True, bias=rnn.bias, **options)
                names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if rnn.bias else [])
                with torch.no_grad():
                    for name in names:
                        getattr(cell, f"{name}_l0").copy_(getattr(rnn, f"{name}_l{layer}{suffix}"))
                self.cells.append(cell)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`(B, T, E)` inputs and `(B,)` lengths (each >= 1) → `(B, T, D*H)` outputs, zeros at padding."""
        steps = torch.arange(inputs.size(1), device=inputs.device)  # (T,)
        real = (steps[None] < lengths[:, None]).unsqueeze(-1).to(inputs.dtype)  # (B, T, 1)
        reverse = None
        if self.bidirectional:
            reverse = reverse_within_length(lengths, inputs.size(1)).unsqueeze(-1)  # (B, T, 1)
        hidden = inputs
        step = 2 if self.bidirectional else 1
        for first in range(0, len(self.cells), step):
            forward, _ = self.cells[first](hidden)  # (B, T, H)
            if self.bidirectional:
                flipped = hidden.gather(1, reverse.expand(-1, -1, hidden.size(2)))  # (B, T, E)
                backward, _ = self.cells[first + 1](flipped)  # (B, T, H)
                backward = backward.gather(1, reverse.expand(-1, -1, backward.size(2)))
                forward = torch.cat([forward, backward], dim=-1)  # (B, T, 2H)
            hidden = forward * real
        return hidden
