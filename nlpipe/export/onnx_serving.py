"""``nlpipe serve PATH --onnx``: an ONNX export behind the server's `Predictor` interface.

PATH is either an export folder (``nlpipe export RUN_DIR --format onnx [--quantize int8] [--out DIR]``) or a
run folder. For a run folder the float32 export beside it, ``RUN_DIR-onnx`` (``nlpipe export``'s default
folder), is used when it matches the run's weights, and written there first when it does not exist yet (once;
later starts reuse it). An export of other weights (the run was trained again) is refused, never replaced.

`OnnxPredictor` answers with the same keys as the PyTorch predictor and, by construction, the same results:

- token classification: the runner's entities (the CRF's Viterbi path in numpy, float32 graphs), so the same
  entity groups, words and offsets as ``pipeline("ner", aggregation_strategy="simple")``; scores agree to
  float precision.
- translation / summarization: the run's generation settings (greedy or beam, ``max_new_tokens``, ...) as
  ``generate()`` uses them, sources truncated at the tokenizer's ``model_max_length`` as the PyTorch path does.
- causal LM: greedy continuation, or sampling when the run's generation config samples (then, as with
  PyTorch, answers vary from call to call).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import NlpipeError

CONFIG_NAME = "onnx_config.json"
EXPORT_SUFFIX = "-onnx"  # nlpipe export's default folder: RUN_DIR-onnx beside the run
TASKS_BY_KIND = {"token-classification": ("token-classification",), "seq2seq": ("translation", "summarization"),
                 "causal-lm": ("causal-lm",)}


def read_export_config(folder: Path) -> dict[str, Any] | None:
    """The folder's ``onnx_config.json`` when it is an nlpipe ONNX export, else None."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and config.get("format") == "nlpipe-onnx" else None


def resolve_onnx_folder(path: str | Path, *, announce: bool = True) -> Path:
    """The ONNX export to serve for `path`: the export folder itself, or a run folder's ``RUN_DIR-onnx``
    (exported there first when missing).

    Raises:
        NlpipeError: `path` is neither, or ``RUN_DIR-onnx`` exists but is not an export of this run's weights.
    """
    from .onnx_export import weights_fingerprint

    path = Path(path)
    if not path.is_dir():
        raise NlpipeError(f"{path}: no such run folder or ONNX export folder")
    if read_export_config(path) is not None:
        return path
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise NlpipeError(f"{path}: neither a finished run folder nor an ONNX export (no {CONFIG_NAME}); "
                          "give a run folder or a folder written by nlpipe export --format onnx")
    run_dir = path.resolve()
    sibling = run_dir.parent / f"{run_dir.name}{EXPORT_SUFFIX}"
    if not sibling.exists():
        if announce:
            print(f"--onnx: exporting {path} to {sibling} (once; later starts reuse it)", file=sys.stderr, flush=True)
        _export_beside(run_dir, sibling)
    config = read_export_config(sibling)
    if config is None:
        raise NlpipeError(f"{sibling}: exists but is not an ONNX export of {path}; move it away, or give an "
                          "export folder to serve")
    if config.get("source_weights_sha256") != weights_fingerprint(run_dir):
        raise NlpipeError(f"{sibling}: an ONNX export of other weights than {path}'s (the run was trained again, "
                          "or it was exported by an older nlpipe); delete it to export again, or serve it directly")
    return sibling


def _export_beside(run_dir: Path, target: Path) -> None:
    """Export `run_dir` (float32, parity-checked) into a temporary folder, then rename it to `target`, so an
    interrupted export leaves no half folder and two servers starting at once do not write into each other."""
    from .onnx_export import export_onnx

    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        export_onnx(run_dir, scratch)
        try:
            os.rename(scratch, target)
        except OSError:
            if not target.exists():
                raise
            # Another process finished the same export first: use theirs (checked by the caller).
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)  # our own temporary folder only


class OnnxPredictor:
    """An ONNX export served through its own ``onnx_runner.py`` (onnxruntime), with the PyTorch predictor's keys.

    Args:
        folder: an export folder (`resolve_onnx_folder` finds it for a run folder).
        batch_size: texts per graph call (taggers; generation runs one text at a time, as the runner does).
        threads: onnxruntime intra-op threads (None: onnxruntime's default, all cores).

    Raises:
        NlpipeError: the folder is not an ONNX export nlpipe can serve.
    """

    backend = "onnx"

    def __init__(self, folder: str | Path, batch_size: int = 32, threads: int | None = None) -> None:
        from ..serving.predictors import TASK_ENDPOINTS
        from .onnx_export import load_runner

        self.folder = Path(folder)
        config = read_export_config(self.folder)
        if config is None:
            raise NlpipeError(f"{self.folder}/{CONFIG_NAME}: missing or not an nlpipe ONNX export; "
                              "write one with nlpipe export RUN_DIR --format onnx")
        kind = config.get("kind")
        task = config.get("task") or (TASKS_BY_KIND.get(kind, ("",))[0] if kind != "seq2seq" else None)
        if task not in TASK_ENDPOINTS or task not in TASKS_BY_KIND.get(kind, ()):
            raise NlpipeError(f"{self.folder}/{CONFIG_NAME}: cannot tell which task this '{kind}' export serves "
                              "(exported by an older nlpipe); export the run again")
        self.config = config
        self.task = task
        self.batch_size = batch_size
        self.runner = load_runner(self.folder, threads=threads)
        window = config.get("model_max_length")
        self.max_tokens = int(window) if isinstance(window, int) else None
        if kind == "seq2seq" and self.max_tokens:
            # The PyTorch path tokenizes sources with truncation=True at model_max_length.
            self.runner.tokenizer.enable_truncation(max_length=self.max_tokens)
        self.metadata = export_metadata(self.folder, config)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """One result per text, with the keys of `nlpipe.serving.predictors` (see its module docstring)."""
        if self.task == "token-classification":
            return [{"text": text, "entities": [_plain(e) for e in entities]}
                    for text, entities in zip(texts, self._entities(texts), strict=True)]
        if self.task == "causal-lm":
            return [self._continue(text) for text in texts]
        key = "translation" if self.task == "translation" else "summary"
        outputs = [self.runner.tokenizer.decode(ids, skip_special_tokens=True).strip()
                   for ids in self.runner.generate_ids(list(texts))]
        return [{"text": text, key: output} for text, output in zip(texts, outputs, strict=True)]

    def _entities(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        if self.config.get("model_type") == "bert" and self.max_tokens:
            # A Transformer's graph has a fixed number of positions: refuse what PyTorch would window.
            for text in texts:
                count = len(self.runner.tokenizer.encode(text).ids)
                if count > self.max_tokens:
                    raise NlpipeError(f"a text of {count} tokens is longer than this ONNX model's "
                                      f"{self.max_tokens} positions; send shorter texts, or serve without --onnx")
        return self.runner(list(texts), batch_size=self.batch_size)

    def _continue(self, text: str) -> dict[str, Any]:
        # As the causal-lm task's predict_texts: the prompt kept as given, the continuation decoded alone.
        prompt_ids = self.runner.tokenizer.encode(text, add_special_tokens=False).ids
        if not prompt_ids:
            raise NlpipeError(f"input '{text}': no tokens; give a non-empty prompt")
        do_sample = bool(self.runner.generation.get("do_sample", False))
        ids = self.runner.generate_ids(text, do_sample=do_sample)
        start = len(self.runner.tokenizer.encode(text).ids)
        continuation = self.runner.tokenizer.decode(ids[start:], skip_special_tokens=True)
        return {"text": text, "continuation": continuation, "generated_text": text + continuation}


def _plain(entity: dict[str, Any]) -> dict[str, Any]:
    return {"entity_group": str(entity["entity_group"]), "score": float(entity["score"]), "word": str(entity["word"]),
            "start": int(entity["start"]), "end": int(entity["end"])}


def export_metadata(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /`` shows for an export: the source run's card metadata (as for a run folder) and the export's
    own settings (folder name, model type, quantization)."""
    from ..model_card import PIPELINE_TAGS

    source = config.get("source") or {}
    return {"name": source.get("name") or config.get("source_run"), "task": config.get("task"),
            "pipeline_tag": PIPELINE_TAGS.get(config.get("task")), "description": source.get("description"),
            "model": source.get("model") or {"type": config.get("model_type")}, "metrics": source.get("metrics") or {},
            "selection_metric": source.get("selection_metric"),
            "onnx": {"folder": folder.name, "model_type": config.get("model_type"),
                     "quantization": config.get("quantization"), "source_run": config.get("source_run")}}


def onnx_predictor(path: str | Path, batch_size: int = 32) -> OnnxPredictor:
    """The predictor ``nlpipe serve PATH --onnx`` serves: PATH an export folder, or a run folder whose
    ``RUN_DIR-onnx`` export is used (and written first when missing); see `resolve_onnx_folder`."""
    for package in ("onnxruntime", "tokenizers"):
        if importlib.util.find_spec(package) is None:
            raise NlpipeError(f"--onnx needs the '{package}' package: pip install 'nlpipe[export]'")
    return OnnxPredictor(resolve_onnx_folder(path), batch_size=batch_size)


__all__ = ["OnnxPredictor", "onnx_predictor", "resolve_onnx_folder", "export_metadata", "read_export_config"]
