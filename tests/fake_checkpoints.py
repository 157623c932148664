"""Fake checkpoint folders for tests that need one `--resume` accepts (a module of its own: every test
folder may have a `conftest`, so `from conftest import ...` is ambiguous)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def write_intact_checkpoint(checkpoints: Path, step: int, state: dict | None = None) -> Path:
    """A checkpoint folder that `--resume`'s file checks accept (every required file, whole), named by
    ``checkpoints/latest``; the tensors are placeholders. Returns the step folder."""
    from safetensors.torch import save_file

    from nlpipe.training.checkpoint_files import REQUIRED_FILES

    folder = checkpoints / f"step-{step:08d}"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    for name in REQUIRED_FILES:
        if name.endswith(".pt"):
            torch.save({}, folder / name)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, **(state or {})}))
    (checkpoints / "latest").write_text(folder.name)
    return folder


def replace_trainer_state(folder: Path, state: dict) -> None:
    """Rewrite a real checkpoint's ``trainer_state.json`` (as an older or another nlpipe would have written it),
    keeping its manifest of file sizes consistent so that the checkpoint still counts as intact."""
    (folder / "trainer_state.json").write_text(json.dumps(state))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["trainer_state.json"] = (folder / "trainer_state.json").stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
