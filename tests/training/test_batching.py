"""Length bucketing: every example once per epoch, similar lengths together, deterministic per epoch."""

from __future__ import annotations

import random

from nlpipe.training.batching import LengthBucketBatchSampler

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(1, 60) for _ in range(1000)]


def spread(batches: list[list[int]]) -> float:
    return sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches) / len(batches)


def test_each_example_once_and_buckets_are_tight() -> None:
    sampler = LengthBucketBatchSampler(LENGTHS, 32, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    random_batches = list(LengthBucketBatchSampler(LENGTHS, 32, seed=1, bucket=False))
    assert spread(batches) < 0.25 * spread(random_batches)


def test_order_is_a_function_of_seed_and_epoch() -> None:
    a, b = LengthBucketBatchSampler(LENGTHS, 32, seed=1), LengthBucketBatchSampler(LENGTHS, 32, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    a.set_epoch(0)
    assert list(a) == first


def test_token_budget_and_eval_order() -> None:
    sampler = LengthBucketBatchSampler(LENGTHS, 32, batch_tokens=200, seed=0)
    for batch in sampler:
        assert len(batch) == 1 or max(LENGTHS[i] for i in batch) * len(batch) <= 200
    ordered = [i for b in LengthBucketBatchSampler(LENGTHS, 50, shuffle=False) for i in b]
    assert [LENGTHS[i] for i in ordered] == sorted(LENGTHS)
