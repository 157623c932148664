"""The small hooks that make one training loop serve every task.

A task says how to turn raw examples into model inputs (`encode`, `collate`), which text trains
its tokenizer, how to build its model, how a batch becomes a loss, and how a model is evaluated.
The loop in `nlpipe.training.loop` never looks inside a batch.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from ..model_registry import build_model
from ..recipe import Recipe


def pad_rows(rows: list[list[int]], longest: int, value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad lists of ids into a (B, longest) long tensor filled with `value`, plus the 0/1 mask of real ids.

    The ids go through numpy in one pass (``np.fromiter``) and one masked copy: collation runs on every
    training step, and ``torch.tensor`` of a Python list costs ≈ 0.3 µs per id (`benchmarks/perf_profile.py`).
    """
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    mask = np.arange(longest) < lengths[:, None]
    out = np.full((len(rows), longest), value, dtype=np.int64)
    out[mask] = concatenated(rows, int(lengths.sum()))
    return torch.from_numpy(out), torch.from_numpy(mask.astype(np.int64))


def concatenated(rows: list[Any], total: int) -> np.ndarray:
    """All values of `rows` in order, `total` of them: lists (evaluation rows) go through one ``np.fromiter`` pass,
    numpy views (the training loader's `ArrowRows`) through one ``np.concatenate``; iterating numpy values one
    by one would cost more than the Arrow read saves."""
    if rows and isinstance(rows[0], np.ndarray):
        return np.concatenate(rows)
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)


class Task:
    """Base class: override the hooks a task needs."""

    name: str = ""
    data_kind: str = ""
    """Which catalog/sample kind this task reads (ner, translation, summarization, lm)."""
    pipeline_tag: str = ""
    """The Hugging Face pipeline task of the resulting model (for the model card)."""
    auto_class: str = ""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    # -- data -----------------------------------------------------------------------------------
    def setup(self, data: datasets.DatasetDict, source_name: str) -> None:
        """Inspect the raw data once (e.g. collect the label set) before tokenization."""

    def corpus(self, dataset: datasets.DatasetDict, *, data: str | None = None,
               data_dir: str | Path | None = None) -> datasets.DatasetDict:
        """The splits this task trains and evaluates on, from the loaded data set (default: as loaded).

        `data` / `data_dir` say where the run's data comes from, for a task that reads more
        (masked-lm: extra corpora and text files)."""
        return dataset

    def tokenizer_texts(self, train: datasets.Dataset) -> list[str]:
        """The text the tokenizer is trained on (from the training split only)."""
        raise NotImplementedError

    def encode(self, dataset: datasets.Dataset, tokenizer: Any, split: str) -> datasets.Dataset:
        """Turn raw examples into model features; must add a ``length`` column (tokens per example)."""
        raise NotImplementedError

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad a list of encoded examples into a batch of tensors."""
        raise NotImplementedError

    columns_not_for_training: tuple[str, ...] = ()
    """Encoded columns that only evaluation reads: the training loader does not fetch them (every fetched
    column is converted from Arrow on every step)."""

    # -- model ----------------------------------------------------------------------------------
    def model_values(self, tokenizer: Any) -> dict[str, Any]:
        """Config values only the task knows (vocabulary size, labels, special token ids)."""
        # Not len(tokenizer) alone: when a special token also occurs in the training text, the
        # tokenizers WordLevel trainer leaves a hole in the ids, so the largest id can equal len(tokenizer).
        vocab_size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
        return {"vocab_size": vocab_size, "pad_token_id": tokenizer.pad_token_id}

    def build_model(self, tokenizer: Any) -> Any:
        """A freshly initialised model for this recipe."""
        settings = dict(self.recipe.model)
        return build_model(settings.pop("type"), settings, **self.model_values(tokenizer))

    # -- training -------------------------------------------------------------------------------
    def train_loader(self, encoded: datasets.Dataset, recipe: Recipe) -> tuple[Any, Any]:
        """(DataLoader, sampler with ``set_epoch``) over the training split; length-bucketed by default."""
        from ..training.loop import train_loader

        return train_loader(self, encoded, recipe)

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (e.g. to reset a carried recurrent state)."""

    def training_state(self) -> dict[str, torch.Tensor]:
        """Tensors the task carries from one training batch to the next (a recurrent LM's state).

        Saved in every checkpoint (``task_state.safetensors``) so a run resumed mid-epoch continues
        exactly; most tasks carry nothing.
        """
        return {}

    def load_training_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `training_state` returned (called on resume, after `start_epoch`)."""

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Remember what collate needs from the tokenizer (pad id, ...)."""
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch."""
        return model(**batch).loss

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Real (non-padding) tokens in a batch, for tokens/s."""
        count = int(batch["attention_mask"].sum())
        if "decoder_attention_mask" in batch:
            count += int(batch["decoder_attention_mask"].sum())
        return count

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(
        self, model: Any, encoded: datasets.Dataset, raw: datasets.Dataset, accelerator: Any, batch_size: int
    ) -> dict[str, float]:
        """Metrics of `model` on one split (scores on a 0–100 scale, perplexity as is)."""
        raise NotImplementedError


class _IndexedRows(torch.utils.data.Dataset):
    """Rows of an encoded split together with their index (to put predictions back in order)."""

    def __init__(self, rows: datasets.Dataset, columns: list[str]) -> None:
        self.columns = {name: rows[name] for name in columns}  # plain lists: fast row access
        self.n = len(rows)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, dict[str, Any]]:
        return i, {name: values[i] for name, values in self.columns.items()}


def eval_batches(task: Task, encoded: datasets.Dataset, batch_size: int, accelerator: Any, columns: list[str]):
    """Length-sorted evaluation batches as (example indices, batch), sharded across processes.

    Each example goes to exactly one process, once (no padding of the last round), so predictions
    gathered with ``accelerator.gather_for_metrics(..., use_gather_object=True)`` — per batch or once
    after the loop — hold every example exactly once.
    """
    from torch.utils.data import DataLoader

    from ..training.batching import LengthBucketBatchSampler

    sampler = LengthBucketBatchSampler(encoded["length"], batch_size, shuffle=False)

    def collate(items: list[tuple[int, dict[str, Any]]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return torch.tensor([i for i, _ in items]), task.collate([row for _, row in items])

    loader = DataLoader(_IndexedRows(encoded, columns), batch_sampler=sampler, collate_fn=collate)
    if accelerator is not None:
        from ..training.loop import prepare_eval_loader  # shards without padding: no duplicates to drop

        loader = prepare_eval_loader(accelerator, loader)
    from .. import progress

    main_process = accelerator is None or accelerator.is_local_main_process
    return progress.bar(loader, f"{task.name}: evaluating {len(encoded):,} examples", main_process=main_process)
