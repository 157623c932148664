"""The one training loop of nlpipe, on Accelerate (one CPU, one GPU, many GPUs, many nodes: same code).

Tasks plug in through hooks (`Task.loss`, `Task.count_tokens`, `Task.evaluate`); the loop owns the
rest: optimizer and schedule, gradient accumulation and clipping, periodic evaluation, best-model
selection, early stopping, logging, atomic checkpoints, resume, Ctrl-C and NaN handling.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader

from ..errors import NlpipeError
from ..recipe import Recipe
from ..tasks.base import Task
from . import checkpoint_averaging
from .arrow_rows import arrow_rows
from .batching import LengthBucketBatchSampler
from .budget import resolve_budget, synchronized_clock
from .checkpointing import (
    find_resumable,
    latest_checkpoint,
    load_checkpoint,
    load_rng_state,
    load_task_state,
    remove_temporary_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_text_atomic,
)


@dataclass
class TrainResult:
    """What a finished training reports."""

    global_step: int
    epochs: float
    best_metric: float | None
    best_step: int | None
    wall_s: float
    train_tokens: int
    tokens_per_s: float
    stopped_because: str
    history: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    """`BudgetPlan.summary` when the recipe set ``train.budget``."""
    checkpoint_average: dict[str, Any] | None = None
    """``train.average_checkpoints``: the steps averaged, the average's validation score, the best single model's
    (score and step) and whether the average was kept."""


class _StopTraining(Exception):
    """Internal: a stopping condition (max_steps, time budget, early stopping) was met mid-epoch."""


class _Interrupted(Exception):
    """Internal: Ctrl-C or SIGTERM arrived and the loop reached a step boundary (a consistent checkpoint)."""


#: A loss above this many times the median of the recent losses (and above this many times 1.0, so
#: that a loss near zero late in training may still spike) counts as divergence. Cross-entropy-like
#: losses do not jump three orders of magnitude in a healthy run; a learning rate far too high does.
DIVERGENCE_FACTOR = 1000.0
#: How many recent batch losses the divergence test compares against (kept in the checkpoint).
DIVERGENCE_WINDOW = 50


def divergence(loss: float, recent: list[float]) -> str | None:
    """Why a batch loss means the training diverged, or None.

    Non-finite, or above `DIVERGENCE_FACTOR` × max(median of the recent losses, 1).
    """
    if not math.isfinite(loss):
        return f"loss became {loss}"
    if recent:
        reference = max(statistics.median(recent), 1.0)
        if loss > DIVERGENCE_FACTOR * reference:
            return (f"loss exploded to {loss:.3g} (over {DIVERGENCE_FACTOR:g}x the recent median "
                    f"{statistics.median(recent):.3g})")
    return None


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The optimizer a recipe names."""
    t = recipe.train
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.learning_rate, momentum=t.momentum, weight_decay=t.weight_decay)
    # fused: one kernel over all parameters instead of ~10 tensor ops each; same result (to ~1e-8), 3× faster
    # steps on CPU, which matters for taggers whose large embedding matrix makes Adam ~20% of a step
    # (benchmarks/perf_overhead.py, docs/performance.md).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) or None
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=t.learning_rate, weight_decay=t.weight_decay, fused=fused)


def train_loader(task: Task, encoded: Any, recipe: Recipe) -> tuple[DataLoader, LengthBucketBatchSampler]:
    """A DataLoader over length-bucketed batches (deterministic per seed and epoch)."""
    t = recipe.train
    sampler = LengthBucketBatchSampler(
        encoded["length"], t.batch_size, batch_tokens=t.batch_tokens, seed=t.seed, bucket=t.bucket_by_length
    )
    unused = [name for name in (*task.columns_not_for_training, "length") if name in encoded.column_names]
    rows = encoded.remove_columns(unused) if unused else encoded  # a view: the Arrow table is shared, not copied
    fast = arrow_rows(rows)  # the same rows, read from the Arrow buffers without `datasets`' formatting
    return DataLoader(rows if fast is None else fast, batch_sampler=sampler, collate_fn=task.collate), sampler


class _VariableSizeBatches:
    """A batch sampler seen through Accelerate as one with batches of varying size.

    `accelerate`'s ``BatchSamplerShard`` reads ``batch_size`` from the wrapped sampler and, when it is
    set, silently drops every group of N batches whose last batch is not full. Length bucketing makes
    a partial batch at the end of every pool (and `batch_tokens` makes every batch a different size),
    so under DDP whole groups of examples would never be trained on. ``batch_size = None`` makes it
    shard every batch and repeat a few first batches so each process gets as many.
    """

    batch_size = None

    def __init__(self, batches: Any) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _shardable(loader: DataLoader) -> DataLoader:
    """The task's training DataLoader, rebuilt so that Accelerate shards it without losing batches and
    so that creating its iterator does not draw from the global torch RNG (which would shift the
    dropout masks of a resumed run against an uninterrupted one)."""
    batch_sampler = loader.batch_sampler
    if batch_sampler is None or isinstance(batch_sampler, torch.utils.data.BatchSampler):
        return loader  # torch's own BatchSampler: fixed sizes, Accelerate handles it
    return DataLoader(
        loader.dataset, batch_sampler=_VariableSizeBatches(batch_sampler), collate_fn=loader.collate_fn,
        num_workers=loader.num_workers, pin_memory=loader.pin_memory,
        generator=torch.Generator().manual_seed(0),
    )


def prepare_eval_loader(accelerator: Any, loader: DataLoader) -> DataLoader:
    """Shard an evaluation DataLoader so that every example is seen by exactly one process, once.

    Accelerate normally pads the last round with repeated examples (``even_batches``) and relies on
    ``gather_for_metrics`` being called inside the loop to cut them off again; predictions gathered
    after the loop would keep the duplicates. Evaluation runs no collective per batch (no_grad), so
    the processes may do different numbers of batches: no padding, nothing to cut.
    """
    even = accelerator.even_batches
    accelerator.even_batches = False
    try:
        return accelerator.prepare_data_loader(_shardable(loader))
    finally:
        accelerator.even_batches = even


def _any_process(accelerator: Any, *flags: bool) -> list[bool]:
    """For each flag: is it set on any process? (One all-reduce; no communication with one process.)"""
    if accelerator.num_processes == 1:
        return list(flags)
    values = torch.tensor([float(f) for f in flags], device=accelerator.device)
    return [bool(v > 0) for v in accelerator.reduce(values, reduction="sum").tolist()]


def _resume_command(recipe: Recipe, run_dir: Path) -> str:
    """The command that continues this run: the user's own command line plus ``--resume``."""
    argv = sys.argv[1:]
    if argv[:2] == ["run", "recipe"]:
        kept = [a for a in argv if a != "--overwrite"]
        return shlex.join(["nlpipe", *kept, *([] if "--resume" in kept else ["--resume"])])
    return shlex.join(["nlpipe", "run", "recipe", str(run_dir / "recipe.yaml"), "--output-dir", str(run_dir),
                       "--resume"]) + " (plus the --data/--data-dir you used)"


class _DeferredInterrupt:
    """Turn the first Ctrl-C (SIGINT) or SIGTERM (what `kill` and job schedulers send) into a flag the
    loop reads at the next step boundary, before that step's forward pass, so the checkpoint holds the
    RNG and carried task state of a step boundary; a second signal interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        print(f"\n{self.name}: saving a checkpoint at the end of this step (send it again to stop at once)",
              file=sys.stderr)

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _is_better(value: float, best: float | None, greater: bool) -> bool:
    return best is None or (value > best if greater else value < best)


@contextmanager
def deterministic_kernels(enabled: bool, source: str = "recipe") -> Iterator[None]:
    """While active (when `enabled`, i.e. ``train.deterministic: true``), torch uses only deterministic
    kernels: no atomics in scatter/index backward, a fixed cuBLAS workspace, no cuDNN autotuning.

    CPU training with nlpipe's models is reproducible at a fixed thread count without it; on GPUs it
    is what makes two runs bit-identical, at some speed cost. The previous settings come back on exit.

    Raises:
        NlpipeError: an operation has no deterministic implementation on this device.
    """
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    except RuntimeError as exc:
        if "deterministic" not in str(exc):
            raise
        raise NlpipeError(
            f"{source}: key 'train.deterministic': {str(exc).splitlines()[0][:200]}; set train.deterministic: false "
            "(runs are then reproducible only up to such kernels)"
        ) from None
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]


def train(
    task: Task,
    model: torch.nn.Module,
    encoded: Any,
    raw: Any,
    recipe: Recipe,
    run_dir: Path,
    accelerator: Any,
    *,
    resume: bool = False,
    progress: bool = True,
    identity: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` on ``encoded['train']``, selecting on ``recipe.eval.metric`` over the validation split.

    See `_train`; with ``train.deterministic: true`` it runs under `deterministic_kernels`.
    """
    with deterministic_kernels(recipe.train.deterministic, str(recipe.source)):
        return _train(task, model, encoded, raw, recipe, run_dir, accelerator, resume=resume, progress=progress,
                      identity=identity)


def _train(
    task: Task,
    model: torch.nn.Module,
    encoded: Any,
    raw: Any,
    recipe: Recipe,
    run_dir: Path,
    accelerator: Any,
    *,
    resume: bool = False,
    progress: bool = True,
    identity: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` on ``encoded['train']``, selecting on ``recipe.eval.metric`` over the validation split.

    On return the model holds the best weights seen (by the selection metric). With several processes
    (DDP through Accelerate) each one trains on its shard of every epoch, gradients are averaged, and
    only the main process writes files; ``train.batch_size`` is per process. Steps (``max_steps``,
    ``warmup_steps``, ``eval_every_steps``, ``checkpoint_every_steps``) count optimizer updates.
    `identity` (recipe, data source, data hash) is stored in every checkpoint, so that a resume can
    refuse other settings (`checkpointing.check_resume_identity`).

    Raises:
        NlpipeError: on a diverging loss (NaN/inf, or exploding: `divergence`) or gradient norm, on
            Ctrl-C or SIGTERM (after saving a checkpoint; exit code 130 / 143), on a failed checkpoint
            write (a full disk; the previous checkpoint stays the one --resume uses), or when `resume`
            is asked for but no intact checkpoint exists.
    """
    from transformers import get_scheduler

    t, ev = recipe.train, recipe.eval
    ckpt_root = run_dir / "checkpoints"
    best_path = ckpt_root / "best.safetensors"
    loader, sampler = task.train_loader(encoded["train"], recipe)
    optimizer = make_optimizer(model, recipe)
    model, optimizer, prepared_loader = accelerator.prepare(model, optimizer, _shardable(loader))
    # Per process, after sharding: this is what one epoch of optimizer steps is.
    batches_per_epoch = max(1, len(prepared_loader))
    steps_per_epoch = math.ceil(batches_per_epoch / t.gradient_accumulation_steps)
    # A budget (train.budget) decides the length instead of max_epochs, before the schedule exists
    # (max_steps and max_train_minutes still stop a run early).
    plan = resolve_budget(recipe, task, loader, accelerator.num_processes)
    total_steps = plan.total_steps if plan else t.max_steps or steps_per_epoch * t.max_epochs
    max_epochs = math.inf if plan else t.max_epochs
    # Not passed to accelerator.prepare: Accelerate would step it once per process per update, which
    # turns warmup_steps and max_steps into "steps × processes". We step it once per optimizer update.
    scheduler = plan.make_scheduler(optimizer, t.lr_scheduler) if plan else get_scheduler(
        t.lr_scheduler, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=total_steps
    )
    unwrapped = accelerator.unwrap_model(model)
    averaging = t.average_checkpoints >= 2

    state: dict[str, Any] = {
        "global_step": 0, "epoch": 0, "batches_done": 0, "best_metric": None, "best_step": None,
        "evals_without_improvement": 0, "train_tokens": 0, "train_seconds": 0.0, "eval_seconds": 0.0,
        "num_processes": accelerator.num_processes, "history": [], "last_eval_step": None, "recent_losses": [],
        "running_loss": None,
        "identity": identity or {},
        "budget": plan.state_dict() if plan else None,
    }
    log_path = run_dir / "train_log.jsonl"
    pending_rng: dict[str, Any] | None = None
    pending_task_state: dict[str, torch.Tensor] | None = None
    if resume:
        if accelerator.is_main_process:
            remove_temporary_files(run_dir)  # what kills during earlier writes left behind
        accelerator.wait_for_everyone()
        found, notes = find_resumable(ckpt_root)
        if found is None:
            raise NlpipeError(
                f"{ckpt_root}: no intact checkpoint to resume from ({'; '.join(notes) or 'none written'}); "
                "rerun with --overwrite"
            )
        for note in notes:
            accelerator.print(f"warning: {note}; falling back to {found.name}")
        saved = load_checkpoint(found, unwrapped, optimizer, scheduler, restore_rng=False)
        saved_processes = saved.get("num_processes", 1)  # not recorded by single-process runs of older nlpipe
        # A checkpoint written by an older nlpipe lacks the keys added since: they keep their fresh values.
        state = {**state, **saved}
        if saved_processes != accelerator.num_processes and state["batches_done"]:
            # Process p saw batches p, p+N, ...: the first batches_done × N batches of the epoch are done.
            state["batches_done"] = state["batches_done"] * saved_processes // accelerator.num_processes
            accelerator.print(
                f"note: the checkpoint was written by {saved_processes} processes, this run has "
                f"{accelerator.num_processes}; the data position is approximate, so the resume is not exact"
            )
        state["num_processes"] = accelerator.num_processes
        if plan is not None:  # continue the saved plan (the scheduler reads it)
            plan.load_state_dict(saved.get("budget"), str(found))  # what the checkpoint planned, not the fresh plan
            total_steps = plan.total_steps
        pending_rng = load_rng_state(found, accelerator.process_index, accelerator.num_processes)
        if state["batches_done"]:  # mid-epoch: continue from the state the task carried at the checkpoint
            pending_task_state = {k: v.to(accelerator.device) for k, v in load_task_state(found).items()}
        if accelerator.is_main_process and averaging:  # later snapshots belong to steps trained again
            checkpoint_averaging.drop_after(ckpt_root, state["global_step"])
        if accelerator.is_main_process:  # the log holds exactly what the checkpoint knows, nothing after it
            write_text_atomic(log_path, "".join(json.dumps(r) + "\n" for r in state["history"]))
        accelerator.print(f"resumed from {found} (step {state['global_step']}, epoch {state['epoch']})")

    def log(record: dict[str, Any]) -> None:
        state["history"].append(record)
        if accelerator.is_main_process:
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=state["global_step"])

    @contextmanager
    def paused() -> Iterator[None]:
        """Time away from training steps: an evaluation with the saving and averaging that go with it, or a
        checkpoint. Kept in ``eval_seconds`` (the checkpoint's key), which tokens/s leaves out and the budget
        plan spreads over all steps, so neither counts a pause as slow training."""
        paused_at = time.perf_counter()
        try:
            yield
        finally:
            state["eval_seconds"] += time.perf_counter() - paused_at

    def write_failed(exc: OSError, what: str) -> NlpipeError:
        """One line for a failed write (ENOSPC, EDQUOT, EIO...): which, why, and what --resume will use."""
        previous = latest_checkpoint(ckpt_root)
        kept = (f"the previous checkpoint {previous.name} is intact and --resume uses it; free space, then resume "
                f"with: {_resume_command(recipe, run_dir)}" if previous is not None else
                "no checkpoint was written yet; free space, then rerun")
        reason = exc.strerror or exc.__class__.__name__
        return NlpipeError(f"{ckpt_root}: could not write {what} at step {state['global_step']} ({reason}); {kept}")

    def checkpoint() -> None:
        rngs = [rng_state()]
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rngs = gather_object(rngs)  # every process's own RNG: dropout differs per process
        accelerator.wait_for_everyone()
        failed = None
        if accelerator.is_main_process:
            try:
                save_checkpoint(ckpt_root, unwrapped, optimizer, scheduler, state, rng_states=rngs,
                                task_state=task.training_state())
            except OSError as exc:
                failed = exc
        if _any_process(accelerator, failed is not None)[0]:  # every process stops together
            raise write_failed(failed or OSError("on the main process"), "the checkpoint")
        accelerator.wait_for_everyone()

    def stop_reason() -> str | None:
        """A stopping condition already met (checked when a resumed run starts: a checkpoint written at
        max_steps, or at the evaluation that exhausted the patience, must not train one step more)."""
        if t.max_steps and state["global_step"] >= t.max_steps:
            return "max_steps"
        if t.early_stopping_patience is not None and state["evals_without_improvement"] >= t.early_stopping_patience:
            return "early_stopping"
        if t.max_train_minutes and state["train_seconds"] > 60 * t.max_train_minutes:
            return "max_train_minutes"
        return None

    def diverged(reason: str) -> NlpipeError:
        previous = latest_checkpoint(ckpt_root)
        # The loss of step N+1 is computed with the weights of step N: a checkpoint older than N held
        # weights that still gave sound losses; one of step N holds the weights that gave this one.
        if previous is None:
            where = "no checkpoint was written, so nothing is kept"
        elif json.loads((previous / "trainer_state.json").read_text())["global_step"] < state["global_step"]:
            where = f"the last good checkpoint, {previous.name}, is intact"
        else:
            where = f"the newest checkpoint, {previous.name}, holds the weights that gave this loss"
        rerun = "rerun with --overwrite" if previous is not None else "rerun"
        return NlpipeError(
            f"training diverged: {reason} at step {state['global_step'] + 1} (epoch {state['epoch']}); "
            f"stopped before that update; {where}. Lower train.learning_rate or set train.max_grad_norm, then {rerun}"
        )

    def evaluate_and_select() -> bool:
        """Evaluate on validation; keep the best weights; return True when early stopping triggers."""
        with paused():
            return _evaluate_and_select()

    def _evaluate_and_select() -> bool:
        model.eval()
        with torch.no_grad():
            metrics = task.evaluate(model, encoded["validation"], raw["validation"], accelerator, ev.batch_size)
        model.train()
        if ev.metric not in metrics:
            raise NlpipeError(
                f"{recipe.source}: key 'eval.metric': '{ev.metric}' is not computed by this task; "
                f"choose one of {', '.join(k for k, v in metrics.items() if isinstance(v, float))}"
            )
        value = metrics[ev.metric]
        improved = _is_better(value, state["best_metric"], ev.greater_is_better)
        if improved:
            state.update(best_metric=value, best_step=state["global_step"], evals_without_improvement=0)
            accelerator.wait_for_everyone()
            failed = None
            if accelerator.is_main_process:
                ckpt_root.mkdir(parents=True, exist_ok=True)
                tmp = best_path.with_name(".best.tmp.safetensors")
                try:
                    save_model(unwrapped, str(tmp))
                    tmp.replace(best_path)
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    failed = exc
            if _any_process(accelerator, failed is not None)[0]:  # every process stops together
                raise write_failed(failed or OSError("on the main process"), "the best model")
        else:
            state["evals_without_improvement"] += 1
        if averaging:
            failed = None
            if accelerator.is_main_process:
                try:
                    checkpoint_averaging.save_snapshot(ckpt_root, unwrapped, state["global_step"])
                except OSError as exc:
                    failed = exc
            if _any_process(accelerator, failed is not None)[0]:
                raise write_failed(failed or OSError("on the main process"), "the weights to average")
        state["last_eval_step"] = state["global_step"]
        log({"step": state["global_step"], "epoch": state["epoch"], "split": "validation",
             **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        accelerator.print(
            f"step {state['global_step']}: validation {ev.metric} = {value:.2f}"
            + ("  (best)" if improved else f"  (best {state['best_metric']:.2f} at step {state['best_step']})")
        )
        checkpoint()
        if averaging and accelerator.is_main_process:  # only now: a resume from this checkpoint has them all
            checkpoint_averaging.prune(ckpt_root, t.average_checkpoints, average_until())
        patience = t.early_stopping_patience
        return patience is not None and state["evals_without_improvement"] >= patience

    def average_until() -> int | None:
        """The step the averaged window ends at: the best validation's, or None for the newest."""
        return state["best_step"] if t.average_checkpoints_until == "best" else None

    def average_and_select() -> dict[str, Any] | None:
        """Score the mean of the window's snapshots on validation; it becomes the best model if at least as good."""
        with paused():
            return _average_and_select()

    def _average_and_select() -> dict[str, Any] | None:
        accelerator.wait_for_everyone()
        found = checkpoint_averaging.window(checkpoint_averaging.snapshots(ckpt_root), t.average_checkpoints,
                                            average_until())
        if len(found) < 2:
            return None
        average_path = checkpoint_averaging.snapshot_dir(ckpt_root) / "average.safetensors"
        failed = None
        if accelerator.is_main_process:
            try:
                checkpoint_averaging.average([path for _, path in found], average_path)
            except OSError as exc:
                failed = exc
        if _any_process(accelerator, failed is not None)[0]:
            raise write_failed(failed or OSError("on the main process"), "the averaged weights")
        load_model(unwrapped, str(average_path))
        model.eval()
        with torch.no_grad():
            metrics = task.evaluate(model, encoded["validation"], raw["validation"], accelerator, ev.batch_size)
        model.train()
        value = metrics[ev.metric]
        kept = not _is_better(state["best_metric"], value, ev.greater_is_better)  # at least as good
        steps = [step for step, _ in found]
        accelerator.print(
            f"average of the weights at steps {', '.join(map(str, steps))}: validation {ev.metric} = {value:.2f}  "
            + (f"(kept; best single model {state['best_metric']:.2f} at step {state['best_step']})" if kept
               else f"(not kept: best single model {state['best_metric']:.2f} at step {state['best_step']})")
        )
        record = {"steps": steps, "validation": value, "kept": kept,
                  "best_single_validation": state["best_metric"], "best_single_step": state["best_step"]}
        accelerator.wait_for_everyone()
        if kept:
            if accelerator.is_main_process:
                average_path.replace(best_path)
            state["best_metric"] = value
        accelerator.wait_for_everyone()
        return record

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps, initial=state["global_step"], disable=not (progress and accelerator.is_local_main_process),
        desc=recipe.name, dynamic_ncols=True, mininterval=1.0,
    )
    started = time.perf_counter() - state["train_seconds"]
    window_tokens, window_start = 0, time.perf_counter()
    running_loss = state["running_loss"]  # the smoothed loss is part of what a resume must continue
    stopped = "max_epochs"
    model.train()
    interrupt = _DeferredInterrupt()
    recent_losses: list[float] = state["recent_losses"]
    try:
        with interrupt:
            if resume and stop_reason():  # resumed from a checkpoint written when training had already stopped
                stopped = stop_reason()
                raise _StopTraining
            while state["epoch"] < max_epochs:
                # Both: the prepared loader re-sets its sampler's epoch from its own counter on every
                # iteration, and with several processes the sampler sits inside Accelerate's shard.
                prepared_loader.set_epoch(state["epoch"])
                sampler.set_epoch(state["epoch"])
                task.start_epoch(state["epoch"])
                if pending_task_state is not None:
                    task.load_training_state(pending_task_state)
                    pending_task_state = None
                epoch_loader = prepared_loader
                if state["batches_done"]:
                    epoch_loader = accelerator.skip_first_batches(prepared_loader, state["batches_done"])
                batches_in_epoch = state["batches_done"]
                try:
                    for batch in epoch_loader:
                        if pending_rng is not None:  # resumed: continue the random stream where it stopped
                            set_rng_state(pending_rng)
                            pending_rng = None
                        # Before the forward pass: it draws dropout masks and moves a carried state,
                        # which the checkpoint of this step boundary must not include.
                        if batches_in_epoch == state["batches_done"] and _any_process(
                            accelerator, interrupt.requested
                        )[0]:
                            raise _Interrupted
                        with accelerator.accumulate(model):
                            loss = task.loss(model, batch)
                            value = loss.item()
                            bad = divergence(value, recent_losses)
                            if _any_process(accelerator, bad is not None)[0]:
                                raise diverged(bad or "the loss diverged on another process")
                            accelerator.backward(loss)
                            if accelerator.sync_gradients:
                                # A non-finite gradient stops the run before it reaches the weights (and a
                                # checkpoint). Under fp16 the loss scaler skips such steps by design.
                                norm = None
                                if t.max_grad_norm:
                                    norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                                elif accelerator.mixed_precision != "fp16":
                                    norm = torch.nn.utils.get_total_norm(
                                        [p.grad for p in model.parameters() if p.grad is not None])
                                if (norm is not None and accelerator.mixed_precision != "fp16"
                                        and not math.isfinite(float(norm))):
                                    raise diverged(f"gradient norm became {float(norm)}")
                            optimizer.step()
                            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                                scheduler.step()
                            optimizer.zero_grad(set_to_none=True)
                        batches_in_epoch += 1
                        tokens = task.count_tokens(batch)
                        window_tokens += tokens
                        state["train_tokens"] += tokens
                        recent_losses.append(value)
                        del recent_losses[:-DIVERGENCE_WINDOW]
                        running_loss = value if running_loss is None else 0.95 * running_loss + 0.05 * value
                        state["running_loss"] = running_loss
                        if not accelerator.sync_gradients:
                            continue
                        state["global_step"] += 1
                        state["batches_done"] = batches_in_epoch
                        state["train_seconds"] = time.perf_counter() - started
                        bar.update(1)
                        if plan is not None:  # re-plan before this step's log/checkpoint records the plan
                            clock = (state["train_seconds"], state["eval_seconds"])
                            if plan.needs_clock:  # every process must make the same plan
                                clock = synchronized_clock(accelerator, *clock)
                            if plan.update(state["global_step"], *clock):
                                bar.total = plan.total_steps
                            state["budget"] = plan.state_dict()
                        if state["global_step"] % t.log_every_steps == 0:
                            now = time.perf_counter()
                            tok_s = window_tokens * accelerator.num_processes / max(now - window_start, 1e-9)
                            if accelerator.num_processes > 1:  # the loss of all processes, not just the main one
                                mean = torch.tensor([running_loss], device=accelerator.device)
                                running_loss = float(accelerator.reduce(mean, reduction="mean").item())
                                state["running_loss"] = running_loss
                            bar.set_postfix(loss=f"{running_loss:.3f}", tok_s=f"{tok_s:,.0f}")
                            log({"step": state["global_step"], "epoch": state["epoch"], "loss": running_loss,
                                 "lr": scheduler.get_last_lr()[0], "tokens_per_s": tok_s})
                            window_tokens, window_start = 0, now
                        if t.eval_every_steps and state["global_step"] % t.eval_every_steps == 0:
                            if evaluate_and_select():
                                stopped = "early_stopping"
                                raise _StopTraining
                        elif t.checkpoint_every_steps and state["global_step"] % t.checkpoint_every_steps == 0:
                            with paused():
                                checkpoint()
                        if plan is not None and plan.exhausted(state["global_step"], clock[0]):
                            stopped = "budget"
                            raise _StopTraining
                        if t.max_steps and state["global_step"] >= t.max_steps:
                            stopped = "max_steps"
                            raise _StopTraining
                        if t.max_train_minutes and state["train_seconds"] > 60 * t.max_train_minutes:
                            stopped = "max_train_minutes"
                            raise _StopTraining
                finally:
                    # Leaving an epoch early does not run Accelerate's own cleanup; without it the
                    # loader stays "active" and gather_for_metrics in a later evaluation would trim
                    # predictions by this loader's remainder.
                    epoch_loader.end()
                state["epoch"] += 1
                state["batches_done"] = 0
                if not t.eval_every_steps and evaluate_and_select():
                    stopped = "early_stopping"
                    break
    except _StopTraining:
        pass  # the closing validation below
    except _Interrupted:
        bar.close()
        checkpoint()
        raise NlpipeError(
            f"interrupted ({interrupt.name}) at step {state['global_step']}; a checkpoint is in {ckpt_root}. "
            f"Resume with: {_resume_command(recipe, run_dir)}",
            exit_code=interrupt.exit_code,
        ) from None
    except KeyboardInterrupt:  # a second signal: stop at once, the state may be mid-step
        bar.close()
        previous = latest_checkpoint(ckpt_root)
        raise NlpipeError(
            f"interrupted mid-step at step {state['global_step']}; "
            + (f"the last checkpoint, {previous.name}, is kept. Resume with: {_resume_command(recipe, run_dir)}"
               if previous is not None else "no checkpoint was written yet; rerun"),
            exit_code=interrupt.exit_code,
        ) from None
    finally:
        bar.close()
    if state["best_step"] is None or state["last_eval_step"] != state["global_step"]:
        # Stopped (max_steps, a budget) or ran out of epochs between two validations: the steps since the last
        # one count too (with a decaying schedule they are often the best); max_epochs=0: the initial model.
        evaluate_and_select()
    averaged = average_and_select() if averaging else None
    wall = time.perf_counter() - started
    train_only = max(wall - state["eval_seconds"], 1e-9)  # tokens/s counts training steps only (paused())
    tokens = state["train_tokens"]
    if accelerator.num_processes > 1:
        tokens = int(accelerator.reduce(torch.tensor([tokens], device=accelerator.device), reduction="sum").item())
    accelerator.wait_for_everyone()
    load_model(unwrapped, str(best_path))
    if accelerator.is_main_process:
        write_text_atomic(ckpt_root / "done", f"step {state['global_step']}\n")
    return TrainResult(
        global_step=state["global_step"],
        epochs=state["epoch"] + (state["batches_done"] / batches_per_epoch),
        best_metric=state["best_metric"],
        best_step=state["best_step"],
        wall_s=wall,
        train_tokens=tokens,
        tokens_per_s=tokens / train_only,
        stopped_because=stopped,
        history=state["history"],
        budget=plan.summary() if plan else None,
        checkpoint_average=averaged,
    )
