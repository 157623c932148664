"""RnnForCausalLM: stateful generate() against full-prefix recomputation, brute-force beam optima,
padding, state carrying, tying, fresh-process reloads and a tiny training run."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig, AutoModelForCausalLM

from nlpipe.models.auto_registration import register_all
from nlpipe.models.rnn_lm.configuration_rnn_lm import RnnLmConfig
from nlpipe.models.rnn_lm.modeling_rnn_lm import RnnForCausalLM, uniform_mask_dropout

REPO_ROOT = Path(__file__).resolve().parents[2]
CELLS = ["lstm", "gru", "rnn"]
VOCAB = 30


def make_model(cell: str = "lstm", seed: int = 0, **overrides) -> RnnForCausalLM:
    """A tiny model in eval mode; initialised from `seed` so every test sees the same weights."""
    kwargs = dict(
        vocab_size=VOCAB, embedding_dim=16, hidden_size=16, cell=cell, num_layers=2, dropout=0.1,
        embedding_dropout=0.1,
    )
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = RnnForCausalLM(RnnLmConfig(**kwargs))
    # Untrained tiny models have near-uniform outputs; sharper weights make argmax/beam ties impossible.
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    return model.eval()


def prompts(batch: int, length: int, seed: int = 1, low: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, VOCAB, (batch, length), generator=gen)


@torch.no_grad()
def greedy_by_recomputation(model: RnnForCausalLM, input_ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Reference decoder: rerun the whole prefix without a cache and take the argmax of the last position."""
    ids = input_ids
    for _ in range(steps):
        logits = model(ids, use_cache=False).logits  # (B, T, V)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@torch.no_grad()
def sequence_log_prob(model: RnnForCausalLM, prompt: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """Sum of log p(continuation | prompt) for (B, P) prompts and (B, L) continuations, no cache."""
    ids = torch.cat([prompt, continuation], dim=1)
    log_probs = model(ids, use_cache=False).logits.log_softmax(-1)  # (B, P+L, V)
    start = prompt.shape[1]
    picked = log_probs[:, start - 1 : -1].gather(-1, continuation.unsqueeze(-1)).squeeze(-1)  # (B, L)
    return picked.sum(-1)


# ---------------------------------------------------------------- greedy decoding


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_generate_equals_full_prefix_recomputation(cell: str) -> None:
    model = make_model(cell)
    input_ids = prompts(3, 5)
    expected = greedy_by_recomputation(model, input_ids, 12)
    with_cache = model.generate(input_ids, max_new_tokens=12, do_sample=False)
    without_cache = model.generate(input_ids, max_new_tokens=12, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, expected)
    assert torch.equal(without_cache, expected)
    # A constant continuation would make the comparison weak: the model must actually vary its output.
    assert len(set(expected[:, 5:].flatten().tolist())) > 2


def test_cached_generation_feeds_one_token_per_step() -> None:
    model = make_model("lstm")
    seen_lengths: list[int] = []
    hook = model.embed_tokens.register_forward_hook(lambda m, args, out: seen_lengths.append(args[0].shape[1]))
    try:
        model.generate(prompts(2, 7), max_new_tokens=5, do_sample=False)
        assert seen_lengths == [7, 1, 1, 1, 1]
        seen_lengths.clear()
        model.generate(prompts(2, 7), max_new_tokens=5, do_sample=False, use_cache=False)
        assert seen_lengths == [7, 8, 9, 10, 11]
    finally:
        hook.remove()


def test_generate_stops_at_eos() -> None:
    model = make_model("gru")
    input_ids = prompts(1, 4)
    free = model.generate(input_ids, max_new_tokens=12, do_sample=False)
    eos = int(free[0, 6])  # the third generated token
    model.generation_config.eos_token_id = eos
    stopped = model.generate(input_ids, max_new_tokens=12, do_sample=False)
    first_eos = free[0, 4:].tolist().index(eos) + 4
    assert stopped[0].tolist() == free[0, : first_eos + 1].tolist()


# ---------------------------------------------------------------- beam search


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_beams", [3, 4])
def test_beam_search_with_cache_equals_recomputation(cell: str, num_beams: int) -> None:
    model = make_model(cell)
    input_ids = prompts(2, 4)
    seen_beam_idx: list[torch.Tensor] = []
    reorder = model._reorder_cache

    def recording_reorder(cache, beam_idx):
        seen_beam_idx.append(beam_idx.clone())
        return reorder(cache, beam_idx)

    # generate() looks the method up on the instance, so this also proves it is the hook beam search calls.
    model._reorder_cache = recording_reorder
    kwargs = dict(
        max_new_tokens=8, num_beams=num_beams, num_return_sequences=num_beams, do_sample=False,
        return_dict_in_generate=True, output_scores=True,
    )
    cached = model.generate(input_ids, **kwargs)
    calls_with_cache = len(seen_beam_idx)
    recomputed = model.generate(input_ids, use_cache=False, **kwargs)

    assert calls_with_cache >= 7  # one reorder per step after the first
    assert len(seen_beam_idx) == calls_with_cache  # no cache → nothing to reorder
    identity = torch.arange(2 * num_beams)
    assert any(not torch.equal(idx, identity) for idx in seen_beam_idx), "beams never reordered: weak test"
    assert torch.equal(cached.sequences, recomputed.sequences)
    torch.testing.assert_close(cached.sequences_scores, recomputed.sequences_scores, atol=1e-5, rtol=1e-5)
    # Each returned hypothesis' score is its true log-probability divided by the number of generated
    # tokens (length_penalty=1; transformers 5 counts only the new tokens).
    new_tokens = cached.sequences[:, 4:]
    true_scores = sequence_log_prob(model, input_ids.repeat_interleave(num_beams, 0), new_tokens)
    true_scores = true_scores / new_tokens.shape[1]
    torch.testing.assert_close(cached.sequences_scores, true_scores, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("use_cache", [True, False])
def test_wide_beam_finds_exhaustive_optimum(cell: str, use_cache: bool) -> None:
    vocab, steps = 5, 3
    model = make_model(cell, vocab_size=vocab)
    input_ids = torch.tensor([[1, 2, 3], [4, 0, 2]])
    # vocab**(steps-1) beams keep every prefix alive until the last step: the search is exhaustive.
    out = model.generate(
        input_ids, max_new_tokens=steps, num_beams=vocab ** (steps - 1), length_penalty=0.0, do_sample=False,
        use_cache=use_cache, return_dict_in_generate=True, output_scores=True,
    )
    candidates = torch.tensor(list(itertools.product(range(vocab), repeat=steps)))  # (V**L, L)
    for row in range(2):
        prompt = input_ids[row : row + 1].expand(len(candidates), -1)
        scores = sequence_log_prob(model, prompt, candidates)
        best = int(scores.argmax())
        assert out.sequences[row, 3:].tolist() == candidates[best].tolist()
        torch.testing.assert_close(out.sequences_scores[row], scores[best], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- sampling


SAMPLING_SETTINGS = [
    dict(temperature=0.7),
    dict(top_k=5),
    dict(top_p=0.8),
    dict(repetition_penalty=1.5),
    dict(temperature=1.3, top_k=8, top_p=0.9, repetition_penalty=1.2),
]


@pytest.mark.parametrize("settings", SAMPLING_SETTINGS, ids=lambda s: "-".join(s))
def test_sampling_is_reproducible_under_manual_seed(settings: dict) -> None:
    model = make_model("lstm")
    input_ids = prompts(4, 3)

    def sample(seed: int, **extra) -> torch.Tensor:
        torch.manual_seed(seed)
        return model.generate(input_ids, do_sample=True, max_new_tokens=12, **settings, **extra)

    first = sample(0)
    assert torch.equal(first, sample(0))
    # Same random draws in the same order: the cache must not change the distribution sampled from.
    assert torch.equal(first, sample(0, use_cache=False))
    assert not torch.equal(first, sample(1))


def test_sampling_matches_hand_written_sampler() -> None:
    model = make_model("gru")
    input_ids = prompts(3, 4)
    temperature, top_k, steps = 0.8, 6, 10
    torch.manual_seed(123)
    generated = model.generate(input_ids, do_sample=True, max_new_tokens=steps, temperature=temperature, top_k=top_k)

    torch.manual_seed(123)
    ids = input_ids
    with torch.no_grad():
        for _ in range(steps):
            scores = model(ids, use_cache=False).logits[:, -1] / temperature  # (B, V)
            kth = scores.topk(top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
            ids = torch.cat([ids, torch.multinomial(scores.softmax(-1), 1)], dim=1)
    assert torch.equal(generated, ids)


def test_top_k_one_is_greedy() -> None:
    model = make_model("rnn")
    input_ids = prompts(2, 4)
    torch.manual_seed(0)
    sampled = model.generate(input_ids, do_sample=True, top_k=1, max_new_tokens=10)
    assert torch.equal(sampled, greedy_by_recomputation(model, input_ids, 10))


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("cell", CELLS)
def test_left_padded_batch_generates_like_each_prompt_alone(cell: str) -> None:
    pad = 0
    model = make_model(cell, pad_token_id=pad)
    rows = [prompts(1, n, seed=n)[0] for n in (3, 7, 5)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad)
    attention_mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = row
        attention_mask[i, width - len(row) :] = 1

    for use_cache in (True, False):
        batched = model.generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=10, do_sample=False, use_cache=use_cache
        )
        for i, row in enumerate(rows):
            alone = model.generate(row.unsqueeze(0), max_new_tokens=10, do_sample=False)
            assert batched[i, width:].tolist() == alone[0, len(row) :].tolist()


@pytest.mark.parametrize("cell", CELLS)
def test_padding_anywhere_leaves_the_state_unchanged(cell: str) -> None:
    model = make_model(cell)
    real = prompts(1, 4)
    start = model(prompts(1, 3, seed=9)).cache  # a non-zero incoming state
    with torch.no_grad():
        expected = model(real, cache=start)
        for keep in ([0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 0, 1, 0, 1, 1]):
            mask = torch.tensor([keep])
            padded = torch.full((1, 6), 7)
            padded[mask.bool()] = real[0]
            out = model(padded, attention_mask=mask, cache=start)
            for got, want in zip(_tensors(out.cache), _tensors(expected.cache), strict=True):
                torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(out.logits[mask.bool()], expected.logits[0], atol=1e-5, rtol=1e-5)
        # A row that is all padding keeps its incoming state.
        out = model(torch.full((1, 3), 7), attention_mask=torch.zeros(1, 3, dtype=torch.long), cache=start)
        for got, want in zip(_tensors(out.cache), _tensors(start), strict=True):
            assert torch.equal(got, want)


def _tensors(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


# ---------------------------------------------------------------- carrying the state (truncated BPTT)


@pytest.mark.parametrize("cell", CELLS)
def test_state_carried_across_chunks_equals_one_pass(cell: str) -> None:
    model = make_model(cell)
    stream = prompts(2, 20)
    with torch.no_grad():
        whole = model(stream)
        first = model(stream[:, :7])
        second = model(stream[:, 7:], cache=first.cache)
        fresh_second = model(stream[:, 7:])
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), whole.logits, atol=1e-5, rtol=1e-5)
    for got, want in zip(_tensors(second.cache), _tensors(whole.cache), strict=True):
        assert got.shape == (2, 2, 16)  # (num_layers, B, hidden_size): batch on dim 1 like nn.LSTM
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert isinstance(whole.cache, tuple) == (cell == "lstm")
    # Without the carried state the second chunk is scored differently: the state matters.
    assert not torch.allclose(fresh_second.logits, second.logits, atol=1e-3)


def test_state_gradient_flows_into_carried_state_only_when_not_detached() -> None:
    model = make_model("lstm").train()
    stream = prompts(2, 12)
    first = model(stream[:, :6])
    detached = tuple(s.detach() for s in first.cache)
    loss = model(stream[:, 6:], labels=stream[:, 6:], cache=detached).loss
    loss.backward()  # must not try to backpropagate into the first chunk's graph
    assert model.rnn.weight_hh_l0.grad is not None


def test_use_cache_false_returns_no_state_and_tuple_output() -> None:
    model = make_model("gru")
    ids = prompts(2, 5)
    assert model(ids, use_cache=False).cache is None
    loss, logits, state = model(ids, labels=ids, return_dict=False)
    assert logits.shape == (2, 5, VOCAB) and state.shape == (2, 2, 16) and loss.ndim == 0


def test_inputs_embeds_equal_input_ids() -> None:
    model = make_model("lstm")
    ids = prompts(2, 5)
    with torch.no_grad():
        by_ids = model(ids).logits
        by_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    assert torch.equal(by_ids, by_embeds)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(ids, inputs_embeds=model.get_input_embeddings()(ids))


# ---------------------------------------------------------------- loss and training


def test_loss_is_shifted_cross_entropy_ignoring_minus_100() -> None:
    model = make_model("rnn")
    ids = prompts(2, 6)
    labels = ids.clone()
    labels[0, 3] = -100
    out = model(ids, labels=labels)
    logits = out.logits
    terms = [
        -logits[b, t].log_softmax(-1)[labels[b, t + 1]]
        for b in range(2)
        for t in range(5)
        if labels[b, t + 1] != -100
    ]
    torch.testing.assert_close(out.loss, torch.stack(terms).mean())
    summed = model(ids, labels=labels, num_items_in_batch=4).loss
    torch.testing.assert_close(summed, torch.stack(terms).sum() / 4)


@pytest.mark.parametrize("cell", CELLS)
def test_adam_drives_loss_down_on_repetitive_text(cell: str) -> None:
    model = make_model(cell, dropout=0.0, embedding_dropout=0.0).train()
    ids = torch.tensor([[1, 2, 3, 4, 5] * 6, [5, 4, 3, 2, 1] * 6])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


def test_stateful_model_refuses_assisted_decoding() -> None:
    model = make_model("lstm")
    with pytest.raises(ValueError, match="stateful"):
        model.generate(prompts(1, 3), assistant_model=make_model("lstm"), max_new_tokens=3)
    with pytest.raises(ValueError, match="stateful"):
        model.generate(prompts(1, 3), prompt_lookup_num_tokens=2, max_new_tokens=3)


# ---------------------------------------------------------------- tying, init, config, save/load


def test_tied_embeddings_share_storage_with_projection_when_sizes_differ() -> None:
    tied = make_model("lstm", embedding_dim=8, hidden_size=16)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert tied.output_projection is not None and tied.output_projection.weight.shape == (8, 16)
    with torch.no_grad():
        tied.embed_tokens.weight[3, 0] = 42.0
    assert tied.lm_head.weight[3, 0].item() == 42.0

    same = make_model("gru", embedding_dim=16, hidden_size=16)
    assert same.lm_head.weight is same.embed_tokens.weight and same.output_projection is None

    untied = make_model("gru", embedding_dim=8, hidden_size=16, tie_word_embeddings=False)
    assert untied.output_projection is None
    assert untied.lm_head.weight.shape == (VOCAB, 16)
    assert untied.lm_head.weight.data_ptr() != untied.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_gru_and_rnn_weights_are_initialised_by_from_config(cell: str) -> None:
    register_all()
    config = RnnLmConfig(vocab_size=VOCAB, embedding_dim=16, hidden_size=16, cell=cell, num_layers=2)
    model = AutoModelForCausalLM.from_config(config)
    assert isinstance(model, RnnForCausalLM)
    for name, param in model.rnn.named_parameters():
        assert torch.isfinite(param).all(), name
        if name.startswith("weight"):
            assert param.std() > 1e-2, name
        if name.startswith("weight_hh"):
            # Orthogonal columns: our _init_weights ran (torch's default uniform init is not orthogonal).
            torch.testing.assert_close(param.T @ param, torch.eye(16), atol=1e-4, rtol=1e-4)


def test_config_validation_and_registration() -> None:
    # transformers' strict configs wrap the ValueError of validate_architecture.
    with pytest.raises(StrictDataclassClassValidationError, match="cell must be one of"):
        RnnLmConfig(cell="transformer")
    with pytest.raises(StrictDataclassClassValidationError, match="dropout must be in"):
        RnnLmConfig(dropout=1.5)
    register_all()
    config = AutoConfig.for_model("nlpipe_rnn_lm", vocab_size=50, cell="gru")
    assert isinstance(config, RnnLmConfig) and config.cell == "gru" and config.vocab_size == 50


def test_save_and_reload_in_a_fresh_process_gives_identical_logits(tmp_path: Path) -> None:
    variants = {
        "lstm_tied_projection": dict(cell="lstm", embedding_dim=8, hidden_size=16),
        "gru_untied": dict(cell="gru", tie_word_embeddings=False),
        "rnn_tied": dict(cell="rnn", pad_token_id=0, eos_token_id=2),
    }
    ids = prompts(2, 6)
    torch.save(ids, tmp_path / "ids.pt")
    expected = {}
    for name, overrides in variants.items():
        model = make_model(overrides.pop("cell"), **overrides)
        model.save_pretrained(tmp_path / name)
        with torch.no_grad():
            expected[name] = model(ids).logits
    script = textwrap.dedent(
        """
        import json, sys, torch
        from pathlib import Path
        from transformers import AutoModelForCausalLM
        from nlpipe.models.auto_registration import register_all

        register_all()
        root = Path(sys.argv[1])
        ids = torch.load(root / "ids.pt")
        report = {}
        for name in json.loads(sys.argv[2]):
            model = AutoModelForCausalLM.from_pretrained(root / name)
            with torch.no_grad():
                torch.save(model(ids).logits, root / f"{name}.logits.pt")
            report[name] = {
                "class": type(model).__name__,
                "tied": model.lm_head.weight is model.embed_tokens.weight,
                "training": model.training,
            }
        print(json.dumps(report))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), json.dumps(list(variants))],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name in variants:
        assert report[name]["class"] == "RnnForCausalLM"
        assert report[name]["tied"] == (name != "gru_untied")
        assert report[name]["training"] is False
        # Kernels chosen per process may reorder float32 sums (~1e-8); a lost or untied weight moves logits by >1e-3.
        torch.testing.assert_close(torch.load(tmp_path / f"{name}.logits.pt"), expected[name], rtol=1e-5, atol=1e-6,
                                   msg=name)
    saved = json.loads((tmp_path / "rnn_tied" / "config.json").read_text())
    assert saved["model_type"] == "nlpipe_rnn_lm" and saved["cell"] == "rnn" and saved["eos_token_id"] == 2


# Variational (locked) dropout and weight dropout: training runs self.rnn's layers one at a time.


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = prompts(3, 9)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    mask[1, 6:] = 0  # right padding
    return ids, mask


@pytest.mark.parametrize(("cell", "padded"), itertools.product(CELLS, [False, True]))
def test_layer_by_layer_training_path_equals_the_fused_stack(cell: str, padded: bool) -> None:
    # With every rate at 0 the two paths compute the same function: outputs, final state and gradients.
    fused = make_model(cell, dropout=0.0, embedding_dropout=0.0).train()
    layered = make_model(cell, dropout=0.0, embedding_dropout=0.0, variational_dropout=True).train()
    assert layered.state_dict().keys() == fused.state_dict().keys()  # same weights file either way
    ids, mask = _padded_batch()
    with torch.no_grad():
        state = fused(input_ids=prompts(3, 4, seed=5)).cache  # a carried (detached) state, as in truncated BPTT
    outputs = [m(input_ids=ids, attention_mask=mask if padded else None, labels=ids, cache=state)
               for m in (fused, layered)]
    torch.testing.assert_close(outputs[1].logits, outputs[0].logits, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(_tensors(outputs[1].cache), _tensors(outputs[0].cache), strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for out in outputs:
        out.loss.backward()
    for (name, p_fused), p_layered in zip(fused.named_parameters(), layered.parameters(), strict=True):
        torch.testing.assert_close(p_layered.grad, p_fused.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_weight_dropout_is_dropconnect_on_each_recurrent_matrix() -> None:
    model = make_model("lstm", dropout=0.0, embedding_dropout=0.0, weight_dropout=0.5).train()
    ids = prompts(2, 6)
    torch.manual_seed(7)
    out = model(input_ids=ids).logits
    # Reference: the fused stack with each weight_hh replaced by the same dropped matrix (same RNG draws, layer order).
    reference = make_model("lstm", dropout=0.0, embedding_dropout=0.0).eval()
    torch.manual_seed(7)
    with torch.no_grad():
        for layer in range(2):
            weight = getattr(reference.rnn, f"weight_hh_l{layer}")
            weight.copy_(uniform_mask_dropout(weight, 0.5, training=True))
    torch.testing.assert_close(out, reference(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert (model.rnn.weight_hh_l0 != 0).all()  # the parameters themselves are untouched
    out.sum().backward()
    assert model.rnn.weight_hh_l0.grad is not None and model.rnn.weight_hh_l0.grad.abs().sum() > 0


def test_variational_dropout_uses_one_mask_per_sequence() -> None:
    seen: list[torch.Tensor] = []
    for variational in (True, False):
        model = make_model("gru", dropout=0.5, embedding_dropout=0.0, variational_dropout=variational).train()
        hook = model.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
        torch.manual_seed(3)
        model(input_ids=prompts(4, 12))
        hook.remove()
    locked, per_position = (h == 0 for h in seen)  # (B, T, H): where the output dropout zeroed a feature
    assert (locked == locked[:, :1]).all()  # the same features dropped at every step of a sequence
    assert locked.any() and not (locked == locked[:1]).all()  # but a different mask for each sequence
    assert not (per_position == per_position[:, :1]).all()  # the ordinary dropout redraws at every step


def test_regularized_model_evaluates_and_generates_like_the_plain_one() -> None:
    plain = make_model("lstm")
    regularized = make_model("lstm", variational_dropout=True, weight_dropout=0.5)
    regularized.load_state_dict(plain.state_dict())
    ids = prompts(2, 5)
    torch.testing.assert_close(regularized(input_ids=ids).logits, plain(input_ids=ids).logits)
    assert torch.equal(regularized.generate(ids, max_new_tokens=6, do_sample=False),
                       plain.generate(ids, max_new_tokens=6, do_sample=False))


def test_weight_dropout_out_of_range_is_refused() -> None:
    with pytest.raises(StrictDataclassClassValidationError, match="weight_dropout must be in"):
        RnnLmConfig(weight_dropout=1.0)
