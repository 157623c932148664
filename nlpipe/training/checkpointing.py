"""Resumable checkpoints, written atomically: a crash at any moment leaves the last good one intact.

A checkpoint folder holds the model weights (safetensors), optimizer and scheduler state, the RNG
states, ``trainer_state.json`` (epoch, position in the epoch, step, best score, log) and, when the task
carries tensors between batches (a recurrent LM's state), ``task_state.safetensors``. It is
written under a temporary name, then renamed; ``checkpoints/latest`` (itself replaced atomically)
names the newest complete one. Everything is loaded with ``weights_only=True``: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary file + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors / plain lists (loadable with weights_only)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, np_gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    trainer_state: dict[str, Any],
    keep: int = 1,
    *,
    rng_states: list[dict[str, Any]] | None = None,
    task_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``root/step-N`` atomically, point ``root/latest`` at it, prune older ones; return its path.

    Args:
        rng_states: one `rng_state()` per process (index = process index) when training with several
            processes; by default this process's state only.
        task_state: the task's carried tensors (`Task.training_state`); written when not empty.
    """
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{trainer_state['global_step']:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    states = rng_states or [rng_state()]
    torch.save(states[0], tmp / "rng.pt")
    if len(states) > 1:
        torch.save(states, tmp / "rng_per_process.pt")
    if task_state:
        save_file({name: t.detach().cpu().contiguous() for name, t in task_state.items()},
                  str(tmp / "task_state.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
    for file in tmp.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(root / "latest", name)
    complete = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "trainer_state.json").is_file() else None


def load_rng_state(path: Path, process_index: int = 0, num_processes: int = 1) -> dict[str, Any]:
    """The RNG state a checkpoint holds for one process (process 0's when the process count changed)."""
    per_process = path / "rng_per_process.pt"
    if num_processes > 1 and per_process.is_file():
        states = torch.load(per_process, weights_only=True)
        if len(states) == num_processes:
            return states[process_index]
    return torch.load(path / "rng.pt", weights_only=True)


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, *, restore_rng: bool = True
) -> dict[str, Any]:
    """Load a checkpoint into the given objects; return its trainer state.

    With `restore_rng` the RNG states are restored at once; the training loop passes False and
    restores them (`load_rng_state` + `set_rng_state`) right before its first batch, because
    building the data iterator in between must not shift the random stream.
    """
    load_model(model, str(path / "model.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if restore_rng:
        set_rng_state(load_rng_state(path))
    return json.loads((path / "trainer_state.json").read_text())


def load_task_state(path: Path) -> dict[str, torch.Tensor]:
    """The task's carried tensors saved in a checkpoint (empty when it carried none)."""
    file = path / "task_state.safetensors"
    return load_file(str(file)) if file.is_file() else {}
