"""CausalLmTask: stream windows, carried/reset state, whole-stream perplexity against brute force,
sliding-window perplexity against plain chunks."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
from torch.nn import functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from nlpipe.errors import NlpipeError
from nlpipe.models.rnn_lm.configuration_rnn_lm import RnnLmConfig
from nlpipe.models.rnn_lm.modeling_rnn_lm import RnnForCausalLM
from nlpipe.recipe import parse_recipe
from nlpipe.tasks.causal_lm import CausalLmTask, StreamWindows, WindowOrder, sliding_window_nll, stream_nll

VOCAB = 30


def make_task(model_type: str = "rnn_lm", **generate) -> CausalLmTask:
    recipe = parse_recipe({
        "name": "t", "task": "causal-lm", "data": {"dataset": "ptb"}, "tokenizer": {"spec": "word-level-lm"},
        "model": {"type": model_type}, "train": {"batch_size": 3, "bptt_length": 4}, "generate": generate,
    })
    return CausalLmTask(recipe)


def tiny_rnn(cell: str = "lstm", seed: int = 0) -> RnnForCausalLM:
    torch.manual_seed(seed)
    config = RnnLmConfig(vocab_size=VOCAB, embedding_dim=16, hidden_size=16, cell=cell, num_layers=2,
                         dropout=0.0, embedding_dropout=0.0)
    return RnnForCausalLM(config).eval()


def tiny_gpt(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


def random_stream(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ stream batching


def test_windows_cover_each_row_of_the_stream_in_order() -> None:
    stream = torch.arange(50)
    windows = StreamWindows(stream, batch_size=3, bptt_length=4)
    columns = (50 - 1) // 3  # 16 per row; the leftover tail is dropped
    assert len(windows) == 4
    inputs = torch.cat([windows[i]["input_ids"] for i in range(len(windows))], dim=1)
    targets = torch.cat([windows[i]["target_ids"] for i in range(len(windows))], dim=1)
    for row in range(3):
        assert inputs[row].tolist() == list(range(row * columns, (row + 1) * columns))
        assert targets[row].tolist() == list(range(row * columns + 1, (row + 1) * columns + 1))
    # A short last window when bptt does not divide the row length.
    ragged = StreamWindows(stream, batch_size=3, bptt_length=5)
    assert [ragged[i]["input_ids"].shape[1] for i in range(len(ragged))] == [5, 5, 5, 1]


def test_stream_too_short_for_the_batch_is_a_clear_error() -> None:
    with pytest.raises(NlpipeError, match="train.batch_size"):
        StreamWindows(torch.arange(3), batch_size=8, bptt_length=4)


def test_window_order_in_order_for_rnn_shuffled_per_epoch_for_gpt() -> None:
    assert list(WindowOrder(5, shuffle=False, seed=0)) == [[0], [1], [2], [3], [4]]
    order = WindowOrder(20, shuffle=True, seed=0)
    order.set_epoch(0)
    first = list(order)
    order.set_epoch(1)
    second = list(order)
    order.set_epoch(0)
    assert list(order) == first  # same epoch, same order: resume skips the right windows
    assert sorted(first) == [[i] for i in range(20)] and first != second


def test_train_loader_carries_state_across_windows_and_resets_each_epoch() -> None:
    task = make_task()
    model = tiny_rnn()
    encoded = datasets.Dataset.from_dict({"input_ids": [list(range(1, 9)), list(range(9, 27))],
                                          "length": [8, 18]})
    loader, sampler = task.train_loader(encoded, task.recipe)
    batches = list(loader)
    assert len(batches) == len(sampler) == 2  # 26 tokens -> 3 rows of 8 -> 2 windows of 4
    task.start_epoch(0)
    assert task.state is None
    losses = [task.loss(model, b) for b in batches]
    carried = task.state
    assert carried is not None and not any(s.requires_grad for s in carried)  # detached
    # Reference: both windows in one pass, scored the same way.
    x = torch.cat([b["input_ids"] for b in batches], dim=1)  # (3, 8)
    y = torch.cat([b["target_ids"] for b in batches], dim=1)
    logits = model(input_ids=x).logits
    second = F.cross_entropy(logits[:, 4:].reshape(-1, VOCAB), y[:, 4:].reshape(-1))
    torch.testing.assert_close(losses[1], second)
    full_state = model(input_ids=x).cache
    torch.testing.assert_close(carried[0], full_state[0])
    # A new epoch starts from a zero state: the first window's loss is the same as before.
    task.start_epoch(1)
    assert task.state is None
    torch.testing.assert_close(task.loss(model, batches[0]), losses[0])


def test_gpt_windows_are_stateless() -> None:
    task = make_task("gpt2")
    model = tiny_gpt()
    batch = {"input_ids": random_stream(12).view(3, 4), "target_ids": random_stream(12, seed=2).view(3, 4)}
    loss = task.loss(model, batch)
    assert task.state is None
    expected = F.cross_entropy(model(input_ids=batch["input_ids"]).logits.reshape(-1, VOCAB),
                               batch["target_ids"].reshape(-1))
    torch.testing.assert_close(loss, expected)


# ------------------------------------------------------------------------------ perplexity


def brute_force_nll(model: torch.nn.Module, stream: torch.Tensor) -> float:
    """Token t scored from a fresh forward pass over the whole prefix 0..t-1 (no state reuse)."""
    total = 0.0
    with torch.no_grad():
        for t in range(1, len(stream)):
            logits = model(input_ids=stream[:t].view(1, -1), use_cache=False).logits[0, -1]
            total -= float(torch.log_softmax(logits.double(), -1)[stream[t]])
    return total


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_evaluate_equals_token_by_token_brute_force(cell: str) -> None:
    model = tiny_rnn(cell)
    lines = [[3, 4, 5, 2], [6, 7, 2], [2], [8, 9, 10, 11, 12, 2]]  # 2 = <eos>, an empty line is just <eos>
    encoded = datasets.Dataset.from_dict({"input_ids": lines, "length": [len(x) for x in lines]})
    stream = torch.tensor([t for line in lines for t in line])
    task = make_task(eval_chunk_length=3)  # several chunks: the state must flow between them
    scores = task.evaluate(model, encoded, None, None, batch_size=4)
    expected = brute_force_nll(model, stream) / (len(stream) - 1)
    assert scores["nll_per_token"] == pytest.approx(expected, rel=1e-5)
    assert scores["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    nlls, counts = stream_nll(model, stream, chunk_length=5)
    assert sum(counts) == len(stream) - 1


def test_gpt_evaluate_with_window_covering_the_stream_equals_brute_force() -> None:
    model = tiny_gpt()
    stream = random_stream(20)
    encoded = datasets.Dataset.from_dict({"input_ids": [stream.tolist()], "length": [20]})
    task = make_task("gpt2", perplexity_window=32, perplexity_stride=7)
    scores = task.evaluate(model, encoded, None, None, batch_size=16)
    assert scores["nll_per_token"] == pytest.approx(brute_force_nll(model, stream) / 19, rel=1e-5)


def test_sliding_window_with_stride_equal_to_window_is_plain_chunks() -> None:
    model = tiny_gpt()
    stream = random_stream(61)
    window = 8
    nlls, counts = sliding_window_nll(model, stream, window=window, stride=window, batch_size=3)
    # Reference: non-overlapping input chunks, each token predicting the next, nothing carried over.
    inputs, targets = stream[:-1], stream[1:]
    expected = 0.0
    with torch.no_grad():
        for start in range(0, len(inputs), window):
            logits = model(input_ids=inputs[start : start + window].view(1, -1)).logits[0]
            expected += float(F.cross_entropy(logits, targets[start : start + window], reduction="sum"))
    assert sum(counts) == 60
    assert sum(nlls) == pytest.approx(expected, rel=1e-5)


def test_smaller_stride_scores_every_token_once_with_more_context() -> None:
    model = tiny_gpt()
    stream = random_stream(41)
    plain, plain_counts = sliding_window_nll(model, stream, window=8, stride=8)
    for stride in (1, 3, 5):
        nlls, counts = sliding_window_nll(model, stream, window=8, stride=stride)
        assert sum(counts) == sum(plain_counts) == 40
    # With stride 1 every token t is scored with min(t, 8) tokens of context: brute force.
    nlls, _ = sliding_window_nll(model, stream, window=8, stride=1)
    expected = 0.0
    with torch.no_grad():
        for t in range(1, len(stream)):
            context = stream[max(0, t - 8) : t].view(1, -1)
            expected -= float(torch.log_softmax(model(input_ids=context).logits[0, -1].double(), -1)[stream[t]])
    assert sum(nlls) == pytest.approx(expected, rel=1e-5)


def test_smaller_stride_is_not_worse_for_a_model_that_uses_context() -> None:
    # A trained-like model: a repeating pattern the tiny GPT learns in a few steps.
    torch.manual_seed(0)
    pattern = torch.tensor([3, 9, 4, 17, 5, 11, 6, 2, 8, 13])
    stream = pattern.repeat(20)
    model = tiny_gpt().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        start = int(torch.randint(0, len(stream) - 17, ()))
        chunk = stream[start : start + 16].view(1, -1)
        loss = model(input_ids=chunk, labels=chunk).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    plain, counts = sliding_window_nll(model, stream, window=16, stride=16)
    overlapped, counts2 = sliding_window_nll(model, stream, window=16, stride=4)
    assert sum(counts) == sum(counts2)
    assert sum(overlapped) <= sum(plain)


def test_bad_stride_is_an_error_naming_the_key() -> None:
    with pytest.raises(NlpipeError, match="perplexity_stride"):
        sliding_window_nll(tiny_gpt(), random_stream(10), window=8, stride=9)


def test_stream_concatenates_lines_in_order_also_after_select() -> None:
    rows = [[5, 6, 7], [], [8], [9, 10], [11, 12, 13, 14]]
    encoded = datasets.Dataset.from_dict({"input_ids": rows})
    assert CausalLmTask.stream(encoded).tolist() == [t for row in rows for t in row]
    picked = encoded.select([4, 0, 3])  # an indices mapping over the same Arrow table
    assert CausalLmTask.stream(picked).tolist() == [11, 12, 13, 14, 5, 6, 7, 9, 10]
    assert CausalLmTask.stream(picked).dtype == torch.long


# ------------------------------------------------------------------------------ word perplexity


def test_count_words_is_words_plus_one_eos_per_line_less_the_first() -> None:
    from nlpipe.tasks.causal_lm import count_words

    # 3 + 1 (eos), 0 + 1 (an empty line is one <eos>), 1 + 1: 7 words, the first is context only.
    assert count_words([" the cat sat", "", "dog"]) == 6


def test_word_perplexity_of_a_subword_stream_by_hand() -> None:
    """Tokens that split words: the same total NLL divided by the words, not by the tokens."""
    model = tiny_gpt()
    raw = datasets.Dataset.from_dict({"text": ["unbelievable cats", "ok"]})  # words: 2 + 1 + 1 + 1 = 5, less 1
    lines = [[3, 4, 5, 6, 7, 2], [8, 2]]  # "un be liev able" "cats" <eos> "ok" <eos>: 8 tokens
    encoded = datasets.Dataset.from_dict({"input_ids": lines, "length": [len(x) for x in lines]})
    stream = torch.tensor([t for line in lines for t in line])
    scores = make_task("gpt2", perplexity_window=32).evaluate(model, encoded, raw, None, batch_size=16)
    total = brute_force_nll(model, stream)
    assert scores["perplexity"] == pytest.approx(math.exp(total / 7), rel=1e-5)
    assert scores["nll_per_word"] == pytest.approx(total / 4, rel=1e-5)
    assert scores["word_perplexity"] == pytest.approx(math.exp(total / 4), rel=1e-5)


def test_word_perplexity_equals_token_perplexity_for_word_level_tokens() -> None:
    model = tiny_rnn("gru")
    raw = datasets.Dataset.from_dict({"text": [" a b c", " d e", "", " f g h i"]})
    lines = [[3, 4, 5, 2], [6, 7, 2], [2], [8, 9, 10, 11, 2]]  # one token per word, <eos> = 2
    encoded = datasets.Dataset.from_dict({"input_ids": lines, "length": [len(x) for x in lines]})
    scores = make_task().evaluate(model, encoded, raw, None, batch_size=4)
    assert scores["word_perplexity"] == pytest.approx(scores["perplexity"], rel=1e-9)


# ------------------------------------------------------------------------------ pretraining text


def test_pretraining_corpus_adds_only_training_splits_of_extra_corpora() -> None:
    """pretrain-gpt: its own splits, plus the *training* lines of data.extra_datasets (PTB), nothing else."""
    from nlpipe.data.catalog import load_data
    from nlpipe.recipe import load_recipe

    recipe = load_recipe("pretrain-gpt")
    assert recipe.data.extra_datasets == ["ptb"]
    own = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": [" wiki a", "", " wiki b"]}),
                                "validation": datasets.Dataset.from_dict({"text": [" wiki dev"]}),
                                "test": datasets.Dataset.from_dict({"text": [" wiki test"]})})
    corpus = CausalLmTask(recipe).corpus(own, data="sample")
    ptb = load_data("ptb", source="sample", seed=recipe.train.seed)
    # The stream convention holds: lines (empty ones too) in order, the extra corpus after the own one.
    assert list(corpus["train"]["text"]) == [" wiki a", "", " wiki b", *ptb["train"]["text"]]
    assert list(corpus["validation"]["text"]) == [" wiki dev"] and list(corpus["test"]["text"]) == [" wiki test"]


def test_pretrain_gpt_then_generation_from_it_from_the_cli(tmp_path) -> None:
    """pretrain-gpt → generation-gpt-pretrained: the decoder body is the pretrained one, the tokenizer is
    shared, and the fine-tuned run reports word perplexity beside token perplexity."""
    import json
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    env = {**os.environ, "NLPIPE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    common = ["--data", "sample", "--no-progress", "data.max_train_examples=200", "data.max_eval_examples=20",
              "train.batch_size=4", "train.bptt_length=16"]
    tiny = ["model.n_embd=16", "model.n_layer=1", "model.n_head=2", "tokenizer.vocab_size=300"]
    pretrain = subprocess.run(
        [sys.executable, "-m", "nlpipe", "run", "recipe", "pretrain-gpt", *common, *tiny, "train.budget.tokens=400",
         "train.warmup_steps=1", "--output-dir", "runs/pretrain-gpt"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    assert json.loads((tmp_path / "runs/pretrain-gpt/metrics.json").read_text())["train"]["stopped_because"] == "budget"
    fine = subprocess.run(  # the recipe's own init_from (runs/pretrain-gpt), from the working folder
        [sys.executable, "-m", "nlpipe", "run", "recipe", "generation-gpt-pretrained", *common, "train.max_epochs=0",
         "--output-dir", "runs/gen"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert fine.returncode == 0, fine.stderr[-3000:]
    source = load_file(str(tmp_path / "runs/pretrain-gpt/model.safetensors"))
    tuned = load_file(str(tmp_path / "runs/gen/model.safetensors"))
    body = [k for k in source if k.startswith("transformer.")]
    assert len(body) > 5
    for key in body:
        assert torch.equal(source[key], tuned[key]), key
    assert (tmp_path / "runs/gen/tokenizer.json").read_text() == (tmp_path / "runs/pretrain-gpt/tokenizer.json").read_text()
    test = json.loads((tmp_path / "runs/gen/metrics.json").read_text())["test"]
    # Byte-level BPE spends several tokens per PTB word: per word the same NLL is a larger number.
    assert test["nll_per_word"] > test["nll_per_token"] > 0
    assert test["word_perplexity"] == pytest.approx(math.exp(test["nll_per_word"]), rel=1e-9)
