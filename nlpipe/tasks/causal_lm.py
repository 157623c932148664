"""Causal language modelling on a token stream (PTB, WikiText-2): train, score perplexity, generate.

The corpus is one long stream: every line is tokenized and followed by ``<eos>`` (the standard
convention for PTB and WikiText-2; PTB lines start with a space, which the whitespace
pre-tokenizer ignores), and the lines are concatenated.

Training (truncated BPTT, as in Zaremba et al. 2014 and pytorch/examples' word_language_model):
the training stream is cut into ``train.batch_size`` contiguous parallel streams, and windows of
``train.bptt_length`` tokens are visited in order. A recurrent model carries its (detached) state
from one window to the next through its ``cache`` argument; the task holds that state and resets
it at the start of every epoch. A GPT-style model has no state: it is trained on the same windows
(fixed-length blocks), visited in a per-epoch shuffled order.

Evaluation is over the *whole* split stream (every token after the first is scored once):

- recurrent model: one stream, the state carried from chunk to chunk (`stream_nll`);
- GPT-style model: a sliding window of ``generate.perplexity_window`` tokens (default: the model's
  ``n_positions``) moved by ``generate.perplexity_stride`` (default: half a window); each window
  scores only the tokens no earlier window scored, with the rest as context (`sliding_window_nll`).

The summed NLLs and token counts go to the offline ``perplexity`` evaluate module.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.nn import functional as F

from ..errors import NlpipeError, shorten
from ..metrics import compute_metric
from ..recipe import Recipe
from .base import Task, pad_rows

RECURRENT_MODEL_TYPES = ("rnn_lm",)
GENERATION_ONLY_KEYS = ("perplexity_window", "perplexity_stride", "eval_chunk_length")
"""Keys of the recipe's ``generate`` section read by evaluation, not passed to ``generate()``."""


def _unwrap(model: Any) -> Any:
    """The model inside a DDP/Accelerate wrapper."""
    return getattr(model, "module", model)


def _model_device(model: Any) -> torch.device:
    return next(_unwrap(model).parameters()).device


def detach_state(state: Any) -> Any:
    """The recurrent state cut from the autograd graph (tensor or tuple of tensors; None stays None)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(detach_state(s) for s in state)


def word_spacing_decoder() -> Any:
    """A `tokenizers` decoder that puts one space before every word-level token.

    The text-generation pipeline decodes only the *new* tokens and appends them to the prompt, so a
    decoder that joins words with spaces but starts without one ("sat on") would glue the first
    new word to the prompt ("the catsat on"). With a space before each token it reads
    "the cat" + " sat on".
    """
    from tokenizers import Regex, decoders

    return decoders.Replace(Regex("^"), " ")


class StreamWindows(torch.utils.data.Dataset):
    """Training windows over a token stream cut into parallel streams.

    Item ``i`` is ``{"input_ids": (B, T), "target_ids": (B, T)}`` for window ``i``: columns
    ``i*T .. i*T+T-1`` of the (B, N) stream matrix, targets shifted by one. The last window may be
    shorter. Tokens that do not fill a whole column of the matrix (fewer than B at the end of the
    stream) are dropped, as in every truncated-BPTT implementation.
    """

    def __init__(self, stream: torch.Tensor, batch_size: int, bptt_length: int) -> None:
        if bptt_length < 1:
            raise NlpipeError(f"key 'train.bptt_length': must be >= 1, got {bptt_length}")
        columns = (len(stream) - 1) // batch_size
        if columns < 1:
            raise NlpipeError(
                f"the training stream has {len(stream)} tokens, too few for train.batch_size={batch_size} "
                "parallel streams; lower train.batch_size or use more data"
            )
        # Row r is stream[r*N : (r+1)*N]; its targets are the same span shifted by one token.
        self.inputs = stream[: batch_size * columns].view(batch_size, columns)  # (B, N)
        self.targets = stream[1 : batch_size * columns + 1].view(batch_size, columns)  # (B, N)
        self.bptt_length = bptt_length
        self.columns = columns

    def __len__(self) -> int:
        return -(-self.columns // self.bptt_length)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = index * self.bptt_length
        end = min(start + self.bptt_length, self.columns)
        return {"input_ids": self.inputs[:, start:end], "target_ids": self.targets[:, start:end]}


class WindowOrder:
    """Batch sampler over `StreamWindows`: one window per batch, in stream order or shuffled per epoch.

    In order for recurrent models (the state flows from window i to window i+1); shuffled with a
    seed derived from ``(seed, epoch)`` for stateless models, so a resumed run sees the same order.
    """

    def __init__(self, num_windows: int, *, shuffle: bool, seed: int) -> None:
        self.num_windows = num_windows
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (only changes the order when shuffling)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_windows

    def __iter__(self):
        order = list(range(self.num_windows))
        if self.shuffle:
            random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        for index in order:
            yield [index]


def _single(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate for `WindowOrder`: every batch is exactly one (already batched) window."""
    (item,) = items
    return dict(item)


@torch.no_grad()
def stream_nll(model: Any, stream: torch.Tensor, chunk_length: int = 256) -> tuple[list[float], list[int]]:
    """Summed NLL (nats) and token counts per chunk of a recurrent LM over one stream, state carried.

    Token ``t`` (t >= 1) is scored given tokens ``0..t-1``; the first token is context only, so the
    counts add up to ``len(stream) - 1``. The model sees the stream in chunks of `chunk_length`
    tokens with its state passed on through ``cache``, which gives exactly the scores of one pass
    over the whole stream.
    """
    device = _model_device(model)
    inputs, targets = stream[:-1], stream[1:]
    state = None
    nlls, counts = [], []
    from .. import progress

    for start in progress.bar(range(0, len(inputs), chunk_length), f"perplexity over {len(stream):,} tokens"):
        x = inputs[start : start + chunk_length].view(1, -1).to(device)  # (1, T)
        y = targets[start : start + chunk_length].to(device)  # (T,)
        out = model(input_ids=x, cache=state, use_cache=True)
        state = out.cache
        nlls.append(float(F.cross_entropy(out.logits[0].float(), y, reduction="sum")))
        counts.append(int(y.numel()))
    return nlls, counts


@torch.no_grad()
def sliding_window_nll(
    model: Any, stream: torch.Tensor, window: int, stride: int, batch_size: int = 8
) -> tuple[list[float], list[int]]:
    """Summed NLL (nats) and counts per window of a stateless LM, sliding over one stream.

    Window ``k`` feeds the `window` tokens starting at ``k * stride`` (fewer at the end) and
    predicts, at each position, the token that follows. It scores only the predictions no earlier
    window made, using everything before them in the window as context. Every token after the
    first is thus scored exactly once, so the counts add up to ``len(stream) - 1``.
    ``stride == window`` is plain non-overlapping chunks (the first prediction of a chunk has only
    one token of context); a smaller stride gives each scored token at least
    ``window - stride`` tokens of context.

    Raises:
        NlpipeError: when ``stride`` is not in ``1..window``.
    """
    if not 1 <= stride <= window:
        raise NlpipeError(f"key 'generate.perplexity_stride': must be between 1 and the window ({window}), got {stride}")
    device = _model_device(model)
    last = len(stream) - 1  # predictions: input position p predicts token p + 1, for p < last
    spans = []  # (begin, end, new): inputs stream[begin:end], the last `new` predictions scored
    previous_end = 0
    for begin in range(0, last, stride):
        end = min(begin + window, last)
        spans.append((begin, end, end - previous_end))
        previous_end = end
        if end == last:
            break
    nlls, counts = [], []
    from .. import progress

    for first in progress.bar(range(0, len(spans), batch_size), f"perplexity over {len(stream):,} tokens"):
        group = spans[first : first + batch_size]
        longest = max(end - begin for begin, end, _ in group)
        ids = torch.zeros(len(group), longest, dtype=torch.long)
        targets = torch.full((len(group), longest), -100, dtype=torch.long)
        mask = torch.zeros(len(group), longest, dtype=torch.long)
        for row, (begin, end, new) in enumerate(group):
            n = end - begin
            ids[row, :n] = stream[begin:end]
            mask[row, :n] = 1
            targets[row, n - new : n] = stream[end - new + 1 : end + 1]
        ids, targets, mask = ids.to(device), targets.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits  # (G, L, V)
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).view(len(group), -1)  # (G, L)
        for row, (_, _, new) in enumerate(group):
            nlls.append(float(losses[row].sum()))
            counts.append(new)
    return nlls, counts


def count_words(lines: list[str]) -> int:
    """Predicted words of a split stream: whitespace-separated words plus one ``<eos>`` per line, less
    the first (context only, as the first token is).

    This is the count word-level perplexity on PTB and WikiText-2 is defined over (Mikolov's
    convention: the end of each line is a word), so a word-level tokenizer scores exactly this many
    tokens and its word perplexity equals its token perplexity.
    """
    return max(0, sum(len(line.split()) + 1 for line in lines) - 1)


class CausalLmTask(Task):
    """Word-level language modelling on a stream; see the module docstring."""

    name = "causal-lm"
    data_kind = "lm"
    pipeline_tag = "text-generation"
    auto_class = "AutoModelForCausalLM"

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        self.recurrent = recipe.model.get("type") in RECURRENT_MODEL_TYPES
        self.state: Any = None
        """The recurrent state carried between training windows (None at the start of an epoch)."""

    # -- data -----------------------------------------------------------------------------------
    def corpus(self, dataset: datasets.DatasetDict, *, data: str | None = None,
               data_dir: str | Path | None = None) -> datasets.DatasetDict:
        """Pretraining text: the training stream extended with ``data.extra_datasets``' *training* splits
        (labels dropped) and the lines of ``data.text_files``; validation and test stay ``data.dataset``'s.

        Another corpus's validation or test text is never read, so a model pretrained here and
        fine-tuned on that corpus has not seen its evaluation text.
        """
        from ..data.catalog import load_data
        from ..data.readers import read_lines
        from .masked_lm import _text_file, texts_of

        d = self.recipe.data
        if not d.extra_datasets and not d.text_files:
            return dataset
        lines = list(dataset["train"]["text"])
        for name in d.extra_datasets:
            extra = load_data(name, source=data, data_dir=data_dir, seed=self.recipe.train.seed,
                              max_train_examples=d.max_train_examples)["train"]
            # Language-model corpora keep their lines as they are (the stream convention); others lose labels.
            lines += list(extra["text"]) if extra.column_names == ["text"] else texts_of(extra)
        for name in d.text_files:
            path = _text_file(name, data_dir)
            if not path.is_file():
                raise NlpipeError(f"{self.recipe.source}: key 'data.text_files': {name} not found (looked in "
                                  f"{data_dir or '.'} and the current folder); give an existing text file")
            lines += [r["text"] for r in read_lines(path)]
        out = dict(dataset)
        out["train"] = datasets.Dataset.from_dict({"text": lines})
        return datasets.DatasetDict(out)

    def tokenizer_texts(self, train: datasets.Dataset) -> list[str]:
        return list(train["text"])

    def bind_tokenizer(self, tokenizer: Any) -> None:
        super().bind_tokenizer(tokenizer)
        if tokenizer.eos_token_id is None:
            raise NlpipeError(
                f"{self.recipe.source}: key 'tokenizer.spec': a language model needs an end-of-line token; "
                "give the spec special_tokens.eos_token (e.g. '<eos>')"
            )
        self.eos_token_id = tokenizer.eos_token_id
        backend = tokenizer.backend_tokenizer
        if type(backend.model).__name__ == "WordLevel":
            # Saved with the run, so pipeline("text-generation") keeps the space before new words.
            backend.decoder = word_spacing_decoder()

    def encode(self, dataset: datasets.Dataset, tokenizer: Any, split: str) -> datasets.Dataset:
        eos = tokenizer.eos_token_id

        def encode_batch(batch: dict[str, list]) -> dict[str, list]:
            ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
            ids = [row + [eos] for row in ids]  # every line ends with <eos>, empty lines too
            return {"input_ids": ids, "length": [len(row) for row in ids]}

        return dataset.map(encode_batch, batched=True, remove_columns=dataset.column_names, desc=f"encode {split}")

    @staticmethod
    def stream(encoded: datasets.Dataset) -> torch.Tensor:
        """All token ids of an encoded split, lines concatenated in order, as one 1-D tensor."""
        import numpy as np
        import pyarrow as pa

        # One Arrow read of the list column, flattened: reading it row by row through `datasets` formatting
        # took ≈ 2.8 s of every PTB run's start-up (42k rows) against ≈ 2 ms.
        column = encoded.with_format("arrow")["input_ids"]
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        return torch.from_numpy(column.flatten().to_numpy(zero_copy_only=False).astype(np.int64))

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad lines into a batch (used for line-wise batches; stream training uses `StreamWindows`)."""
        longest = max(len(f["input_ids"]) for f in features)
        ids, mask = pad_rows([f["input_ids"] for f in features], longest, self.pad_token_id)
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    # -- model ----------------------------------------------------------------------------------
    def model_values(self, tokenizer: Any) -> dict[str, Any]:
        # <eos> also starts generation from nothing: it is what precedes every line.
        # (The base hook sizes the vocabulary past the largest id: PTB's own "<unk>" leaves a hole.)
        return {
            **super().model_values(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.eos_token_id,
        }

    # -- training -------------------------------------------------------------------------------
    def train_loader(self, encoded: datasets.Dataset, recipe: Recipe) -> tuple[Any, Any]:
        """Windows of ``train.bptt_length`` over ``train.batch_size`` parallel streams (see module doc)."""
        from accelerate import PartialState
        from torch.utils.data import DataLoader

        t = recipe.train
        if self.recurrent and PartialState().num_processes > 1:
            # Accelerate would deal windows out to processes in turn, so no process would see two
            # consecutive windows of its streams and the carried state would be wrong.
            raise NlpipeError(
                f"{recipe.source}: a recurrent language model carries its state along the stream and trains "
                "in one process only; run it without torchrun / accelerate launch"
            )
        windows = StreamWindows(self.stream(encoded), t.batch_size, t.bptt_length)
        order = WindowOrder(len(windows), shuffle=not self.recurrent, seed=t.seed)
        return DataLoader(windows, batch_sampler=order, collate_fn=_single), order

    def start_epoch(self, epoch: int) -> None:
        """Every epoch starts the streams from the beginning, so from a zero state."""
        self.state = None

    def training_state(self) -> dict[str, torch.Tensor]:
        """The carried recurrent state: ``{"state": h}`` (RNN/GRU) or ``{"state.0": h, "state.1": c}`` (LSTM)."""
        if self.state is None:
            return {}
        if isinstance(self.state, torch.Tensor):
            return {"state": self.state.contiguous()}
        return {f"state.{i}": part.contiguous() for i, part in enumerate(self.state)}

    def load_training_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Carry on from a checkpoint's state, so a run resumed mid-epoch sees the same state as an uninterrupted one."""
        if not tensors:
            self.state = None
        elif "state" in tensors:
            self.state = tensors["state"]
        else:
            self.state = tuple(tensors[f"state.{i}"] for i in range(len(tensors)))

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy of one window; a recurrent model continues from the carried state."""
        x, y = batch["input_ids"], batch["target_ids"]
        if self.recurrent:
            out = model(input_ids=x, cache=self.state, use_cache=True)
            # Truncated BPTT: the next window starts from this state but does not backpropagate into it.
            self.state = detach_state(out.cache)
        else:
            out = model(input_ids=x, use_cache=False)
        logits = out.logits  # (B, T, V)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["target_ids"].numel())

    # -- evaluation -----------------------------------------------------------------------------
    def split_nll(self, model: Any, encoded: datasets.Dataset, batch_size: int) -> tuple[list[float], list[int]]:
        """Summed NLLs and token counts over a whole split stream, the standard way for the model kind."""
        stream = self.stream(encoded)
        inner = _unwrap(model)
        settings = self.recipe.generate
        if getattr(inner, "_is_stateful", False):
            return stream_nll(model, stream, int(settings.get("eval_chunk_length", 256)))
        window = int(settings.get("perplexity_window") or getattr(inner.config, "n_positions", 256))
        stride = int(settings.get("perplexity_stride") or max(1, window // 2))
        return sliding_window_nll(model, stream, window, stride, batch_size=max(1, batch_size // 8))

    def evaluate(
        self, model: Any, encoded: datasets.Dataset, raw: datasets.Dataset, accelerator: Any, batch_size: int
    ) -> dict[str, float]:
        """``{"perplexity", "nll_per_token", "word_perplexity", "nll_per_word"}`` over the whole split.

        Word perplexity divides the same total NLL by the split's words (`count_words`), so a subword
        model's figure compares with word-level models' (for which it equals the token perplexity).
        """
        nlls, counts = self.split_nll(model, encoded, batch_size)
        words = {}
        if raw is not None and "text" in raw.column_names:
            words["num_words"] = count_words(list(raw["text"]))
        scores = compute_metric("perplexity", predictions=nlls, references=counts, **words)
        return {k: float(v) for k, v in scores.items()}

    # -- prediction -----------------------------------------------------------------------------
    def generation_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``generate()`` from the recipe's ``generate`` section."""
        kwargs = {k: v for k, v in self.recipe.generate.items() if k not in GENERATION_ONLY_KEYS}
        kwargs.setdefault("max_new_tokens", 30)
        return kwargs

    def predict_texts(self, model: Any, tokenizer: Any, texts: list[str]) -> list[dict[str, Any]]:
        """Continue each text: ``{"text", "generated_text", "output"}``, the last two the prompt + continuation.

        Sampling settings come from the recipe's ``generate`` section (e.g. ``do_sample``, ``top_k``).
        """
        results = []
        for text in texts:
            enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
            if enc["input_ids"].shape[1] == 0:
                raise NlpipeError(f"input {shorten(text)}: no tokens; give a non-empty prompt")
            with torch.no_grad():
                out = model.generate(**enc, **self.generation_kwargs(), pad_token_id=tokenizer.pad_token_id)
            new = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            # "output" is what `nlpipe predict` prints in its text format.
            results.append({"text": text, "generated_text": text + new, "output": text + new})
        return results
