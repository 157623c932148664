"""Checkpoint averaging (``train.average_checkpoints: N``): the mean of the weights at the last N validations,
or with ``train.average_checkpoints_until: best`` at the N validations that end at the best one.

Vaswani et al. (2017) averaged the last 5–20 checkpoints of their Transformers; Popel & Bojar (2018) measured
+0.2–1 BLEU from it. The training loop writes the weights of every validation to
``checkpoints/averaging/step-NNNNNNNN.safetensors`` and keeps the ones an average can still use (pruned only after
the checkpoint of the same step is written, so an interrupted run resumes to the same set). When training ends the
N of the window are averaged and the average is scored on validation like any other model; it replaces the best
single model only if it scores at least as well, so switching it on cannot make a run's model worse on validation.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file, save_model

SNAPSHOT = re.compile(r"step-(\d+)\.safetensors")


def snapshot_dir(ckpt_root: Path) -> Path:
    """Where the weights of every validation are kept."""
    return ckpt_root / "averaging"


def snapshots(ckpt_root: Path) -> list[tuple[int, Path]]:
    """(step, file) of every complete snapshot, oldest first."""
    folder = snapshot_dir(ckpt_root)
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.safetensors") if (m := SNAPSHOT.fullmatch(p.name))]
    return sorted(found)


def save_snapshot(ckpt_root: Path, model: torch.nn.Module, step: int) -> None:
    """Write the model's weights at `step` (atomically: a temporary name, then a rename)."""
    folder = snapshot_dir(ckpt_root)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}.safetensors"
    tmp = folder / f".step-{step:08d}.tmp.safetensors"
    try:
        save_model(model, str(tmp))
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)


def window(found: list[tuple[int, Path]], count: int, until_step: int | None = None) -> list[tuple[int, Path]]:
    """The `count` snapshots of `found` (oldest first) that end at `until_step`, or at the newest when None."""
    if until_step is not None:
        found = [(step, path) for step, path in found if step <= until_step]
    return found[-count:]


def prune(ckpt_root: Path, count: int, until_step: int | None = None) -> None:
    """Delete the snapshots no average can use any more (nlpipe's own files, in its own folder).

    Kept: the window of `count` ending at `until_step` (the best step; None: the newest), and the newest
    ``count - 1``, which a later best validation's window would need."""
    found = snapshots(ckpt_root)
    newest = found[-(count - 1):] if count > 1 else []
    keep = {step for step, _ in window(found, count, until_step)} | {step for step, _ in newest}
    for step, path in found:
        if step not in keep:
            path.unlink(missing_ok=True)


def drop_after(ckpt_root: Path, step: int) -> None:
    """On resume: snapshots newer than the checkpoint belong to steps that will be trained again."""
    for found_step, path in snapshots(ckpt_root):
        if found_step > step:
            path.unlink(missing_ok=True)


def average(files: list[Path], out: Path) -> None:
    """Write the element-wise mean of the weight files to `out` (float32 sums; integer tensors from the newest)."""
    total: dict[str, torch.Tensor] = {}
    for path in files:
        for name, tensor in load_file(str(path)).items():
            if not tensor.is_floating_point():
                total[name] = tensor
            elif name in total:
                total[name] += tensor.float()
            else:
                total[name] = tensor.float().clone()
    dtypes = {name: t.dtype for name, t in load_file(str(files[-1])).items()}
    mean = {name: (t / len(files)).to(dtypes[name]) if t.is_floating_point() else t for name, t in total.items()}
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(mean, str(tmp))
    tmp.replace(out)
