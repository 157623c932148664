"""DDP and gradient accumulation through the one training loop, on CPU (gloo).

Three trainings of the same tiny tagger on the same data, seed and schedule, each in its own process:

- 1 process, batch 8;
- 2 processes (torchrun + ``Accelerator(cpu=True)`` = real DDP on gloo), batch 4 each;
- 1 process, batch 4 with 2 accumulation steps.

With plain random batches (no length bucketing) the global batch of step k is the same 8 examples in
all three (process p takes batches p, p+2, ... of the same random order), every sequence has the same
length (so the mean of per-process mean losses is the global mean), and dropout is 0: after two
epochs (12 Adam updates, linear schedule with warmup) the parameters must agree to float rounding.
A bug in sharding, in ``set_epoch`` reaching the sharded sampler, in scheduler stepping or in
accumulation changes them by far more.

This file is also the worker: ``python tests/training/test_distributed.py worker OUT BATCH ACCUM``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SEQ_LEN, VOCAB, N_TRAIN, N_VALID = 6, 20, 48, 7
LABELS = ["O", "B-X", "I-X"]


def _recipe(batch_size: int, accumulation: int) -> Any:
    from nlpipe.recipe import parse_recipe

    return parse_recipe({
        "name": "ddp-test", "task": "token-classification",
        "data": {"dataset": "conll2003"},
        "tokenizer": {"spec": "word-level"},
        "model": {"type": "rnn_tagger", "embedding_dim": 8, "hidden_size": 8, "dropout": 0.0,
                  "embedding_dropout": 0.0},
        "train": {"max_epochs": 2, "batch_size": batch_size, "gradient_accumulation_steps": accumulation,
                  "bucket_by_length": False, "optimizer": "adam", "learning_rate": 0.01,
                  "lr_scheduler": "linear", "warmup_steps": 2, "max_grad_norm": 1.0, "log_every_steps": 1,
                  "seed": 3},
        "eval": {"metric": "f1", "batch_size": 2},
    })


def _worker(out: Path, batch_size: int, accumulation: int) -> None:
    """Train with `train()` on synthetic tagging data; the main process writes params + what eval saw."""
    import datasets
    import torch
    from accelerate.utils import set_seed
    from safetensors.torch import save_file

    from nlpipe.model_registry import build_model
    from nlpipe.run import make_accelerator
    from nlpipe.tasks.base import Task, eval_batches
    from nlpipe.training.loop import train

    recipe = _recipe(batch_size, accumulation)
    accelerator = make_accelerator(recipe, None, cpu=True)
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> datasets.Dataset:
        ids = torch.randint(1, VOCAB, (n, SEQ_LEN), generator=generator)
        return datasets.Dataset.from_dict({
            "input_ids": ids.tolist(), "labels": (ids % 3).tolist(), "length": [SEQ_LEN] * n,
        })

    encoded = {"train": split(N_TRAIN), "validation": split(N_VALID)}

    class SyntheticTagging(Task):
        """Fixed-length sequences; evaluate() records which examples each process's gather returned."""

        gathered: list[list[int]] = []

        def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            ids = torch.tensor([f["input_ids"] for f in features])
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                    "labels": torch.tensor([f["labels"] for f in features])}

        def evaluate(self, model, encoded, raw, accelerator, batch_size):  # noqa: ANN001
            seen = []
            for indices, batch in eval_batches(self, encoded, batch_size, accelerator, ["input_ids", "labels"]):
                model(**batch)
                seen.extend(indices.tolist())
            seen = accelerator.gather_for_metrics(seen, use_gather_object=True)
            self.gathered.append(sorted(seen))
            return {"f1": float(len(self.gathered))}  # increasing: the last evaluation is the "best" model

    task = SyntheticTagging(recipe)
    set_seed(recipe.train.seed)
    model = build_model("rnn_tagger", {k: v for k, v in recipe.model.items() if k != "type"},
                        vocab_size=VOCAB, pad_token_id=0, id2label=dict(enumerate(LABELS)),
                        label2id={x: i for i, x in enumerate(LABELS)})
    result = train(task, model, encoded, encoded, recipe, out, accelerator, progress=False)
    if accelerator.is_main_process:
        params = {k: v.detach().contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        save_file(params, str(out / "params.safetensors"))
        (out / "result.json").write_text(json.dumps({
            "steps": result.global_step, "tokens": result.train_tokens, "gathered": task.gathered,
            "num_processes": accelerator.num_processes,
        }))


def _launch(out: Path, batch_size: int, accumulation: int, processes: int) -> subprocess.Popen:
    out.mkdir(parents=True)
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*launcher, __file__, "worker", str(out), str(batch_size), str(accumulation)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def test_ddp_and_accumulation_match_one_process(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    torch = pytest.importorskip("torch")
    runs = {
        "single": _launch(tmp_path / "single", 8, 1, 1),
        "ddp": _launch(tmp_path / "ddp", 4, 1, 2),
        "accumulated": _launch(tmp_path / "accumulated", 4, 2, 1),
    }
    for name, proc in runs.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} failed:\n{output[-3000:]}"
    results = {name: json.loads((tmp_path / name / "result.json").read_text()) for name in runs}
    params = {name: load_file(str(tmp_path / name / "params.safetensors")) for name in runs}

    assert results["ddp"]["num_processes"] == 2
    for name in runs:
        assert results[name]["steps"] == 12, name  # 48 examples / global batch 8 × 2 epochs
        assert results[name]["tokens"] == 2 * N_TRAIN * SEQ_LEN, name  # every example once per epoch
        # Each evaluation saw every validation example exactly once (7 examples over 2 processes
        # in batches of 2: Accelerate pads the last round; the gather must drop the padding).
        for seen in results[name]["gathered"]:
            assert seen == list(range(N_VALID)), name
    initial_moved = False
    for key, value in params["single"].items():
        for other in ("ddp", "accumulated"):
            torch.testing.assert_close(params[other][key], value, rtol=1e-4, atol=1e-5, msg=f"{other}: {key}")
        initial_moved = initial_moved or bool(value.abs().sum() > 0)
    assert initial_moved
    # Only the main process writes: one log line per logged step, not one per process.
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "loss" in r]
    assert steps == list(range(1, 13))


def test_ddp_bucketed_sharding_covers_every_example() -> None:
    """Length-bucketed batches (partial batch at the end of every pool) sharded over 3 processes: every
    example of the epoch is trained on, none is dropped by Accelerate's shard."""
    from accelerate.data_loader import BatchSamplerShard

    from nlpipe.training.batching import LengthBucketBatchSampler
    from nlpipe.training.loop import _VariableSizeBatches

    lengths = [(i * 7) % 23 + 1 for i in range(203)]
    sampler = LengthBucketBatchSampler(lengths, 8, seed=1, pool_batches=3)
    sampler.set_epoch(2)
    expected = sorted(i for batch in sampler for i in batch)
    assert expected == list(range(203))
    seen: list[int] = []
    counts = []
    for rank in range(3):
        shard = BatchSamplerShard(_VariableSizeBatches(sampler), num_processes=3, process_index=rank)
        batches = list(shard)
        counts.append(len(batches))
        assert len(batches) == len(shard)
        seen.extend(i for batch in batches for i in batch)
    assert len(set(counts)) == 1  # every process runs the same number of steps (no DDP hang)
    assert set(seen) == set(expected)  # nothing dropped (a few first batches may repeat to even out)
    # The unwrapped sampler shows why the wrapper exists: Accelerate drops whole groups.
    raw_seen = {i for rank in range(3) for b in BatchSamplerShard(sampler, 3, rank) for i in b}
    assert raw_seen != set(expected)


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "worker":
    _worker(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
