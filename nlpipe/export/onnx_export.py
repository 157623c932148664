"""The shared ONNX export + verify routine: ``nlpipe export RUN_DIR --format onnx [--quantize int8]``.

For any run folder: pick the family config by ``model_type`` (`FAMILY_CONFIGS`), trace its graphs with
``torch.onnx.export`` (the TorchScript exporter: it handles nn.LSTM/GRU/RNN and our step graphs with dynamic
batch and length; the dynamo exporter is not needed), optionally quantize the weights to int8
(``onnxruntime.quantization.quantize_dynamic``), write ``onnx_config.json``, ``tokenizer.json`` and the
standalone ``onnx_runner.py``, then check the folder against PyTorch with `verify_onnx_export` and write
``parity.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import NlpipeError
from .onnx_config import OnnxFamilyConfig, ParityReport

RUNNER_FILE = Path(__file__).with_name("onnx_runner.py")
QUANTIZE_CHOICES = ("int8",)


def family_configs() -> dict[str, type[OnnxFamilyConfig]]:
    """``model_type`` → export config class."""
    from .rnn_lm import RnnLmOnnxConfig
    from .rnn_seq2seq import RnnSeq2SeqOnnxConfig
    from .rnn_tagger import RnnTaggerOnnxConfig
    from .transformer_models import BertTokenClassificationOnnxConfig, Gpt2OnnxConfig, MarianOnnxConfig

    return {"nlpipe_rnn_tagger": RnnTaggerOnnxConfig, "nlpipe_rnn_seq2seq": RnnSeq2SeqOnnxConfig,
            "nlpipe_rnn_lm": RnnLmOnnxConfig, "bert": BertTokenClassificationOnnxConfig, "gpt2": Gpt2OnnxConfig,
            "marian": MarianOnnxConfig}


@dataclass
class OnnxExportResult:
    """What `export_onnx` wrote."""

    out_dir: Path
    files: list[str]
    parity: ParityReport | None


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise NlpipeError(f"{out_dir}: already exists and is not empty; give a new folder with --out")


def _export_graph(graph: Any, path: Path, opset: int) -> None:
    graph.module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, and warns about LSTMs with batch > 1.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.module,
            tuple(graph.example_inputs.values()),
            str(path),
            input_names=list(graph.example_inputs),
            output_names=graph.output_names,
            dynamic_axes=graph.dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )


def quantize_int8(path: Path) -> None:
    """Replace an ONNX file by its int8 dynamic quantization (weights int8, activations quantized on the fly)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = path.with_suffix(".float32.onnx")
    path.replace(float_path)
    try:
        quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
    finally:
        float_path.unlink()


def load_runner(out_dir: Path, threads: int | None = None) -> Any:
    """The exported folder's own ``onnx_runner.py``, imported from there, opened on the folder."""
    name = f"_nlpipe_onnx_runner_{abs(hash(str(out_dir.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, out_dir / "onnx_runner.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module.load(out_dir, threads=threads)


def export_onnx(
    run_dir: str | Path,
    out_dir: str | Path,
    quantize: str | None = None,
    texts: list[str] | None = None,
    verify: bool = True,
) -> OnnxExportResult:
    """Export a finished run folder to ONNX graphs that run with onnxruntime alone.

    Args:
        run_dir: a folder written by ``nlpipe run recipe``.
        out_dir: a new (or empty) folder to write.
        quantize: ``"int8"`` for dynamic int8 quantization, or None for float32.
        texts: sentences / sources / prompts to check parity on (default: the sample data's test texts).
        verify: run the parity check and write ``parity.json``.

    Returns:
        `OnnxExportResult` with the written file names and the parity report.

    Raises:
        NlpipeError: the run folder is missing files, its model family cannot be exported, the output
            folder is not empty, or a float32 export's outputs differ from PyTorch's.
    """
    from ..run import load_run

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for package in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise NlpipeError(f"ONNX export needs the '{package}' package: pip install 'nlpipe[export]'")
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise NlpipeError(f"--quantize {quantize}: unknown; choose one of {', '.join(QUANTIZE_CHOICES)}")
    _check_out_dir(out_dir)
    recipe, _, model, tokenizer = load_run(run_dir)
    model = model.float().eval()
    model_type = model.config.model_type
    configs = family_configs()
    if model_type not in configs:
        raise NlpipeError(
            f"{run_dir}/config.json: model_type '{model_type}' cannot be exported to ONNX yet; "
            f"exportable: {', '.join(sorted(configs))}"
        )
    family = configs[model_type](model, tokenizer, run_dir, recipe)

    out_dir.mkdir(parents=True, exist_ok=True)
    for graph in family.graphs():
        path = out_dir / graph.file_name
        _export_graph(graph, path, family.opset)
        if quantize == "int8":
            quantize_int8(path)
    settings = {"format": "nlpipe-onnx", "kind": family.kind, "model_type": model_type,
                "quantization": quantize or "float32", "source_run": run_dir.name, **family.runner_config(),
                **source_settings(run_dir, recipe, tokenizer)}
    (out_dir / "onnx_config.json").write_text(json.dumps(settings, indent=1, ensure_ascii=False) + "\n")
    shutil.copyfile(run_dir / "tokenizer.json", out_dir / "tokenizer.json")
    shutil.copyfile(RUNNER_FILE, out_dir / "onnx_runner.py")

    parity = None
    if verify:
        parity = verify_onnx_export(family, out_dir, texts or family.default_texts())
        (out_dir / "parity.json").write_text(json.dumps(parity.as_dict(), indent=1, ensure_ascii=False) + "\n")
        if quantize is None and not parity.ok:
            raise NlpipeError(
                f"{out_dir}: the ONNX outputs differ from PyTorch's ({parity.identical}/{parity.texts} identical, "
                f"max logit difference {parity.max_abs_logit_diff:.2g}); see {out_dir / 'parity.json'} and report it"
            )
    files = sorted(p.name for p in out_dir.iterdir())
    return OnnxExportResult(out_dir=out_dir, files=files, parity=parity)


def weights_fingerprint(run_dir: Path) -> str:
    """SHA-256 over a run folder's ``*.safetensors`` files: tells whether an export still matches the run."""
    digest = hashlib.sha256()
    for path in sorted(run_dir.glob("*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def source_settings(run_dir: Path, recipe: Any, tokenizer: Any) -> dict[str, Any]:
    """What ``nlpipe serve --onnx`` needs beyond the runner's settings: the recipe task (translation and
    summarization share the seq2seq runner), the tokenizer's input limit (the PyTorch path truncates
    generation inputs there), the source weights' fingerprint (a stale export is refused) and the run's
    card metadata (shown at ``GET /``)."""
    from ..model_card import HEADLINE

    window = getattr(tokenizer, "model_max_length", None)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = {}
    headline = {split: {name: metrics[split][name] for name in HEADLINE.get(recipe.task, [])
                        if name in metrics[split]}
                for split in ("validation", "test") if isinstance(metrics.get(split), dict)}
    return {"task": recipe.task,
            "model_max_length": window if isinstance(window, int) and window < 10**6 else None,
            "source_weights_sha256": weights_fingerprint(run_dir),
            "source": {"name": recipe.name, "description": recipe.description,
                       "model": {"type": recipe.model.get("type"), "parameters": metrics.get("parameters")},
                       "metrics": headline, "selection_metric": metrics.get("selection_metric")}}


def verify_onnx_export(family: OnnxFamilyConfig, out_dir: Path, texts: list[str]) -> ParityReport:
    """Run the folder's own runner on `texts` and compare it with the PyTorch model (`family.check_parity`)."""
    return family.check_parity(load_runner(out_dir), texts)
