"""RNN encoder–decoder: generation against full-prefix recomputation and exhaustive search, padding,
attention weights, training, save/load in a fresh process."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from nlpipe.models.rnn_seq2seq.configuration_rnn_seq2seq import RnnSeq2SeqConfig
from nlpipe.models.rnn_seq2seq.modeling_rnn_seq2seq import (
    RnnSeq2SeqForConditionalGeneration,
    final_encoder_state,
    shift_tokens_right,
)

PAD, BOS, EOS, START = 0, 1, 2, 1
VOCAB = 20
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """These models are tiny: a second OpenMP thread only adds spin-waiting, which on a busy shared machine
    made a training step 50x slower. Restored afterwards so other tests keep their setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_model(seed: int = 0, vocab_size: int = VOCAB, **overrides) -> RnnSeq2SeqForConditionalGeneration:
    """A tiny model in eval mode (dropout 0 unless overridden)."""
    settings = dict(
        vocab_size=vocab_size,
        embedding_dim=12,
        hidden_size=16,
        dropout=0.0,
        attention_heads=4,
        initializer_range=0.2,  # larger than the default: peaked, varied predictions, no near-ties
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=START,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    return RnnSeq2SeqForConditionalGeneration(RnnSeq2SeqConfig(**settings)).eval()


def source_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sources of different lengths, right-padded."""
    ids = torch.tensor([[5, 9, 3, 14, 7, 11], [8, 4, 17, 0, 0, 0]])
    return ids, (ids != PAD).long()


def greedy_by_recomputation(model, input_ids, attention_mask, max_new_tokens, no_repeat_ngram_size=0):
    """Reference greedy decoding: the full prefix is re-run through the model at every step, no cache."""
    prefix = torch.full((input_ids.size(0), 1), START)
    finished = torch.zeros(input_ids.size(0), dtype=torch.bool)
    for _ in range(max_new_tokens):
        with torch.no_grad():
            out = model(
                input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=prefix, use_cache=False
            )
        logits = out.logits[:, -1].clone()
        if no_repeat_ngram_size == 2:
            for row in range(prefix.size(0)):
                seq = prefix[row].tolist()
                for a, b in itertools.pairwise(seq):
                    if a == seq[-1]:
                        logits[row, b] = float("-inf")
        next_tokens = torch.where(finished, torch.tensor(PAD), logits.argmax(-1))
        prefix = torch.cat([prefix, next_tokens[:, None]], dim=1)
        finished |= next_tokens == EOS
        if finished.all():
            break
    return prefix


CASES = {
    "none-gru-gru": dict(attention="none", encoder_cell="gru", decoder_cell="gru"),
    "additive-lstm-gru-feed": dict(attention="additive", encoder_cell="lstm", decoder_cell="gru"),
    "dot-gru-lstm-2layers": dict(
        attention="dot",
        encoder_cell="gru",
        decoder_cell="lstm",
        encoder_layers=2,
        decoder_layers=2,
        input_feeding=False,
    ),
    "general-rnn-rnn-unidirectional": dict(
        attention="general", encoder_cell="rnn", decoder_cell="rnn", encoder_bidirectional=False
    ),
    "multihead-lstm-lstm": dict(attention="multihead", encoder_cell="lstm", decoder_cell="lstm"),
    "hard-additive-gru-rnn": dict(
        attention="additive",
        attention_mode="hard",
        hard_attention_k=2,
        encoder_cell="gru",
        decoder_cell="rnn",
    ),
    "hard-multihead-gru-gru": dict(
        attention="multihead", attention_mode="hard", hard_attention_k=1, input_feeding=False
    ),
    "copy-general-lstm-gru-tied": dict(
        attention="general",
        copy_mechanism=True,
        encoder_cell="lstm",
        decoder_cell="gru",
        tie_embeddings=True,
        share_encoder_decoder_embeddings=True,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_incremental_greedy_equals_full_prefix_recomputation(case):
    model = make_model(**CASES[case])
    input_ids, attention_mask = source_batch()
    expected = greedy_by_recomputation(model, input_ids, attention_mask, max_new_tokens=8)
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, do_sample=False)
    cached = model.generate(**kwargs)
    uncached = model.generate(**kwargs, use_cache=False)
    one_beam = model.generate(**kwargs, num_beams=1)
    assert cached.tolist() == expected.tolist()
    assert uncached.tolist() == expected.tolist()
    assert one_beam.tolist() == expected.tolist()
    # the source must matter, or the comparison would not exercise the encoder side at all
    first_step = model(
        input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=expected[:, :1]
    ).logits
    assert (first_step[0] - first_step[1]).abs().max() > 1e-2


def test_cache_feeds_one_token_and_no_cache_recomputes_the_prefix():
    model = make_model(**CASES["additive-lstm-gru-feed"])
    input_ids, attention_mask = source_batch()
    lengths: list[int] = []
    handle = model.decoder.register_forward_pre_hook(lambda module, args: lengths.append(args[0].size(1)))
    try:
        model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=5, min_new_tokens=5)
        assert lengths == [1, 1, 1, 1, 1]
        lengths.clear()
        model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=5,
            min_new_tokens=5,
            use_cache=False,
        )
        assert lengths == [1, 2, 3, 4, 5]
    finally:
        handle.remove()


@pytest.mark.parametrize(
    "case", ["additive-lstm-gru-feed", "dot-gru-lstm-2layers", "copy-general-lstm-gru-tied"]
)
def test_beam_search_reorders_states_and_matches_recomputation_and_single_rows(case):
    model = make_model(**CASES[case])
    input_ids, attention_mask = source_batch()
    beam_indices = []
    original = model._reorder_cache

    def recording_reorder(cache, beam_idx):
        beam_indices.append(beam_idx.clone())
        return original(cache, beam_idx)

    model._reorder_cache = recording_reorder
    kwargs = dict(
        num_beams=4,
        num_return_sequences=2,
        max_new_tokens=7,
        output_scores=True,
        return_dict_in_generate=True,
    )
    batched = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    identity = torch.arange(beam_indices[0].numel())
    assert any(not torch.equal(idx, identity) for idx in beam_indices), "beams were never reordered"

    uncached = model.generate(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    assert batched.sequences.tolist() == uncached.sequences.tolist()
    torch.testing.assert_close(batched.sequences_scores, uncached.sequences_scores)

    # each source alone, without padding, gets the same beams as inside the padded batch
    for row in range(2):
        length = int(attention_mask[row].sum())
        alone = model.generate(input_ids=input_ids[row : row + 1, :length], **kwargs)
        got = batched.sequences[2 * row : 2 * row + 2]
        assert got[:, : alone.sequences.size(1)].tolist() == alone.sequences.tolist()
        assert (got[:, alone.sequences.size(1) :] == PAD).all()
        torch.testing.assert_close(batched.sequences_scores[2 * row : 2 * row + 2], alone.sequences_scores)


def _exhaustive_best(model, input_ids, max_new_tokens, vocab_size):
    """Best sum of log-probs over every sequence of up to max_new_tokens tokens (EOS ends a sequence)."""
    best_score, best_seq = float("-inf"), None
    frontier = [((), 0.0)]
    for step in range(max_new_tokens):
        prefixes = torch.tensor([[START, *seq] for seq, _ in frontier])
        with torch.no_grad():
            logits = model(input_ids=input_ids.expand(len(frontier), -1), decoder_input_ids=prefixes).logits
        log_probs = F.log_softmax(logits[:, -1], dim=-1)
        next_frontier = []
        for (seq, score), row in zip(frontier, log_probs, strict=True):
            for token in range(vocab_size):
                new_seq, new_score = (*seq, token), score + row[token].item()
                if token == EOS or step == max_new_tokens - 1:
                    if new_score > best_score:
                        best_score, best_seq = new_score, new_seq
                else:
                    next_frontier.append((new_seq, new_score))
        frontier = next_frontier
    return best_seq, best_score


def test_wide_beam_finds_the_exhaustive_optimum():
    vocab, steps = 6, 3
    found_non_greedy_optimum = False
    for seed, case in enumerate(
        ["additive-lstm-gru-feed", "multihead-lstm-lstm", "copy-general-lstm-gru-tied"]
    ):
        model = make_model(seed=seed, vocab_size=vocab, **CASES[case])
        for source in ([3, 4, 5, 3], [5, 5, 4]):
            input_ids = torch.tensor([source])
            best_seq, best_score = _exhaustive_best(model, input_ids, steps, vocab)
            # (vocab-1)^(steps-1) = 25 unfinished prefixes at most: 36 beams never prune the optimum's prefix,
            # length_penalty 0 scores by the plain sum, and scores only decrease, so "never" stopping is exact.
            out = model.generate(
                input_ids=input_ids,
                num_beams=36,
                max_new_tokens=steps,
                length_penalty=0.0,
                early_stopping="never",
                output_scores=True,
                return_dict_in_generate=True,
            )
            tokens = out.sequences[0, 1:].tolist()
            if EOS in tokens:
                tokens = tokens[: tokens.index(EOS) + 1]
            assert tuple(tokens) == best_seq
            assert out.sequences_scores[0].item() == pytest.approx(best_score, abs=1e-4)
            greedy = model.generate(input_ids=input_ids, max_new_tokens=steps, do_sample=False)[
                0, 1:
            ].tolist()
            found_non_greedy_optimum |= tuple(greedy[: len(best_seq)]) != best_seq
    assert found_non_greedy_optimum, "every optimum was greedy: the test cannot tell beam search from greedy"


def test_no_repeat_ngram_size_matches_reference_and_holds():
    model = make_model(**CASES["general-rnn-rnn-unidirectional"])
    input_ids, attention_mask = source_batch()
    expected = greedy_by_recomputation(model, input_ids, attention_mask, 10, no_repeat_ngram_size=2)
    got = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=10,
        do_sample=False,
        no_repeat_ngram_size=2,
    )
    assert got.tolist() == expected.tolist()
    for row in got.tolist():
        row = row[: row.index(EOS) + 1] if EOS in row else row
        bigrams = list(itertools.pairwise(row))
        assert len(bigrams) == len(set(bigrams))
    plain = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10, do_sample=False
    )
    assert plain.tolist() != got.tolist(), "the constraint never bit: choose a source that repeats"


def test_sampling_is_reproducible_and_cache_independent():
    model = make_model(**CASES["multihead-lstm-lstm"])
    input_ids, attention_mask = source_batch()
    kwargs = dict(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, do_sample=True, top_k=0
    )
    runs = []
    for use_cache in (True, True, False):
        torch.manual_seed(123)
        runs.append(model.generate(**kwargs, use_cache=use_cache).tolist())
    assert runs[0] == runs[1] == runs[2]
    torch.manual_seed(7)
    others = [model.generate(**kwargs).tolist() for _ in range(5)]
    assert any(other != runs[0] for other in others), "sampling always gave the same output"


@pytest.mark.parametrize("case", ["additive-lstm-gru-feed", "dot-gru-lstm-2layers", "hard-multihead-gru-gru"])
def test_extra_padding_on_either_side_does_not_change_logits(case):
    model = make_model(**CASES[case])
    input_ids, attention_mask = source_batch()
    decoder_input_ids = torch.tensor([[START, 5, 6, 7], [START, 9, 3, 3]])
    with torch.no_grad():
        reference = model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
        )
        right = torch.cat([input_ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
        right_out = model(
            input_ids=right, attention_mask=(right != PAD).long(), decoder_input_ids=decoder_input_ids
        )
        # left padding: move each row's real tokens to the end of a longer row
        left = torch.zeros(2, 9, dtype=torch.long)
        for row in range(2):
            real = input_ids[row][attention_mask[row].bool()]
            left[row, 9 - real.numel() :] = real
        left_out = model(
            input_ids=left, attention_mask=(left != PAD).long(), decoder_input_ids=decoder_input_ids
        )
    torch.testing.assert_close(right_out.logits, reference.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left_out.logits, reference.logits, atol=1e-5, rtol=1e-5)


def test_final_encoder_state_equals_rnn_state_of_each_unpadded_source():
    model = make_model(encoder_cell="lstm", encoder_layers=2, encoder_bidirectional=True)
    input_ids, attention_mask = source_batch()
    with torch.no_grad():
        hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        summary = final_encoder_state(hidden, attention_mask.bool(), bidirectional=True)
        for row in range(2):
            real = input_ids[row : row + 1, : int(attention_mask[row].sum())]
            _, (h_n, _) = model.encoder.rnn(model.encoder.embed_tokens(real))  # h_n: (layers*2, 1, H/2)
            expected = torch.cat([h_n[-2, 0], h_n[-1, 0]])  # top layer: forward, backward
            torch.testing.assert_close(summary[row], expected, atol=1e-6, rtol=1e-6)
    assert (hidden[1, 3:] == 0).all()  # padded positions carry nothing


@pytest.mark.parametrize(
    "case",
    ["additive-lstm-gru-feed", "multihead-lstm-lstm", "hard-additive-gru-rnn", "hard-multihead-gru-gru"],
)
def test_attention_weights_are_distributions_over_real_tokens(case):
    model = make_model(**CASES[case])
    input_ids, attention_mask = source_batch()
    decoder_input_ids = torch.tensor([[START, 5, 6], [START, 9, 3]])
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        output_attentions=True,
    )
    (weights,) = out.cross_attentions
    heads = 4 if "multihead" in case else 1
    assert weights.shape == (2, heads, 3, 6)
    masked = ~attention_mask.bool()[:, None, None, :].expand_as(weights)
    assert (weights[masked] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, heads, 3))
    if model.config.attention_mode == "hard":
        assert ((weights > 0).sum(-1) == model.config.hard_attention_k).all()
        # straight-through: the scorer still gets gradient from the positions the forward pass dropped
        out.logits.sum().backward()
        grad = model.decoder.attention.key_proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_attention_none_returns_no_cross_attentions_and_ignores_the_source_after_init():
    model = make_model(**CASES["none-gru-gru"])
    input_ids, attention_mask = source_batch()
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=torch.tensor([[START]] * 2),
        output_attentions=True,
    )
    assert out.cross_attentions is None
    assert not hasattr(model.decoder, "attention") or model.decoder.attention is None


def test_labels_are_shifted_and_loss_is_token_mean_cross_entropy():
    model = make_model(**CASES["additive-lstm-gru-feed"])
    input_ids, attention_mask = source_batch()
    labels = torch.tensor([[6, 7, 8, EOS], [9, EOS, -100, -100]])
    shifted = shift_tokens_right(labels, PAD, START)
    assert shifted.tolist() == [[START, 6, 7, 8], [START, 9, EOS, PAD]]
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    ref = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=shifted)
    torch.testing.assert_close(out.logits, ref.logits)
    log_probs = F.log_softmax(ref.logits, -1)
    picked = [-log_probs[b, t, labels[b, t]] for b in range(2) for t in range(4) if labels[b, t] != -100]
    torch.testing.assert_close(out.loss, torch.stack(picked).mean())


def test_copy_logits_are_log_probabilities_of_the_mixture():
    model = make_model(**CASES["copy-general-lstm-gru-tied"])
    input_ids, attention_mask = source_batch()
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=torch.tensor([[START, 4]] * 2)
    )
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(2, 2))


def test_copy_mixture_stays_float32_under_bf16_autocast():
    model = make_model(**CASES["copy-general-lstm-gru-tied"])
    input_ids, attention_mask = source_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=torch.tensor([[START, 4]] * 2)
        )
    assert out.logits.dtype == torch.float32
    # Summed in bf16 the mixture is off by ~1e-2; in float32 it is a distribution to 1e-5.
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(2, 2), atol=1e-5, rtol=0)


def _copy_task_batches(seed: int, count: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        source = torch.randint(3, VOCAB, (16, 5), generator=generator)
        labels = torch.cat([source, torch.full((16, 1), EOS)], dim=1)
        yield source, labels


@pytest.mark.parametrize("case", ["additive-lstm-gru-feed", "copy-general-lstm-gru-tied"])
def test_a_few_adam_steps_reduce_the_loss_on_a_copy_task(case):
    model = make_model(**CASES[case], initializer_range=0.1).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for source, labels in _copy_task_batches(0, 60):
        loss = model(input_ids=source, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5, losses


def test_from_config_initialises_recurrent_weights():
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from nlpipe.models.auto_registration import register_all

    register_all()
    config = AutoConfig.for_model(
        "nlpipe_rnn_seq2seq",
        vocab_size=VOCAB,
        embedding_dim=8,
        hidden_size=16,
        encoder_cell="gru",
        decoder_cell="rnn",
        attention="multihead",
    )
    model = AutoModelForSeq2SeqLM.from_config(config)
    assert isinstance(model, RnnSeq2SeqForConditionalGeneration)
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        assert param.abs().max() < 10, name
        if "weight" in name:
            assert param.std() > 1e-3, f"{name} looks uninitialised"


_RELOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForSeq2SeqLM
    from nlpipe.models.auto_registration import register_all
    register_all()
    model = AutoModelForSeq2SeqLM.from_pretrained(sys.argv[1]).eval()
    inputs = json.loads(sys.argv[2])
    with torch.no_grad():
        out = model(**{k: torch.tensor(v) for k, v in inputs.items()})
    tied = model.lm_head.weight.data_ptr() == model.decoder.embed_tokens.weight.data_ptr()
    shared = model.encoder.embed_tokens.weight.data_ptr() == model.decoder.embed_tokens.weight.data_ptr()
    torch.save({"logits": out.logits, "tied": tied, "shared": shared, "cls": type(model).__name__}, sys.argv[3])
    """
)


@pytest.mark.parametrize("case", ["copy-general-lstm-gru-tied", "hard-multihead-gru-gru"])
def test_save_and_reload_in_a_fresh_process_gives_identical_logits(case, tmp_path):
    model = make_model(**CASES[case])
    tied = bool(model.config.tie_embeddings)
    if tied:
        assert model.lm_head.weight.data_ptr() == model.decoder.embed_tokens.weight.data_ptr()
        assert model.encoder.embed_tokens.weight.data_ptr() == model.decoder.embed_tokens.weight.data_ptr()
    input_ids, attention_mask = source_batch()
    inputs = dict(
        input_ids=input_ids.tolist(),
        attention_mask=attention_mask.tolist(),
        decoder_input_ids=[[START, 5, 6], [START, 9, 3]],
    )
    with torch.no_grad():
        expected = model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits
    model.save_pretrained(tmp_path / "model")
    result_file = tmp_path / "result.pt"
    subprocess.run(
        [sys.executable, "-c", _RELOAD_SCRIPT, str(tmp_path / "model"), json.dumps(inputs), str(result_file)],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
    )
    result = torch.load(result_file)
    assert result["cls"] == "RnnSeq2SeqForConditionalGeneration"
    # Not bit for bit: another process may pick other BLAS/oneDNN kernels (alignment, ISA), which reorder float32
    # sums (measured 1.5e-8). A real regression (a weight not saved, embeddings untied, dropout left on) moves
    # the logits by 1e-3 or more.
    torch.testing.assert_close(result["logits"], expected, rtol=1e-5, atol=1e-6)
    assert result["tied"] == tied and result["shared"] == tied


@pytest.mark.parametrize(
    "bad",
    [
        dict(encoder_cell="transformer"),
        dict(attention="luong"),
        dict(attention_mode="sparse"),
        dict(hard_attention_estimator="reinforce"),
        dict(attention="none", copy_mechanism=True),
        dict(attention="none", attention_mode="hard"),
        dict(attention="multihead", attention_heads=3, hidden_size=16),
        dict(encoder_bidirectional=True, hidden_size=15),
        dict(hard_attention_k=0),
    ],
)
def test_config_rejects_impossible_settings(bad):
    with pytest.raises(Exception, match="validate_architecture"):
        RnnSeq2SeqConfig(**bad)


def test_config_docstring_documents_every_field():
    own_fields = RnnSeq2SeqConfig.__annotations__
    for name in own_fields:
        assert f"    {name} (`" in RnnSeq2SeqConfig.__doc__, f"{name} is not documented"
    assert "Example:" in RnnSeq2SeqConfig.__doc__


def test_every_combination_of_cells_builds_and_runs():
    input_ids, attention_mask = source_batch()
    for encoder_cell, decoder_cell in itertools.product(("rnn", "lstm", "gru"), repeat=2):
        model = make_model(encoder_cell=encoder_cell, decoder_cell=decoder_cell, decoder_layers=2)
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=torch.tensor([[START]] * 2)
        )
        assert out.logits.shape == (2, 1, VOCAB)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_input_feeding_step_equals_the_rnn_module_on_one_token(cell: str) -> None:
    """The one-layer decoder's cell-function step is the module's own step: same outputs, state and gradients."""
    decoder = make_model(decoder_cell=cell, encoder_cell=cell, attention="general", input_feeding=True).decoder
    decoder.train()
    batch, width = 3, decoder.rnn.input_size
    step_in = torch.randn(batch, width, requires_grad=True)
    hidden = torch.randn(1, batch, decoder.hidden_size)
    state = (hidden, torch.randn_like(hidden)) if cell == "lstm" else hidden
    out, new_state = decoder._one_step(step_in, state)
    ref_out, ref_state = decoder.rnn(step_in.unsqueeze(1), state)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    for a, b in zip(new_state if cell == "lstm" else (new_state,), ref_state if cell == "lstm" else (ref_state,),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    weights = [step_in, decoder.rnn.weight_ih_l0, decoder.rnn.weight_hh_l0, decoder.rnn.bias_hh_l0]
    ours = torch.autograd.grad(out.pow(2).sum(), weights)
    reference = torch.autograd.grad(ref_out.pow(2).sum(), weights)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [{"assistant_model": "same"}, {"prompt_lookup_num_tokens": 2}])
def test_stateful_model_refuses_assisted_decoding_and_prompt_lookup(kwargs) -> None:
    model = make_model()
    if kwargs.get("assistant_model") == "same":
        kwargs = {"assistant_model": make_model(seed=1)}
    input_ids, attention_mask = source_batch()
    with pytest.raises(ValueError, match="stateful"):
        model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=3, **kwargs)


def _reference_input_feeding(decoder, decoder_input_ids, encoder_hidden, mask, state):
    """The input-feeding decoder written out step by step from the modules (slices, the RNN module on one
    token): what `RnnSeq2SeqDecoder.forward` computes with its faster step."""
    embeds = decoder.dropout(decoder.embed_tokens(decoder_input_ids))
    rnn_state = (state.hidden, state.cell) if decoder.is_lstm else state.hidden
    memory = decoder.attention.project_memory(encoder_hidden)
    feed, outs = state.feed, []
    for t in range(embeds.size(1)):
        out, rnn_state = decoder.rnn(torch.cat([embeds[:, t], feed], dim=-1).unsqueeze(1), rnn_state)
        context, _ = decoder.attention(out, memory, mask)
        attentional = torch.tanh(decoder.combine(torch.cat([out, context], dim=-1)))
        feed = attentional.squeeze(1)
        outs.append(attentional)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_fused_input_feeding_loop_equals_the_step_by_step_reference(cell: str, monkeypatch) -> None:
    """Training speed-ups of the decoder loop (cell written out, weight gradients formed once over all steps,
    unbound steps) change nothing: the attentional vectors and every parameter's gradient equal the plain
    step-by-step computation."""
    from nlpipe.models.rnn_seq2seq import modeling_rnn_seq2seq

    gathered = []
    original = modeling_rnn_seq2seq._GatherLoopGrad.backward

    def counting(ctx, grad):
        gathered.append(ctx.use.weight.shape)
        return original(ctx, grad)

    monkeypatch.setattr(modeling_rnn_seq2seq._GatherLoopGrad, "backward", staticmethod(counting))
    model = make_model(decoder_cell=cell, encoder_cell="lstm", attention="general", input_feeding=True,
                       tie_embeddings=True).train()
    ids, mask = source_batch()
    targets = torch.tensor([[START, 4, 9, 3, 12, 6, 2], [START, 7, 5, 2, 0, 0, 0]])
    params = [p for p in model.parameters() if p.requires_grad]

    def run(fn):
        encoder_hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        state = model.decoder.initial_state(encoder_hidden, mask.bool())
        attentional = fn(targets, encoder_hidden, mask.bool(), state)
        return attentional, torch.autograd.grad(attentional.pow(2).sum(), params, allow_unused=True)

    ours, our_grads = run(lambda *args: model.decoder(*args).attentional)
    # the cell's two matrices and the combine layer: one gradient product each for the whole loop
    assert sorted(gathered) == sorted([model.decoder.rnn.weight_ih_l0.shape, model.decoder.rnn.weight_hh_l0.shape,
                                       model.decoder.combine.weight.shape])
    reference, ref_grads = run(lambda *args: _reference_input_feeding(model.decoder, *args))
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)
    for a, b in zip(our_grads, ref_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_batched_loop_gradients_under_bf16_autocast_match_the_per_step_ones() -> None:
    """With bf16 autocast (the translation recipes on an AMX CPU) the once-formed weight gradients agree with
    autograd's per-step ones to bf16 precision."""
    model = make_model(decoder_cell="lstm", encoder_cell="lstm", attention="general", input_feeding=True).train()
    ids, mask = source_batch()
    targets = torch.tensor([[START, 4, 9, 3, 12, 6, 2], [START, 7, 5, 2, 0, 0, 0]])
    decoder = model.decoder
    weights = [decoder.rnn.weight_ih_l0, decoder.rnn.weight_hh_l0, decoder.combine.weight]

    def grads(batched: bool) -> list[torch.Tensor]:
        functions = decoder._training_loop_functions
        if not batched:
            decoder._training_loop_functions = lambda: (decoder._one_step, decoder.combine)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                out = decoder(targets, hidden, mask.bool(), decoder.initial_state(hidden, mask.bool())).attentional
            return torch.autograd.grad(out.float().pow(2).sum(), weights)
        finally:
            decoder._training_loop_functions = functions

    for ours, theirs in zip(grads(True), grads(False), strict=True):
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, atol=2e-2, rtol=5e-2)
        assert ours.abs().sum() > 0
