"""``nlpipe export RUN_DIR --format onnx [--quantize int8] [--out DIR]``: check the options, export, report."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import NlpipeError
from .onnx_export import export_onnx

FORMATS = ("onnx",)


def export_onnx_cli(run_dir: Path, out_dir: Path | None, export_format: str | None, quantize: str | None) -> None:
    """Export `run_dir` to ONNX (into `out_dir`, default ``RUN_DIR-onnx`` beside it) and print a summary.

    Raises:
        NlpipeError: unknown format, ``--quantize`` without ``--format onnx``, or what `export_onnx` raises.
    """
    if export_format is None:
        raise NlpipeError("export: --quantize needs --format onnx")
    if export_format not in FORMATS:
        raise NlpipeError(f"export: --format {export_format}: unknown; choose {', '.join(FORMATS)}")
    if out_dir is None:
        suffix = "-onnx" if quantize is None else f"-onnx-{quantize}"
        out_dir = run_dir.resolve().parent / f"{run_dir.resolve().name}{suffix}"
    result = export_onnx(run_dir, out_dir, quantize=quantize)
    typer.echo(f"exported {run_dir} to {result.out_dir}: {', '.join(result.files)}")
    if result.parity is not None:
        report = result.parity
        typer.echo(
            f"parity with PyTorch on {report.texts} texts: {report.identical} identical, "
            f"max logit difference {report.max_abs_logit_diff:.2g} (tolerance {report.logit_tolerance:g}"
            f"{'' if quantize is None else ', not enforced for ' + quantize})"
        )
    typer.echo(f"run it: python {result.out_dir / 'onnx_runner.py'} {result.out_dir} \"your text\"")
