"""Resumable checkpoints, written atomically: a crash at any moment leaves the last good one intact.

A checkpoint folder holds the model weights (safetensors), optimizer and scheduler state, the RNG
states, ``trainer_state.json`` (epoch, position in the epoch, step, best score, log) and, when the task
carries tensors between batches (a recurrent LM's state), ``task_state.safetensors``. It is
written under a temporary name, then renamed; ``checkpoints/latest`` (itself replaced atomically)
names the newest complete one. Everything is loaded with ``weights_only=True``: nothing is unpickled.

Each checkpoint also holds ``manifest.json`` (every file's size), written last: `checkpoint_problem`
checks it, the safetensors header and the zip directory of each ``*.pt`` file, so a truncated or
half-copied checkpoint is recognised before anything is loaded. `find_resumable` walks from the
``latest`` pointer to older checkpoints until it finds an intact one (two are kept), saying why it
skipped each. A failed write (a full disk) removes its partial folder and leaves ``latest`` as it was.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from ..errors import NlpipeError
from .checkpoint_files import (  # noqa: F401  (re-exported: the loop and run.py import them from here)
    REQUIRED_FILES,
    _pointer,
    checkpoint_problem,
    find_resumable,
    latest_checkpoint,
)

#: How many complete checkpoints are kept: the newest, and one to fall back to if it is damaged.
KEEP_CHECKPOINTS = 2
#: Files every checkpoint must hold (more are optional: rng_per_process.pt, task_state.safetensors).


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary file + rename, so readers never see half a file.

    On failure (a full disk) the temporary file is removed and `path` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporary_files(run_dir: Path) -> list[Path]:
    """Remove what an interrupted write leaves behind (temporary checkpoint folders, half-written
    ``latest``/``best``/log files): only names that nlpipe's own atomic writes use. Returns them."""
    root = run_dir / "checkpoints"
    found = [*root.glob(".step-*"), *root.glob(".latest.*"), *root.glob(".best.tmp*"),
             *root.glob("averaging/.*.tmp*"),
             *run_dir.glob(".train_log.jsonl.*")]
    for stale in found:
        if stale.is_symlink() or not stale.is_dir():
            stale.unlink(missing_ok=True)
        else:
            shutil.rmtree(stale, ignore_errors=True)
    return found


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
    keep: int = KEEP_CHECKPOINTS,
    *,
    rng_states: list[dict[str, Any]] | None = None,
    task_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``root/step-N`` atomically, point ``root/latest`` at it, prune older ones; return its path.

    Args:
        rng_states: one `rng_state()` per process (index = process index) when training with several
            processes; by default this process's state only.
        task_state: the task's carried tensors (`Task.training_state`); written when not empty.

    Raises:
        OSError: the write failed (e.g. ENOSPC). The partial folder is removed and ``latest`` still
            names the previous checkpoint.
    """
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{trainer_state['global_step']:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    final = root / name
    try:
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
        sizes = {file.name: file.stat().st_size for file in tmp.iterdir()}
        (tmp / "manifest.json").write_text(json.dumps({"files": sizes}))
        for file in tmp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text_atomic(root / "latest", name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if final.exists() and _pointer(root) != name:  # renamed but never made the latest: take it back
            shutil.rmtree(final, ignore_errors=True)
        raise
    complete = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


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

    Raises:
        NlpipeError: the checkpoint does not fit the model (another model size, vocabulary or label
            set) or cannot be read.
    """
    try:
        load_model(model, str(path / "model.safetensors"))
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()
        raise NlpipeError(
            f"{path / 'model.safetensors'}: does not fit the model this recipe and data build "
            f"({first[-1][:200] if first else exc.__class__.__name__}); resume with the recipe, overrides and "
            "data the run started with"
        ) from None
    try:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        if restore_rng:
            set_rng_state(load_rng_state(path))
        return json.loads((path / "trainer_state.json").read_text())
    except (RuntimeError, ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NlpipeError(
            f"{path}: cannot be loaded ({str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__}); "
            "delete this checkpoint folder to resume from the one before it, or rerun with --overwrite"
        ) from None


def load_task_state(path: Path) -> dict[str, torch.Tensor]:
    """The task's carried tensors saved in a checkpoint (empty when it carried none)."""
    file = path / "task_state.safetensors"
    return load_file(str(file)) if file.is_file() else {}


#: Recipe keys that may change between a run and its resume (they do not touch the training).
RESUME_MAY_CHANGE = ("description", "push_to_hub", "hub")


def data_fingerprint(dataset: Any) -> str:
    """A content hash of every split of a data set (rows in order), so that a resume can tell whether
    it trains on the same data."""
    import hashlib

    digest = hashlib.sha256()
    for split in sorted(dataset):
        digest.update(f"\0{split}\0".encode())
        for batch in dataset[split].iter(batch_size=1000):
            digest.update(json.dumps(batch, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8",
                                                                                                  "surrogatepass"))
    return digest.hexdigest()[:24]


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            name = f"{prefix}{key}"
            if not prefix and key in RESUME_MAY_CHANGE:
                continue
            out += _differences(old.get(key), new.get(key), name + ".")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: {json.dumps(old)[:60]} -> {json.dumps(new)[:60]}"]
    return []


def check_resume_identity(run_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume `run_dir` with another recipe, data source or data than it started with.

    `identity` holds what this invocation would train with: ``recipe`` (`Recipe.to_dict()`), ``data``
    (`describe_source`) and, once the data is loaded, ``data_sha256`` (`data_fingerprint`). It is
    compared with what the newest intact checkpoint recorded (or, for checkpoints older than that
    record, with ``recipe.yaml``), read through today's recipe schema, so settings added to nlpipe since
    the run started count as their defaults. Call it before writing anything.

    Raises:
        NlpipeError: one line naming what differs.
    """
    found, _ = find_resumable(run_dir / "checkpoints")
    if found is None:
        return  # the caller reports the missing checkpoint
    saved = json.loads((found / "trainer_state.json").read_text(encoding="utf-8")).get("identity") or {}
    if "recipe" not in saved and (run_dir / "recipe.yaml").is_file():
        from ..recipe import parse_recipe, read_yaml

        saved = {"recipe": parse_recipe(read_yaml(run_dir / "recipe.yaml"), str(run_dir / "recipe.yaml")).to_dict()}
    saved = json.loads(json.dumps(saved, default=str))
    now = json.loads(json.dumps(identity, default=str))  # the JSON form the checkpoint holds (lists, not tuples)
    if isinstance(saved.get("recipe"), dict):
        saved["recipe"] = _through_todays_schema(saved["recipe"])
    problems = []
    if "recipe" in saved and "recipe" in now:
        changed = _differences(saved["recipe"], now["recipe"])
        if changed:
            problems.append("recipe differs (" + "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "") + ")")
    if "data" in saved and "data" in now and saved["data"].get("source") != now["data"].get("source"):
        problems.append(f"data source differs (the run used {_source_words(saved['data'])}, this is "
                        f"{_source_words(now['data'])})")
    elif saved.get("data_sha256") and now.get("data_sha256") and saved["data_sha256"] != now["data_sha256"]:
        problems.append("the data differs from the data the run started with (content hash "
                        f"{saved['data_sha256'][:12]} -> {now['data_sha256'][:12]})")
    if problems:
        raise NlpipeError(
            f"{run_dir}: cannot resume: {'; '.join(problems)}; resume with the recipe, overrides and data the run "
            "started with, or start a new run (another --output-dir, or --overwrite)"
        )


def _through_todays_schema(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe recorded by an older nlpipe, read the way this one reads recipes: settings added since take
    their defaults, so upgrading nlpipe in the middle of a run does not read as a change of recipe (a setting
    left at its default trains as before; one set otherwise still differs). A recipe this nlpipe cannot read
    (a setting removed since) is compared as recorded."""
    from ..recipe import parse_recipe

    try:
        return json.loads(json.dumps(parse_recipe(recipe).to_dict(), default=str))
    except NlpipeError:
        return recipe


def _source_words(data: dict[str, Any]) -> str:
    if data.get("source") == "sample":
        return "--data sample"
    if data.get("source") == "dir":
        return f"--data-dir {data.get('data_dir')}"
    return "the Hub"
