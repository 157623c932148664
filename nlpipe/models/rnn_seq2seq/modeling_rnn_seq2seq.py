"""Recurrent encoder–decoder with attention (Bahdanau / Luong / multi-head, soft or hard) and optional copying.

The whole forward pass of the family is in this file:

    source ids → embeddings → packed (bi)RNN encoder → encoder states (B, S, H)
    decoder state₀ = tanh(Linear(final top-layer encoder state))
    for each target step:  [embedding; previous attentional vector] → decoder RNN → state s_t
                           attention(s_t, encoder states) → context c_t
                           attentional vector h̃_t = tanh(W_c [s_t; c_t]) → vocabulary logits
                           (copy variant: mix the vocabulary softmax with the attention over source ids)

Generation carries the decoder's recurrent state (plus the input-feeding vector) from step to step as
``cache``; beam search reorders it through ``_reorder_cache``. Everything in ``encoder_outputs`` is
batch-first so ``generate()`` can expand it for beams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from .configuration_rnn_seq2seq import RnnSeq2SeqConfig

_CELL_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

# Copied from nlpipe.models.rnn_tagger.modeling_rnn_tagger.uniform_mask_dropout (with UniformMaskDropout)

def uniform_mask_dropout(hidden: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """`F.dropout`, with the mask drawn as ``torch.rand(...) >= rate`` on a CPU.

    Same distribution (each element kept with probability 1 - rate, scaled by 1 / (1 - rate)), ≈ 2x faster
    forward + backward on a CPU than the ``bernoulli_`` kernel behind `F.dropout` (measured on (64, 35, 650)
    float32 and bf16 and on a 2600×650 weight: docs/performance.md). Other devices keep `F.dropout`'s fused kernel.
    """
    if not training or rate == 0:
        return hidden
    if hidden.device.type != "cpu" or rate >= 1:
        return F.dropout(hidden, rate, training=True)
    keep = torch.rand(hidden.shape, device=hidden.device) >= rate  # float32 uniforms, also under bf16 autocast
    return hidden * keep.to(hidden.dtype).mul_(1.0 / (1.0 - rate))


class UniformMaskDropout(nn.Dropout):
    """`nn.Dropout` (same settings and state) computed by `uniform_mask_dropout`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Dropout's own argument name
        return uniform_mask_dropout(input, self.p, self.training)


class _LoopWeight:
    """A weight used once per step of the input-feeding loop, whose gradient is formed once for all steps.

    Plain autograd forms `grad_out_t^T x_t` at every target step t and adds it into the weight's gradient: T
    small products and T additions of the whole matrix (the additions alone were 18 % of a
    translation-lstm-luong training step in the torch profiler). Here a step's backward only keeps
    (x_t, grad_out_t); `_GatherLoopGrad.backward` runs once after all of them (every step's product depends on
    its output, `token`) and makes one product over all B·T rows. Training only; one backward per forward.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        device = weight.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
        self.weight = weight
        self.value = weight.detach().to(dtype)  # the compute copy (bf16 under autocast), cast once per pass
        self.inputs: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.token = _GatherLoopGrad.apply(weight, self)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ weight.T` over the last dimension of `x`, in the compute dtype."""
        flat = x.reshape(-1, x.shape[-1])
        return _LoopProduct.apply(flat, self.token, self).reshape(*x.shape[:-1], self.value.shape[0])


class _GatherLoopGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: torch.Tensor, use: _LoopWeight) -> torch.Tensor:
        ctx.use = use
        return weight.new_zeros(())

    @staticmethod
    def backward(ctx, _unused: torch.Tensor):
        use = ctx.use
        if not use.grads:
            return None, None
        grad = torch.cat(use.grads).t().mm(torch.cat(use.inputs))  # (out, in): one product over all steps
        use.inputs.clear()
        use.grads.clear()
        return grad.to(use.weight.dtype), None


class _LoopProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, token: torch.Tensor, use: _LoopWeight) -> torch.Tensor:
        computed = x.to(use.value.dtype)
        ctx.save_for_backward(computed)
        ctx.use, ctx.x_dtype = use, x.dtype
        return computed.mm(use.value.t())

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (computed,) = ctx.saved_tensors
        use = ctx.use
        grad_out = grad_out.to(use.value.dtype)
        use.inputs.append(computed)
        use.grads.append(grad_out)
        no_grad_for_token = torch.zeros((), dtype=use.weight.dtype, device=grad_out.device)
        return grad_out.mm(use.value).to(ctx.x_dtype), no_grad_for_token, None


@dataclass
class RnnSeq2SeqEncoderOutput(BaseModelOutput):
    """`BaseModelOutput` plus the source token ids, which the copy mechanism scatters attention onto.

    Args:
        source_ids (`torch.LongTensor` of shape `(batch_size, source_length)`, *optional*):
            The encoder's `input_ids`. Kept here (batch-first) because `generate()` does not pass the source
            ids to the decoding steps but does expand `encoder_outputs` for beams.
    """

    source_ids: torch.LongTensor | None = None


class RnnSeq2SeqDecoderCache:
    """The decoder's recurrent state between generation steps (what `generate()` carries as `cache`).

    Args:
        hidden: `(decoder_layers, batch, hidden_size)` RNN state (torch's layout: batch on dim 1).
        cell: the LSTM cell state, same shape, or `None` for RNN/GRU decoders.
        feed: `(batch, output_dim)` attentional vector of the previous step (input feeding), or `None`.
    """

    # generate() asks these of any cache object; a recurrent state can be neither compiled nor cropped.
    is_compileable = False
    is_croppable = False

    def __init__(
        self, hidden: torch.Tensor, cell: torch.Tensor | None = None, feed: torch.Tensor | None = None
    ):
        self.hidden = hidden
        self.cell = cell
        self.feed = feed

    def index_select(self, batch_idx: torch.LongTensor) -> RnnSeq2SeqDecoderCache:
        """Return the state of the rows `batch_idx` (beam search keeps the beams it continues)."""
        return RnnSeq2SeqDecoderCache(
            hidden=self.hidden.index_select(1, batch_idx.to(self.hidden.device)),
            cell=None if self.cell is None else self.cell.index_select(1, batch_idx.to(self.cell.device)),
            feed=None if self.feed is None else self.feed.index_select(0, batch_idx.to(self.feed.device)),
        )

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder in place (the protocol some transformers code paths use for state objects)."""
        reordered = self.index_select(beam_idx)
        self.hidden, self.cell, self.feed = reordered.hidden, reordered.cell, reordered.feed


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher-forcing decoder inputs: `decoder_start_token_id` followed by `labels[:, :-1]`, with -100 → pad."""
    if decoder_start_token_id is None or pad_token_id is None:
        raise ValueError(
            "config.decoder_start_token_id and config.pad_token_id must be set to train from labels"
        )
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def final_encoder_state(
    encoder_hidden: torch.Tensor, mask: torch.Tensor, bidirectional: bool
) -> torch.Tensor:
    """The top encoder layer's final state, read back from its (batch-first) outputs.

    Forward direction: the output at the last real token; backward direction: the output at the first real
    token (where the backward RNN ends). This equals the RNN's `h_n` of the top layer because padding is packed
    away, and it needs nothing besides `encoder_outputs` and the mask, so beam expansion cannot break it.

    Returns a `(batch, hidden_size)` tensor.
    """
    batch, length, hidden = encoder_hidden.shape
    positions = torch.arange(length, device=encoder_hidden.device).expand(batch, length)  # (B, S)
    rows = torch.arange(batch, device=encoder_hidden.device)
    last = torch.where(mask, positions, -1).max(dim=1).values  # (B,)
    if not bidirectional:
        return encoder_hidden[rows, last]
    first = torch.where(mask, positions, length).min(dim=1).values  # (B,)
    half = hidden // 2
    return torch.cat([encoder_hidden[rows, last, :half], encoder_hidden[rows, first, half:]], dim=-1)


class RnnSeq2SeqEncoder(nn.Module):
    """Embeddings → packed (bi)RNN; returns batch-first states with zeros at padded positions."""

    main_input_name = "input_ids"  # generate() checks it against the model's

    def __init__(self, config: RnnSeq2SeqConfig):
        super().__init__()
        directions = 2 if config.encoder_bidirectional else 1
        self.embed_tokens = nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id
        )
        self.dropout = UniformMaskDropout(config.dropout)
        self.rnn = _CELL_CLASSES[config.encoder_cell](
            config.embedding_dim,
            config.hidden_size // directions,  # both directions together give hidden_size features
            num_layers=config.encoder_layers,
            bidirectional=config.encoder_bidirectional,
            dropout=config.dropout if config.encoder_layers > 1 else 0.0,
            batch_first=True,
        )

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RnnSeq2SeqEncoderOutput | tuple:
        """Encode `input_ids` `(B, S)`; `attention_mask` (1 = token, 0 = pad) may pad on either side.

        Returns `RnnSeq2SeqEncoderOutput(last_hidden_state=(B, S, hidden_size), source_ids=input_ids)`.
        Raises `ValueError` when a row has no real token.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()
        lengths = mask.sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError("every source sequence needs at least one token with attention_mask 1")
        # Packing wants the real tokens first; a stable sort moves them there in order, which also makes
        # left-padded batches work. The outputs are scattered back to the original positions afterwards.
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # (B, S)
        embeds = self.dropout(self.embed_tokens(input_ids.gather(1, order)))  # (B, S, E)
        packed = pack_padded_sequence(embeds, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(
            packed_out, batch_first=True, total_length=input_ids.size(1)
        )  # (B, S, H)
        hidden = torch.zeros_like(out).scatter(1, order.unsqueeze(-1).expand_as(out), out)  # (B, S, H)
        output = RnnSeq2SeqEncoderOutput(last_hidden_state=hidden, source_ids=input_ids)
        return output if return_dict is not False else output.to_tuple()


class RnnSeq2SeqAttention(nn.Module):
    """Scores decoder states against encoder states; soft or hard (top-k, straight-through) weights.

    `forward(query (B, T, H), memory, mask (B, S))` returns the context `(B, T, H)` and the weights
    `(B, heads, T, S)`, exactly zero at masked source positions.
    """

    def __init__(self, config: RnnSeq2SeqConfig):
        super().__init__()
        hidden = config.hidden_size
        self.kind = config.attention
        self.heads = config.attention_heads if self.kind == "multihead" else 1
        self.hard_k = config.hard_attention_k if config.attention_mode == "hard" else None
        if self.kind == "additive":
            self.query_proj = nn.Linear(hidden, hidden, bias=False)
            self.key_proj = nn.Linear(hidden, hidden)
            self.energy = nn.Linear(hidden, 1, bias=False)  # the v of v^T tanh(W_s s + W_h h)
        elif self.kind == "general":
            self.key_proj = nn.Linear(hidden, hidden, bias=False)  # the W of s^T W h
        elif self.kind == "multihead":
            self.query_proj = nn.Linear(hidden, hidden)
            self.key_proj = nn.Linear(hidden, hidden)
            self.value_proj = nn.Linear(hidden, hidden)
            self.out_proj = nn.Linear(hidden, hidden)

    def project_memory(self, encoder_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values from the encoder states, computed once per forward call (not once per step)."""
        if self.kind == "additive" or self.kind == "general":
            return self.key_proj(encoder_hidden), encoder_hidden
        if self.kind == "multihead":
            batch, length, hidden = encoder_hidden.shape
            head_dim = hidden // self.heads
            keys = self.key_proj(encoder_hidden).view(batch, length, self.heads, head_dim).transpose(1, 2)
            values = self.value_proj(encoder_hidden).view(batch, length, self.heads, head_dim).transpose(1, 2)
            return keys, values  # (B, nh, S, hd) each
        return encoder_hidden, encoder_hidden  # dot

    def forward(
        self, query: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from `query` (B, T, H) over `memory`; returns (context (B, T, H), weights (B, heads, T, S))."""
        keys, values = memory
        batch, steps, hidden = query.shape
        if self.kind == "additive":
            energy_in = self.query_proj(query).unsqueeze(2) + keys.unsqueeze(1)  # (B, T, S, H)
            scores = self.energy(torch.tanh(energy_in)).squeeze(-1).unsqueeze(1)  # (B, 1, T, S)
        elif self.kind == "multihead":
            head_dim = hidden // self.heads
            q = (
                self.query_proj(query).view(batch, steps, self.heads, head_dim).transpose(1, 2)
            )  # (B, nh, T, hd)
            scores = q @ keys.transpose(-1, -2) / math.sqrt(head_dim)  # (B, nh, T, S)
        else:  # dot: s^T h, general: s^T (W h)
            scores = (query @ keys.transpose(1, 2)).unsqueeze(1)  # (B, 1, T, S)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        if self.hard_k is not None:
            weights = self._straight_through_top_k(weights)
        if self.kind == "multihead":
            context = (weights @ values).transpose(1, 2).reshape(batch, steps, hidden)  # (B, T, H)
            return self.out_proj(context), weights
        return weights.squeeze(1) @ values, weights  # (B, T, S) @ (B, S, H) → (B, T, H)

    def _straight_through_top_k(self, soft: torch.Tensor) -> torch.Tensor:
        """Forward: the k largest weights renormalised (others exactly 0); backward: the soft gradient."""
        k = min(self.hard_k, soft.size(-1))
        keep = torch.zeros_like(soft).scatter(-1, soft.topk(k, dim=-1).indices, 1.0)
        hard = soft * keep
        hard = hard / hard.sum(dim=-1, keepdim=True)
        # soft - soft is exactly 0 in floating point, so dropped positions stay exactly zero.
        return soft + (hard - soft).detach()


@dataclass
class _DecoderSteps:
    """What the decoder computed for T target positions (all batch-first)."""

    attentional: torch.Tensor  # (B, T, D) h̃_t, fed to the output layer
    states: torch.Tensor  # (B, T, H) top-layer decoder states s_t
    embeds: torch.Tensor  # (B, T, E) input embeddings (after dropout)
    context: torch.Tensor | None  # (B, T, H) or None without attention
    weights: torch.Tensor | None  # (B, heads, T, S) or None without attention
    cache: RnnSeq2SeqDecoderCache


class RnnSeq2SeqDecoder(nn.Module):
    """Recurrent decoder with (optional) attention and input feeding; the output layer lives in the model."""

    def __init__(self, config: RnnSeq2SeqConfig):
        super().__init__()
        hidden = config.hidden_size
        self.layers = config.decoder_layers
        self.hidden_size = hidden
        self.is_lstm = config.decoder_cell == "lstm"
        self.encoder_bidirectional = config.encoder_bidirectional
        self.use_attention = config.attention != "none"
        self.input_feeding = bool(config.input_feeding) and self.use_attention
        # With tied embeddings the attentional vector is the (transposed) embedding's input size.
        self.output_dim = config.embedding_dim if config.tie_embeddings else hidden

        self.embed_tokens = nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id
        )
        self.dropout = UniformMaskDropout(config.dropout)
        rnn_input = config.embedding_dim + (self.output_dim if self.input_feeding else 0)
        self.rnn = _CELL_CLASSES[config.decoder_cell](
            rnn_input,
            hidden,
            num_layers=config.decoder_layers,
            dropout=config.dropout if config.decoder_layers > 1 else 0.0,
            batch_first=True,
        )
        self.init_hidden = nn.Linear(hidden, config.decoder_layers * hidden)
        self.init_cell = nn.Linear(hidden, config.decoder_layers * hidden) if self.is_lstm else None
        self.attention = RnnSeq2SeqAttention(config) if self.use_attention else None
        self.combine = nn.Linear(hidden * (2 if self.use_attention else 1), self.output_dim)

    def initial_state(self, encoder_hidden: torch.Tensor, mask: torch.Tensor) -> RnnSeq2SeqDecoderCache:
        """State before the first target token: `tanh(Linear(final encoder state))` per decoder layer."""
        summary = final_encoder_state(encoder_hidden, mask, self.encoder_bidirectional)  # (B, H)
        batch = summary.size(0)

        def per_layer(linear: nn.Linear) -> torch.Tensor:
            # (B, L*H) → (B, L, H) → (L, B, H): torch RNNs keep the batch on dim 1 of their state
            return (
                torch.tanh(linear(summary))
                .view(batch, self.layers, self.hidden_size)
                .transpose(0, 1)
                .contiguous()
            )

        return RnnSeq2SeqDecoderCache(
            hidden=per_layer(self.init_hidden),
            cell=per_layer(self.init_cell) if self.is_lstm else None,
            feed=summary.new_zeros(batch, self.output_dim) if self.input_feeding else None,
        )

    def _one_step(self, step_in: torch.Tensor, rnn_state):
        """One decoder RNN step: `(B, E + D)` input → `(B, 1, H)` output and the new state (torch's layout).

        A one-layer decoder calls the cell function (`torch.lstm_cell`, ...) on the module's own weights: the
        same step as `self.rnn` on a length-1 sequence, ≈2.3× faster forward+backward on CPU, because the
        input-feeding loop makes one such call per target token.
        """
        rnn = self.rnn
        if self.layers != 1 or not rnn.bias:
            out, rnn_state = rnn(step_in.unsqueeze(1), rnn_state)
            return out, rnn_state
        weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        if self.is_lstm:
            hidden, cell = torch.lstm_cell(step_in, (rnn_state[0][0], rnn_state[1][0]), *weights)
            return hidden.unsqueeze(1), (hidden.unsqueeze(0), cell.unsqueeze(0))
        if isinstance(rnn, nn.GRU):
            hidden = torch.gru_cell(step_in, rnn_state[0], *weights)
        elif rnn.nonlinearity == "relu":
            hidden = torch.rnn_relu_cell(step_in, rnn_state[0], *weights)
        else:
            hidden = torch.rnn_tanh_cell(step_in, rnn_state[0], *weights)
        return hidden.unsqueeze(1), hidden.unsqueeze(0)

    def _training_loop_functions(self):
        """The step and combine functions of one training pass: a one-layer cell and the combine layer with
        their weight gradients formed once over all steps (`_LoopWeight`); otherwise `_one_step` and `combine`."""
        rnn = self.rnn
        if not (self.training and torch.is_grad_enabled() and self.layers == 1 and rnn.bias):
            return self._one_step, self.combine
        ih, hh = _LoopWeight(rnn.weight_ih_l0), _LoopWeight(rnn.weight_hh_l0)
        b_ih, b_hh = rnn.bias_ih_l0, rnn.bias_hh_l0
        combine = _LoopWeight(self.combine.weight)

        def step(step_in: torch.Tensor, rnn_state):
            if self.is_lstm:
                hidden, cell = rnn_state[0][0], rnn_state[1][0]
                gates = (hh.product(hidden) + b_hh) + (ih.product(step_in) + b_ih)  # as torch.lstm_cell adds
                in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, 1)
                cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
                hidden = torch.sigmoid(out_gate) * torch.tanh(cell)
                return hidden.unsqueeze(1), (hidden.unsqueeze(0), cell.unsqueeze(0))
            hidden = rnn_state[0]
            from_input, from_hidden = ih.product(step_in) + b_ih, hh.product(hidden) + b_hh
            if isinstance(rnn, nn.GRU):
                in_r, in_z, in_n = from_input.chunk(3, 1)
                hid_r, hid_z, hid_n = from_hidden.chunk(3, 1)
                reset, update = torch.sigmoid(hid_r + in_r), torch.sigmoid(hid_z + in_z)
                new = torch.tanh(in_n + hid_n * reset)
                hidden = (hidden - new) * update + new
            else:
                pre = from_hidden + from_input
                hidden = torch.relu(pre) if rnn.nonlinearity == "relu" else torch.tanh(pre)
            return hidden.unsqueeze(1), hidden.unsqueeze(0)

        def combine_layer(x: torch.Tensor) -> torch.Tensor:
            return combine.product(x) + self.combine.bias

        return step, combine_layer

    def forward(
        self,
        decoder_input_ids: torch.LongTensor,
        encoder_hidden: torch.Tensor,
        mask: torch.Tensor,
        state: RnnSeq2SeqDecoderCache,
    ) -> _DecoderSteps:
        """Run the decoder over `decoder_input_ids` (B, T), continuing from `state`."""
        embeds = self.dropout(self.embed_tokens(decoder_input_ids))  # (B, T, E)
        rnn_state = (state.hidden, state.cell) if self.is_lstm else state.hidden
        memory = self.attention.project_memory(encoder_hidden) if self.use_attention else None

        if self.input_feeding:
            # Each step's RNN input needs the previous step's attentional vector: run step by step.
            feed = state.feed
            one_step, combine = self._training_loop_functions()
            steps_out, contexts, weights, attentionals = [], [], [], []
            # unbind, not embeds[:, t]: the backward of T slices allocates and adds T full (B, T, E) zero
            # tensors (quadratic in T); unbind's backward stacks the T step gradients once. Same values.
            for embed_t in embeds.unbind(1):
                step_in = torch.cat([embed_t, feed], dim=-1)  # (B, E + D)
                out, rnn_state = one_step(step_in, rnn_state)  # (B, 1, H)
                context, weight = self.attention(out, memory, mask)  # (B, 1, H), (B, heads, 1, S)
                attentional = torch.tanh(combine(torch.cat([out, context], dim=-1)))  # (B, 1, D)
                feed = attentional.squeeze(1)
                steps_out.append(out)
                contexts.append(context)
                weights.append(weight)
                attentionals.append(attentional)
            states = torch.cat(steps_out, dim=1)  # (B, T, H)
            context_all = torch.cat(contexts, dim=1)  # (B, T, H)
            weights_all = torch.cat(weights, dim=2)  # (B, heads, T, S)
            attentional_all = torch.cat(attentionals, dim=1)  # (B, T, D)
        else:
            feed = None
            states, rnn_state = self.rnn(embeds, rnn_state)  # (B, T, H)
            if self.use_attention:
                context_all, weights_all = self.attention(states, memory, mask)
                attentional_all = torch.tanh(self.combine(torch.cat([states, context_all], dim=-1)))
            else:
                context_all = weights_all = None
                attentional_all = torch.tanh(self.combine(states))  # (B, T, D)

        hidden, cell = rnn_state if self.is_lstm else (rnn_state, None)
        return _DecoderSteps(
            attentional=attentional_all,
            states=states,
            embeds=embeds,
            context=context_all,
            weights=weights_all,
            cache=RnnSeq2SeqDecoderCache(hidden=hidden, cell=cell, feed=feed),
        )


class RnnSeq2SeqForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """RNN encoder–decoder with attention for `generate()` (greedy, sampling, beam search).

    `logits` are unnormalised vocabulary scores, except with `config.copy_mechanism=True`, where they are the
    log-probabilities of the pointer-generator mixture (see [`RnnSeq2SeqConfig`]).
    """

    config_class = RnnSeq2SeqConfig
    main_input_name = "input_ids"
    # The decoder state is a recurrent summary of the prefix: it cannot be rolled back (no assisted decoding).
    _is_stateful = True

    def generate(self, *args, **kwargs):  # noqa: D417 - same arguments as GenerationMixin.generate
        """`GenerationMixin.generate`, refusing assisted decoding with a clear error.

        A recurrent state cannot be rolled back to verify draft tokens. transformers 5.x releases differ in
        whether `_is_stateful` is checked before assisted decoding starts, so the check is made here.
        """
        config = kwargs.get("generation_config") or self.generation_config
        if kwargs.get("assistant_model") is not None or kwargs.get("prompt_lookup_num_tokens") or getattr(
            config, "prompt_lookup_num_tokens", None
        ):
            raise ValueError(
                f"{type(self).__name__} is stateful (its recurrent state cannot be rolled back): assisted decoding "
                "and prompt lookup are not supported; call generate() without assistant_model/prompt_lookup_num_tokens"
            )
        return super().generate(*args, **kwargs)

    def __init__(self, config: RnnSeq2SeqConfig):
        super().__init__(config)
        self.encoder = RnnSeq2SeqEncoder(config)
        self.decoder = RnnSeq2SeqDecoder(config)
        self.lm_head = nn.Linear(self.decoder.output_dim, config.vocab_size)
        hidden = config.hidden_size
        self.copy_gate = nn.Linear(2 * hidden + config.embedding_dim, 1) if config.copy_mechanism else None
        # target → source; transformers ties (and saves once) only what is declared here.
        tied = {}
        if config.tie_embeddings:
            tied["lm_head.weight"] = "decoder.embed_tokens.weight"
        if config.share_encoder_decoder_embeddings:
            tied["encoder.embed_tokens.weight"] = "decoder.embed_tokens.weight"
        self._tied_weights_keys = tied or None
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """No attention KV cache: the decoder state object is created by `forward` itself."""
        return False

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' defaults, plus GRU/RNN weights, which it leaves uninitialised."""
        super()._init_weights(module)
        if isinstance(module, (nn.GRU, nn.RNN)):
            for name, param in module.named_parameters():
                if "weight" in name:
                    init.xavier_uniform_(param)
                elif "bias" in name:
                    init.zeros_(param)

    def get_encoder(self) -> RnnSeq2SeqEncoder:
        """The encoder `generate()` runs once per call."""
        return self.encoder

    def get_decoder(self) -> RnnSeq2SeqDecoder:
        """The recurrent decoder."""
        return self.decoder

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The decoder inputs `forward` builds from `labels` (transformers' hook, as Marian has it)."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def get_input_embeddings(self) -> nn.Embedding:
        """The encoder's token embeddings."""
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the encoder's token embeddings (and the decoder's when they are shared)."""
        self.encoder.embed_tokens = value
        if self.config.share_encoder_decoder_embeddings:
            self.decoder.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        """The vocabulary projection."""
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        """Replace the vocabulary projection."""
        self.lm_head = value

    def _reorder_cache(
        self, cache: RnnSeq2SeqDecoderCache, beam_idx: torch.LongTensor
    ) -> RnnSeq2SeqDecoderCache:
        """Beam search: keep the decoder states of the beams that continue (batch is dim 1 of RNN states)."""
        return cache.index_select(beam_idx)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: RnnSeq2SeqDecoderCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput | tuple:
        """Encode (unless `encoder_outputs` is given) and decode `decoder_input_ids`.

        Args:
            input_ids: `(B, S)` source ids. attention_mask: `(B, S)`, 1 = token, 0 = pad (either side).
            decoder_input_ids: `(B, T)` target inputs; with `cache` only the new tokens. Built from `labels`
                (shifted right behind `decoder_start_token_id`) when missing.
            decoder_attention_mask: accepted for API compatibility and ignored: the decoder is causal, so
                right padding of the target never influences earlier positions (left-padded targets are not
                supported).
            labels: `(B, T)` target ids, -100 = ignore. Gives `loss` (token-level mean cross-entropy).
            encoder_outputs: output of `get_encoder()` (reused by `generate()`).
            cache: decoder state returned by the previous call; `None` starts from the encoder's final state.
            use_cache: return the new decoder state as `cache` (defaults to `config.use_cache`).
            output_attentions: return `cross_attentions = (weights,)` with weights `(B, heads, T, S)`.

        Returns `Seq2SeqLMOutput(loss, logits (B, T, V), cache, cross_attentions, encoder_last_hidden_state)`.
        Raises `ValueError` when neither `decoder_input_ids` nor `labels`, or neither `input_ids` nor
        `encoder_outputs`, are given.
        """
        config = self.config
        use_cache = config.use_cache if use_cache is None else use_cache
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        return_dict = config.return_dict if return_dict is None else return_dict

        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels to the decoder")
            decoder_input_ids = shift_tokens_right(labels, config.pad_token_id, config.decoder_start_token_id)
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("pass input_ids (the source) or encoder_outputs")
            encoder_outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, return_dict=True
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = RnnSeq2SeqEncoderOutput(last_hidden_state=encoder_outputs[0])
        encoder_hidden = encoder_outputs.last_hidden_state  # (B, S, H)
        if attention_mask is None:
            mask = torch.ones(encoder_hidden.shape[:2], dtype=torch.bool, device=encoder_hidden.device)
        else:
            mask = attention_mask.bool()

        state = cache if cache is not None else self.decoder.initial_state(encoder_hidden, mask)
        steps = self.decoder(decoder_input_ids, encoder_hidden, mask, state)
        logits = self.lm_head(self.decoder.dropout(steps.attentional))  # (B, T, V)

        if self.copy_gate is not None:
            source_ids = getattr(encoder_outputs, "source_ids", None)
            source_ids = input_ids if source_ids is None else source_ids
            if source_ids is None:
                raise ValueError(
                    "copy_mechanism needs the source ids: pass input_ids or the encoder's own output"
                )
            logits = self._copy_log_probs(logits, steps, source_ids)

        loss = None
        if labels is not None:
            flat_logits = logits.reshape(-1, logits.size(-1))  # (B*T, V)
            if self.copy_gate is not None:
                loss = F.nll_loss(flat_logits, labels.reshape(-1), ignore_index=-100)
            else:
                loss = F.cross_entropy(flat_logits.float(), labels.reshape(-1), ignore_index=-100)

        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=steps.cache if use_cache else None,
            cross_attentions=(steps.weights,) if output_attentions and steps.weights is not None else None,
            encoder_last_hidden_state=encoder_hidden,
        )
        return output if return_dict else output.to_tuple()

    def _copy_log_probs(
        self, vocab_logits: torch.Tensor, steps: _DecoderSteps, source_ids: torch.Tensor
    ) -> torch.Tensor:
        """log(p_gen · softmax(vocab_logits) + (1 − p_gen) · attention scattered onto the source ids)."""
        gate_in = torch.cat([steps.context, steps.states, steps.embeds], dim=-1)  # (B, T, 2H + E)
        # The mixture is a loss input: float32 even under bf16 autocast (bf16 keeps 3 significant digits).
        p_gen = torch.sigmoid(self.copy_gate(gate_in).float())  # (B, T, 1)
        attention = steps.weights.mean(dim=1).float()  # (B, T, S): one distribution over the source per step
        attention = attention / attention.sum(dim=-1, keepdim=True)  # a bf16 softmax sums to 1 only to ~1e-3
        batch, length, source_len = attention.shape
        index = source_ids.unsqueeze(1).expand(batch, length, source_len)  # (B, T, S)
        vocab_probs = vocab_logits.float().softmax(dim=-1)  # (B, T, V)
        copy_probs = torch.zeros_like(vocab_probs).scatter_add(-1, index, attention)  # (B, T, V)
        mixture = p_gen * vocab_probs + (1 - p_gen) * copy_probs
        # Clamp so tokens with zero probability get a very low (not -inf) score and no NaN gradient.
        return mixture.clamp_min(torch.finfo(mixture.dtype).tiny).log()


__all__ = [
    "RnnSeq2SeqDecoderCache",
    "RnnSeq2SeqEncoderOutput",
    "RnnSeq2SeqForConditionalGeneration",
]
