"""The one training loop of nlpipe, on Accelerate (one CPU, one GPU, many GPUs, many nodes: same code).

Tasks plug in through hooks (`Task.loss`, `Task.count_tokens`, `Task.evaluate`); the loop owns the
rest: optimizer and schedule, gradient accumulation and clipping, periodic evaluation, best-model
selection, early stopping, logging, atomic checkpoints, resume, Ctrl-C and NaN handling.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader

from ..errors import NlpipeError
from ..recipe import Recipe
from ..tasks.base import Task
from .batching import LengthBucketBatchSampler
from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint, write_text_atomic


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


class _StopTraining(Exception):
    """Internal: a stopping condition (max_steps, time budget, early stopping) was met mid-epoch."""


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The optimizer a recipe names."""
    t = recipe.train
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.learning_rate, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    return torch.optim.Adam(params, lr=t.learning_rate, weight_decay=t.weight_decay)


def train_loader(task: Task, encoded: Any, recipe: Recipe) -> tuple[DataLoader, LengthBucketBatchSampler]:
    """A DataLoader over length-bucketed batches (deterministic per seed and epoch)."""
    t = recipe.train
    sampler = LengthBucketBatchSampler(
        encoded["length"], t.batch_size, batch_tokens=t.batch_tokens, seed=t.seed, bucket=t.bucket_by_length
    )
    return DataLoader(encoded, batch_sampler=sampler, collate_fn=task.collate), sampler


def _is_better(value: float, best: float | None, greater: bool) -> bool:
    return best is None or (value > best if greater else value < best)


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
) -> TrainResult:
    """Train `model` on ``encoded['train']``, selecting on ``recipe.eval.metric`` over the validation split.

    On return the model holds the best weights seen (by the selection metric).

    Raises:
        NlpipeError: on a NaN/inf loss (the last good checkpoint stays), on Ctrl-C (after saving a
            checkpoint), or when `resume` is asked for but no checkpoint exists.
    """
    from transformers import get_scheduler

    t, ev = recipe.train, recipe.eval
    ckpt_root = run_dir / "checkpoints"
    best_path = ckpt_root / "best.safetensors"
    loader, sampler = task.train_loader(encoded["train"], recipe)
    steps_per_epoch = max(1, math.ceil(len(loader) / t.gradient_accumulation_steps))
    total_steps = t.max_steps or steps_per_epoch * t.max_epochs
    optimizer = make_optimizer(model, recipe)
    scheduler = get_scheduler(
        t.lr_scheduler, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=total_steps
    )
    model, optimizer, prepared_loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(model)

    state: dict[str, Any] = {
        "global_step": 0, "epoch": 0, "batches_done": 0, "best_metric": None, "best_step": None,
        "evals_without_improvement": 0, "train_tokens": 0, "train_seconds": 0.0, "eval_seconds": 0.0,
        "history": [],
    }
    if resume:
        found = latest_checkpoint(ckpt_root)
        if found is None:
            raise NlpipeError(f"{ckpt_root}: no checkpoint to resume from; run again without --resume")
        state = load_checkpoint(found, unwrapped, optimizer, scheduler)
        accelerator.print(f"resumed from {found} (step {state['global_step']}, epoch {state['epoch']})")

    log_path = run_dir / "train_log.jsonl"

    def log(record: dict[str, Any]) -> None:
        state["history"].append(record)
        if accelerator.is_main_process:
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=state["global_step"])

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_checkpoint(ckpt_root, unwrapped, optimizer, scheduler, state)

    def evaluate_and_select() -> bool:
        """Evaluate on validation; keep the best weights; return True when early stopping triggers."""
        eval_started = time.perf_counter()
        model.eval()
        with torch.no_grad():
            metrics = task.evaluate(model, encoded["validation"], raw["validation"], accelerator, ev.batch_size)
        model.train()
        state["eval_seconds"] = state.get("eval_seconds", 0.0) + time.perf_counter() - eval_started
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
            if accelerator.is_main_process:
                ckpt_root.mkdir(parents=True, exist_ok=True)
                tmp = best_path.with_name(".best.tmp.safetensors")
                save_model(unwrapped, str(tmp))
                tmp.replace(best_path)
        else:
            state["evals_without_improvement"] += 1
        log({"step": state["global_step"], "epoch": state["epoch"], "split": "validation",
             **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        accelerator.print(
            f"step {state['global_step']}: validation {ev.metric} = {value:.2f}"
            + ("  (best)" if improved else f"  (best {state['best_metric']:.2f} at step {state['best_step']})")
        )
        checkpoint()
        patience = t.early_stopping_patience
        return patience is not None and state["evals_without_improvement"] >= patience

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps, initial=state["global_step"], disable=not (progress and accelerator.is_local_main_process),
        desc=recipe.name, dynamic_ncols=True, mininterval=1.0,
    )
    started = time.perf_counter() - state["train_seconds"]
    window_tokens, window_start, running_loss = 0, time.perf_counter(), None
    stopped = "max_epochs"
    model.train()
    try:
        while state["epoch"] < t.max_epochs:
            sampler.set_epoch(state["epoch"])
            task.start_epoch(state["epoch"])
            epoch_loader = prepared_loader
            if state["batches_done"]:
                epoch_loader = accelerator.skip_first_batches(prepared_loader, state["batches_done"])
            batches_in_epoch = state["batches_done"]
            for batch in epoch_loader:
                with accelerator.accumulate(model):
                    loss = task.loss(model, batch)
                    if not torch.isfinite(loss.detach()):
                        raise NlpipeError(
                            f"loss became {loss.item()} at step {state['global_step']} (epoch {state['epoch']}); "
                            f"training stopped, the last good checkpoint in {ckpt_root} is intact; "
                            "lower train.learning_rate or set train.max_grad_norm, then rerun"
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and t.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                batches_in_epoch += 1
                tokens = task.count_tokens(batch)
                window_tokens += tokens
                state["train_tokens"] += tokens
                value = loss.item()
                running_loss = value if running_loss is None else 0.95 * running_loss + 0.05 * value
                if not accelerator.sync_gradients:
                    continue
                state["global_step"] += 1
                state["batches_done"] = batches_in_epoch
                state["train_seconds"] = time.perf_counter() - started
                bar.update(1)
                if state["global_step"] % t.log_every_steps == 0:
                    now = time.perf_counter()
                    tok_s = window_tokens * accelerator.num_processes / max(now - window_start, 1e-9)
                    bar.set_postfix(loss=f"{running_loss:.3f}", tok_s=f"{tok_s:,.0f}")
                    log({"step": state["global_step"], "epoch": state["epoch"], "loss": running_loss,
                         "lr": scheduler.get_last_lr()[0], "tokens_per_s": tok_s})
                    window_tokens, window_start = 0, now
                if t.eval_every_steps and state["global_step"] % t.eval_every_steps == 0:
                    if evaluate_and_select():
                        stopped = "early_stopping"
                        raise _StopTraining
                elif t.checkpoint_every_steps and state["global_step"] % t.checkpoint_every_steps == 0:
                    checkpoint()
                if t.max_steps and state["global_step"] >= t.max_steps:
                    stopped = "max_steps"
                    raise _StopTraining
                if t.max_train_minutes and state["train_seconds"] > 60 * t.max_train_minutes:
                    stopped = "max_train_minutes"
                    raise _StopTraining
            state["epoch"] += 1
            state["batches_done"] = 0
            if not t.eval_every_steps and evaluate_and_select():
                stopped = "early_stopping"
                break
    except _StopTraining:
        if state["best_step"] != state["global_step"]:
            evaluate_and_select()
    except KeyboardInterrupt:
        bar.close()
        checkpoint()
        raise NlpipeError(
            f"interrupted at step {state['global_step']}; a checkpoint is in {ckpt_root}. "
            f"Resume with: nlpipe run recipe {recipe.source} --output-dir {run_dir} --resume",
            exit_code=130,
        ) from None
    finally:
        bar.close()
    if state["best_step"] is None:  # e.g. max_epochs=0
        evaluate_and_select()
    wall = time.perf_counter() - started
    train_only = max(wall - state.get("eval_seconds", 0.0), 1e-9)  # tokens/s counts training time only
    accelerator.wait_for_everyone()
    load_model(unwrapped, str(best_path))
    write_text_atomic(ckpt_root / "done", f"step {state['global_step']}\n")
    return TrainResult(
        global_step=state["global_step"],
        epochs=state["epoch"] + (state["batches_done"] / max(1, len(loader))),
        best_metric=state["best_metric"],
        best_step=state["best_step"],
        wall_s=wall,
        train_tokens=state["train_tokens"] * accelerator.num_processes,
        tokens_per_s=state["train_tokens"] * accelerator.num_processes / train_only,
        stopped_because=stopped,
        history=state["history"],
    )
