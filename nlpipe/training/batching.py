"""Length-bucketed batches: examples of similar length share a batch, so RNNs compute little on padding.

On these CPUs bucketing is worth ≈3× for RNNs and ≈2× for BERT (shared/docs/PEERS.md). The order is
a pure function of (seed, epoch), which is what makes a resumed run see exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Yield lists of example indices grouped by length.

    Each epoch: shuffle all indices, cut them into pools of ``pool_batches`` batches, sort each pool
    by length, cut the pool into batches, then shuffle the order of all batches.

    Args:
        lengths: tokens per example.
        batch_size: examples per batch (ignored when `batch_tokens` is set).
        batch_tokens: if set, a batch holds examples until its padded size (longest × count) would exceed this.
        shuffle: False gives a fixed, length-sorted order (evaluation).
        seed: base seed; the epoch is added to it.
        bucket: False gives plain random batches (for comparison benchmarks).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        batch_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        bucket: bool = True,
        pool_batches: int = 100,
    ) -> None:
        if not isinstance(lengths, torch.Tensor):
            # A `datasets` Column: slicing reads it in one Arrow call; list(column) reads it row by row
            # (≈0.1 s per 10k rows, paid at every epoch's sampler and every evaluation).
            lengths = list(lengths[:])
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self._length_list: list[int] = self.lengths.tolist()  # plain ints: cheap sort keys
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.pool_batches = pool_batches
        self.epoch = 0
        self._batches = self._make_batches()

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = self._make_batches()

    def _cut(self, order: list[int]) -> list[list[int]]:
        if self.batch_tokens is None:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches, current, longest = [], [], 0
        for index in order:
            length = self._length_list[index]
            if current and max(longest, length) * (len(current) + 1) > self.batch_tokens:
                batches.append(current)
                current, longest = [], 0
            current.append(index)
            longest = max(longest, length)
        if current:
            batches.append(current)
        return batches

    def _make_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = torch.argsort(self.lengths, stable=True).tolist() if self.bucket else list(range(n))
            return self._cut(order)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator).tolist()
        if not self.bucket:
            return self._cut(order)
        pool = self.pool_batches * (self.batch_size if self.batch_tokens is None else max(1, self.batch_tokens // 32))
        batches: list[list[int]] = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk.sort(key=self._length_list.__getitem__)
            batches.extend(self._cut(chunk))
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in permutation]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)
