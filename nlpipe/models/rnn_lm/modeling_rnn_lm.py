"""Recurrent causal language model: embeddings → stacked RNN/LSTM/GRU → next-token scores.

The recurrent state *is* the cache. `forward` takes an incoming state (`cache=`) and returns the final
one, which serves two users:

- `generate()`: after the prompt, only the newest token is fed with the carried state (O(1) work per
  token); beam search reorders the state through `_reorder_cache`.
- training over a long stream (truncated BPTT): pass the previous chunk's detached state as `cache`.

State layout is what `nn.LSTM` / `nn.GRU` / `nn.RNN` use, batch on dim 1: LSTM `(h, c)` with each
`(num_layers, B, hidden_size)`, GRU/RNN a single `h` tensor of that shape.

Regularization: `variational_dropout` (one mask per sequence, reused at every step) and `weight_dropout`
(DropConnect on the recurrent weights) act in training only. They need dropout between the layers and on
a weight matrix, which the fused multi-layer `nn.LSTM` cannot do, so training with either runs the layers one
at a time through `torch.func.functional_call` on the same parameters (`rnn.weight_hh_l0`, ...): the saved
weights, evaluation, generation and export are those of the ordinary fused stack.

Padding: positions with `attention_mask == 0` are skipped, i.e. the state passes through them unchanged
(so a left-padded prompt continues exactly like the unpadded one); their outputs are zeros and their
logits meaningless (give them label -100).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_rnn_lm import RnnLmConfig

RNN_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

# Copied from nlpipe.models.rnn_tagger.modeling_rnn_tagger.uniform_mask_dropout

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


# LSTM: (h, c); GRU / RNN: h. Every tensor is (num_layers, B, hidden_size).
RecurrentState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class RnnLmPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by the recurrent language models."""

    config_class = RnnLmConfig
    base_model_prefix = "rnn_lm"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one module; GRU/RNN are done here because transformers 5 only covers LSTM.

        The `transformers.initialization` helpers skip tensors already loaded from a checkpoint.
        """
        super()._init_weights(module)
        if isinstance(module, (nn.GRU, nn.RNN)):
            for name, param in module.named_parameters():
                if name.startswith("weight_hh"):
                    # Orthogonal recurrent matrices keep the state's norm stable over many steps.
                    init.orthogonal_(param)
                elif name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif "bias" in name:
                    init.zeros_(param)


class RnnForCausalLM(RnnLmPreTrainedModel, GenerationMixin):
    """A recurrent next-token model returning `CausalLMOutputWithPast(loss, logits, cache=state)`."""

    # Tied only when config.tie_word_embeddings is True (transformers reads the flag).
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}
    # The state cannot be rolled back to an earlier position: transformers refuses assisted decoding.
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

    def __init__(self, config: RnnLmConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.rnn = RNN_CLASSES[config.cell](
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            # nn.RNN* applies this between layers only (and warns when there is a single layer).
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        # Shapes only (on the meta device, never registered): what functional_call runs one layer of self.rnn as.
        self._layer_shapes = [
            RNN_CLASSES[config.cell](input_size=config.embedding_dim if layer == 0 else config.hidden_size,
                                     hidden_size=config.hidden_size, batch_first=True, device="meta")
            for layer in range(config.num_layers)
        ] if config.variational_dropout or config.weight_dropout else []
        head_in = config.hidden_size
        self.output_projection = None
        if config.tie_word_embeddings and config.embedding_dim != config.hidden_size:
            # A tied output layer has the embedding's shape (vocab, embedding_dim).
            self.output_projection = nn.Linear(config.hidden_size, config.embedding_dim, bias=False)
            head_in = config.embedding_dim
        self.lm_head = nn.Linear(head_in, config.vocab_size)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """Tell `generate()` not to build an attention `DynamicCache`: our cache is the recurrent state."""
        return False

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def _reorder_cache(self, cache: RecurrentState, beam_idx: torch.LongTensor) -> RecurrentState:
        """Return the state of the beams beam search keeps: row `i` of the result is row `beam_idx[i]`.

        Called by transformers' beam search after every step (the batch is on dim 1 of each tensor).
        """
        if isinstance(cache, tuple):
            return tuple(s.index_select(1, beam_idx.to(s.device)) for s in cache)
        return cache.index_select(1, beam_idx.to(cache.device))

    def _zero_state(self, batch_size: int, like: torch.Tensor) -> RecurrentState:
        """The initial state of `batch_size` sequences: zeros, as `nn.LSTM` uses when given none."""
        h = like.new_zeros(self.config.num_layers, batch_size, self.config.hidden_size)
        return (h, h.clone()) if self.config.cell == "lstm" else h

    def run_rnn(
        self, inputs: torch.Tensor, attention_mask: torch.Tensor | None, state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """Run the recurrent layers over (B, T, E) inputs from `state` (zeros when None).

        Returns the (B, T, H) outputs of the last layer and the final state. Positions where
        `attention_mask` is 0 leave the state unchanged and get zero outputs, wherever they are.
        """
        if attention_mask is None or bool(attention_mask.all()):
            return self._recur(inputs, None, state)
        keep = attention_mask.bool()  # (B, T)
        lengths = keep.sum(dim=1)
        batch_size, seq_len = keep.shape
        # Move each row's real tokens to the front (in order) and pack them: the recurrence then never
        # sees a pad, so padding on the left, right or in between all leave the state untouched.
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # (B, T)
        gather_idx = order.unsqueeze(-1).expand_as(inputs)  # (B, T, E)
        compact = inputs.gather(1, gather_idx)
        # pack_padded_sequence refuses empty rows: run them on one (pad) token and restore their state below.
        compact_out, final_state = self._recur(compact, lengths.clamp(min=1), state)  # (B, T, H)
        scatter_idx = order.unsqueeze(-1).expand_as(compact_out)
        outputs = torch.zeros_like(compact_out).scatter(1, scatter_idx, compact_out)
        outputs = outputs * keep.unsqueeze(-1).to(outputs.dtype)
        empty = lengths == 0
        if bool(empty.any()):
            start = state if state is not None else self._zero_state(batch_size, inputs)
            pick = empty.view(1, batch_size, 1)  # broadcast over (num_layers, B, H)
            if isinstance(final_state, tuple):
                final_state = tuple(torch.where(pick, s0, s1) for s0, s1 in zip(start, final_state, strict=True))
            else:
                final_state = torch.where(pick, start, final_state)
        return outputs, final_state

    def _recur(
        self, inputs: torch.Tensor, lengths: torch.Tensor | None, state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """The stacked recurrence over (B, T, E) inputs whose rows hold `lengths` real steps at the front
        (None: all T). Outputs past a row's length are zeros."""
        if self.training and self._layer_shapes:
            return self._recur_layer_by_layer(inputs, lengths, state)
        if lengths is None:
            return self.rnn(inputs, state)
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, final_state = self.rnn(packed, state)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=inputs.shape[1])
        return outputs, final_state

    def _recur_layer_by_layer(
        self, inputs: torch.Tensor, lengths: torch.Tensor | None, state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """Training with variational or weight dropout: `self.rnn`'s layers one at a time, with DropConnect on
        each hidden-to-hidden matrix and a per-sequence (locked) dropout mask between layers."""
        config = self.config
        hidden, finals = inputs, []
        for layer, shape in enumerate(self._layer_shapes):
            weights = {f"{name}_l0": getattr(self.rnn, f"{name}_l{layer}")
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            if config.weight_dropout:
                weights["weight_hh_l0"] = uniform_mask_dropout(weights["weight_hh_l0"], config.weight_dropout, True)
            layer_state = None
            if state is not None:
                layer_state = (tuple(s[layer : layer + 1] for s in state) if isinstance(state, tuple)
                               else state[layer : layer + 1])
            if lengths is None:
                hidden, final = functional_call(shape, weights, (hidden, layer_state))
            else:
                packed = pack_padded_sequence(hidden, lengths.cpu(), batch_first=True, enforce_sorted=False)
                packed_out, final = functional_call(shape, weights, (packed, layer_state))
                hidden, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=inputs.shape[1])
            if layer < config.num_layers - 1:
                hidden = self._between_layers(hidden)
            finals.append(final)
        if isinstance(finals[0], tuple):
            return hidden, tuple(torch.cat(parts, dim=0) for parts in zip(*finals, strict=True))
        return hidden, torch.cat(finals, dim=0)

    def _between_layers(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dropout between stacked layers (only on the layer-by-layer path; nn.RNN* does its own otherwise)."""
        return self._drop(hidden, self.config.dropout)

    def _drop(self, hidden: torch.Tensor, rate: float) -> torch.Tensor:
        """Dropout on (B, T, D): one mask per sequence (all T steps) with variational_dropout, else per position."""
        if not self.training or not rate:
            return hidden
        if not self.config.variational_dropout:
            return uniform_mask_dropout(hidden, rate, training=True)
        # One mask per sequence: drop the (B, 1, D) of ones and broadcast it over the T steps.
        return hidden * uniform_mask_dropout(hidden.new_ones(hidden.shape[0], 1, hidden.shape[2]), rate, True)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: RecurrentState | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Score every next token of a (B, T) batch, continuing from `cache` when given.

        Args:
            input_ids: (B, T) token ids (or give `inputs_embeds` (B, T, embedding_dim) instead).
            attention_mask: (B, T) or longer — `generate()` passes the mask of the whole sequence so far,
                of which the last T columns are used. 0 marks padding, which leaves the state unchanged.
            labels: (B, T) ids, normally equal to `input_ids`; shifted here so position t predicts t+1.
                -100 is ignored.
            cache: the state returned by the previous call (LSTM `(h, c)`, GRU/RNN `h`; batch on dim 1).
            use_cache: return the final state as `cache` (defaults to `config.use_cache`).
            return_dict: return a `CausalLMOutputWithPast` (default) or a plain tuple.
            kwargs: `num_items_in_batch` (sum the loss and divide by it, for gradient accumulation);
                other keys `generate()` passes are ignored.

        Returns:
            `CausalLMOutputWithPast` with `loss` (when `labels` are given), `logits` (B, T, vocab_size)
            and `cache` (the final state, or None when `use_cache` is False).

        Raises:
            ValueError: when both or neither of `input_ids` and `inputs_embeds` are given.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("RnnForCausalLM.forward: pass exactly one of input_ids and inputs_embeds")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return_dict = self.config.return_dict if return_dict is None else return_dict

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, E)
        seq_len = inputs_embeds.shape[1]
        if attention_mask is not None:
            # With a cache generate() feeds only the newest token but the full-length mask.
            attention_mask = attention_mask[:, -seq_len:].to(inputs_embeds.device)

        hidden = self._drop(inputs_embeds, self.config.embedding_dropout)
        hidden, state = self.run_rnn(hidden, attention_mask, cache)  # (B, T, H)
        hidden = self._drop(hidden, self.config.dropout)
        if self.output_projection is not None:
            hidden = self.output_projection(hidden)  # (B, T, E)
        logits = self.lm_head(hidden)  # (B, T, V)

        loss = None
        if labels is not None:
            # Position t predicts token t+1: drop the last prediction and the first label.
            shift_logits = logits[:, :-1, :].reshape(-1, logits.shape[-1]).float()  # (B*(T-1), V)
            shift_labels = labels[:, 1:].reshape(-1).to(logits.device)  # (B*(T-1),)
            num_items = kwargs.get("num_items_in_batch")
            if num_items is None:
                loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
            else:
                loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
                loss = loss / num_items

        cache_out = state if use_cache else None
        if not return_dict:
            return tuple(v for v in (loss, logits, cache_out) if v is not None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache_out)


__all__ = ["RnnForCausalLM", "RnnLmPreTrainedModel"]
