"""Which checkpoints under a run's ``checkpoints/`` are intact: file checks only, no torch.

`nlpipe.training.checkpointing` writes and loads checkpoints; this module only inspects the files (sizes,
headers, the manifest, zip directories), so `nlpipe runs` can say "resumable" by the same rule
``--resume`` uses without importing torch.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

REQUIRED_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json")
"""Files every complete checkpoint folder holds."""


def _pointer(root: Path) -> str | None:
    try:
        return (root / "latest").read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _safetensors_problem(file: Path) -> str | None:
    """Why a safetensors file cannot be complete (header unreadable, data shorter than it says)."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{file.name} is truncated ({size} bytes)"
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            return f"{file.name} is truncated (header of {header_len} bytes, file of {size})"
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{file.name} has a damaged header"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, ValueError, IndexError):
        return f"{file.name} has a damaged header"
    if 8 + header_len + end != size:
        return f"{file.name} is truncated ({size} bytes, {8 + header_len + end} expected)"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from, or None when it looks intact.

    Cheap: reads headers, the manifest of sizes and the zip directories, not the tensors."""
    if not path.is_dir():
        return "no such folder"
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            return f"{name} is missing"
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"trainer_state.json is not valid JSON ({exc.__class__.__name__})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json lacks the training position (global_step)"
    manifest = path / "manifest.json"
    if manifest.is_file():  # checkpoints written before manifests existed have none
        try:
            sizes = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            return "manifest.json is damaged"
        for name, size in sizes.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            actual = file.stat().st_size
            if actual < size:
                return f"{name} is truncated ({actual} of {size} bytes)"
            if actual != size:
                return f"{name} has {actual} bytes, {size} were written"
    for file in sorted(path.glob("*.safetensors")):
        problem = _safetensors_problem(file)
        if problem:
            return problem
    for file in sorted(path.glob("*.pt")):
        try:
            with zipfile.ZipFile(file) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return f"{file.name} is truncated or damaged"
    return None


def find_resumable(root: Path) -> tuple[Path | None, list[str]]:
    """The newest intact checkpoint under `root` (the ``latest`` pointer's first, then older ones),
    and one line per damaged checkpoint or pointer skipped on the way."""
    notes: list[str] = []
    pointer = _pointer(root)
    candidates = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    if (root / "latest").exists() and (pointer is None or not (root / pointer).is_dir()):
        what = "is empty or unreadable" if pointer is None else f"names '{pointer[:80]}', which does not exist"
        notes.append(f"{root / 'latest'} {what}")
    elif pointer is not None:
        candidates.sort(key=lambda p: p.name != pointer)  # the pointer's target first, then newest first
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, notes
        notes.append(f"{path}: {problem}")
    return None, notes


def latest_checkpoint(root: Path) -> Path | None:
    """The newest intact checkpoint under `root`, or None (see `find_resumable` for the reasons)."""
    return find_resumable(root)[0]
