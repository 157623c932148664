"""The ``nlpipe`` command: a thin typer layer that parses, calls plain functions and reports.

Problems a user can cause are printed as one line (``error: <file/key/line>: <what to do>``) with a
non-zero exit code and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from .errors import NlpipeError

# Plain (click-style) help and errors: typer's rich panels print `<bool>` after every flag (typer 0.29
# renders each option's type, flags included) and importing rich costs time on every call.
_PLAIN = {"rich_markup_mode": None}
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, **_PLAIN,
                  help="Train, evaluate, compare and ship sequence models for NLP.")
run_app = typer.Typer(no_args_is_help=True, help="Run things: `nlpipe run recipe NAME`.", **_PLAIN)
recipes_app = typer.Typer(no_args_is_help=True, help="List, show and validate recipes.", **_PLAIN)
tokenizer_app = typer.Typer(no_args_is_help=True, help="Train tokenizers from specs in tokenizers/.", **_PLAIN)
app.add_typer(run_app, name="run")
app.add_typer(recipes_app, name="recipes")
app.add_typer(tokenizer_app, name="tokenizer")

DataOpt = Annotated[str | None, typer.Option("--data", help="'sample' for the built-in sample data, 'hub' for the Hub.")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Local files laid out like shared/data (default $NLPIPE_DATA_DIR).")
]
NoProgressOpt = Annotated[
    bool, typer.Option("--no-progress", help="No progress bars (encoding, weight loading, evaluation included).")
]


def _progress(no_progress: bool) -> None:
    """Apply --no-progress before anything heavy is imported (see nlpipe/progress.py)."""
    if no_progress:
        from .progress import set_progress

        set_progress(False)


@contextlib.contextmanager
def _logs_to_stderr():
    """Route everything printed while a command works (progress notes, per-step scores, library messages)
    to stderr, so stdout carries only the command's result: `nlpipe eval RUN | jq` gets pure JSON."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _relaunch_distributed(num_processes: int) -> None:
    """Re-run this very command under torchrun with N processes (DDP through Accelerate)."""
    args = []
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--num-processes":
            skip = True
            continue
        if arg.startswith("--num-processes="):
            continue
        args.append(arg)
    # torchrun runs inside this process: a worker that failed has printed its one-line error, and we
    # exit with its code instead of showing torchrun's ChildFailedError traceback.
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, without its banner
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(["--standalone", f"--nproc_per_node={num_processes}", "-m", "nlpipe", *args]))
    except ChildFailedError as exc:
        codes = {rank: failure.exitcode for rank, failure in exc.failures.items()}
        if 0 not in codes:  # only rank 0 prints errors (see main); say which process failed
            rank, code = next(iter(codes.items()))
            typer.echo(f"error: process {rank} of {num_processes} failed (exit code {code}); see its output above",
                       err=True)
        raise typer.Exit(next((c for c in codes.values() if c > 0), 1)) from None
    raise typer.Exit(0)


@run_app.command("recipe")
def run_recipe_cli(
    name: Annotated[str, typer.Argument(help="Recipe name (see `nlpipe recipes list`) or path to a .yaml file.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Run folder (default runs/NAME).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder.")] = False,
    num_processes: Annotated[int, typer.Option("--num-processes", help="Train with N processes (DDP).")] = 1,
    no_progress: NoProgressOpt = False,
) -> None:
    """Train and evaluate a recipe, writing a Hub-ready run folder."""
    if num_processes < 1:
        raise NlpipeError(f"--num-processes {num_processes}: use a value >= 1 (processes to train with)")
    _progress(no_progress)
    if num_processes > 1 and "WORLD_SIZE" not in os.environ:
        _relaunch_distributed(num_processes)
    from .run import run_recipe

    with _logs_to_stderr():
        result = run_recipe(
            name, overrides or [], data=data, data_dir=data_dir, output_dir=output_dir, resume=resume,
            overwrite=overwrite, progress=not no_progress,
        )
    if int(os.environ.get("RANK", "0")) == 0:
        test = result.metrics.get("test", {})
        metric = result.metrics.get("selection_metric", "")
        line = f"done: {result.run_dir}"
        if metric in test:
            line += f"  test {metric} = {test[metric]:.2f}"
        typer.echo(line)


@recipes_app.command("list")
def recipes_list() -> None:
    """List the recipes (./recipes/ first, then the packaged ones)."""
    from .recipe import list_recipes, read_yaml

    for name, path in list_recipes().items():
        raw = read_yaml(path) or {}
        typer.echo(f"{name:32s} {raw.get('task', ''):22s} {raw.get('description', '')}")


@recipes_app.command("show")
def recipes_show(
    name: Annotated[str, typer.Argument(help="Recipe name or path.")],
    show_all: Annotated[bool, typer.Option("--all", help="Every key: resolved value, type, default, meaning.")]
    = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="key.sub=value override (with --all).")]
    = None,
) -> None:
    """Print a recipe file, or with --all every setting it resolves to."""
    from .recipe import load_recipe, resolve_recipe_path

    if not show_all:
        if overrides:
            raise NlpipeError("--set shows its effect with --all: nlpipe recipes show NAME --all --set key=value")
        typer.echo(resolve_recipe_path(name).read_text(encoding="utf-8"), nl=False)
        return
    from .recipe_settings import format_settings, recipe_settings

    typer.echo(format_settings(recipe_settings(load_recipe(name, overrides or []))))


@recipes_app.command("validate")
def recipes_validate(
    paths: Annotated[list[str], typer.Argument(help="Recipe names or paths; - reads a recipe from stdin.")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help="key.sub=value override.")] = None,
) -> None:
    """Check recipes (keys, types, required fields, model settings, tokenizer spec)."""
    from .init_from import REUSE_TOKENIZER
    from .recipe import load_recipe, parse_yaml, recipe_from_yaml
    from .tokenizer_training import load_spec

    for path in paths:
        if path == "-":  # `nlpipe recipes show NAME | nlpipe recipes validate -`
            recipe = recipe_from_yaml(parse_yaml(sys.stdin.read(), "<stdin>"), "<stdin>", overrides or [])
        else:
            recipe = load_recipe(path, overrides or [])
        if recipe.tokenizer["spec"] != REUSE_TOKENIZER:  # init_from's tokenizer is checked when the run starts
            load_spec(recipe.tokenizer["spec"], {k: v for k, v in recipe.tokenizer.items() if k != "spec"},
                      recipe.source)
        typer.echo(f"ok: {recipe.source} ({recipe.task}, model {recipe.model['type']})")


@app.command("eval")
def eval_cli(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    split: Annotated[str, typer.Option("--split", help="train, validation or test.")] = "test",
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Evaluate a finished run on a split and print the metrics as JSON."""
    _progress(no_progress)
    from .run import evaluate_run

    with _logs_to_stderr():
        scores = evaluate_run(run_dir, split, data=data, data_dir=data_dir)
    typer.echo(json.dumps(scores, indent=2))


@app.command("predict")
def predict_cli(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    text: Annotated[str | None, typer.Argument(help="The text (or use --file).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="One text per line.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="text | json | conll")] = "text",
    no_progress: NoProgressOpt = False,
) -> None:
    """Use a trained model on raw text."""
    _progress(no_progress)
    from .data.readers import open_text
    from .prediction import predict

    if output_format not in ("text", "json", "conll"):
        raise NlpipeError(f"--format {output_format}: choose text, json or conll")
    if file is not None:
        texts = [line for _, line in open_text(file) if line.strip()]
        source = str(file)
    elif text is not None:
        texts, source = [text], "text argument"
    else:
        raise NlpipeError("nothing to predict: give a TEXT argument or --file FILE")
    with _logs_to_stderr():
        results = predict(run_dir, texts, source)
    for result in results:
        if output_format == "json":
            typer.echo(json.dumps(result, ensure_ascii=False))
        elif output_format == "conll" and "words" in result:
            for w in result["words"]:
                typer.echo(f"{w['word']}\t{w['tag']}")
            typer.echo("")
        elif "entities" in result:
            found = ", ".join(f"{e['word']} ({e['entity_group']})" for e in result["entities"]) or "(no entities)"
            typer.echo(f"{result['text']}\n  → {found}")
        else:
            typer.echo(result.get("output", json.dumps(result, ensure_ascii=False)))


@tokenizer_app.command("train")
def tokenizer_train_cli(
    spec: Annotated[str, typer.Argument(help="Spec name in tokenizers/ or a path.")],
    recipe: Annotated[str, typer.Option("--recipe", help="Train on this recipe's training split.")] = "ner-bilstm",
    data: DataOpt = "sample",
    data_dir: DataDirOpt = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where to save the tokenizer.")] = Path("tokenizer"),
    no_progress: NoProgressOpt = False,
) -> None:
    """Train a tokenizer on a recipe's training split and save it as a PreTrainedTokenizerFast."""
    _progress(no_progress)
    from .data.catalog import load_data
    from .recipe import load_recipe
    from .tasks import get_task
    from .tokenizer_training import check_tokenizer_output, load_spec, train_tokenizer

    check_tokenizer_output(output_dir)  # before loading anything: never into a run folder
    loaded = load_recipe(recipe)
    if data_dir is not None:
        data = None
    with _logs_to_stderr():
        dataset = load_data(loaded.data.dataset, source=data, data_dir=data_dir,
                            max_train_examples=loaded.data.max_train_examples)
        task = get_task(loaded)
        tokenizer = train_tokenizer(load_spec(spec), task.tokenizer_texts(dataset["train"]), output_dir)
    typer.echo(f"saved {type(tokenizer).__name__} with {len(tokenizer):,} tokens to {output_dir}")


@app.command("cache-dir")
def cache_dir_cli() -> None:
    """Print the folder where nlpipe caches tokenizers and downloaded data (delete it to clear)."""
    from .tokenizer_training import cache_dir

    typer.echo(str(cache_dir()))


@app.command("compare")
def compare_cli(
    run_dirs: Annotated[list[Path] | None, typer.Argument(help="Finished run folders.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Report folder (report.md, report.html, PNGs).")] = Path("report"),
    recipes: Annotated[str | None, typer.Option("--recipes", help="Run recipes matching this glob first.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="key.sub=value for every --recipes run.")] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where --recipes runs go.")] = Path("runs"),
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Run each --recipes recipe with N seeds; "
                                       "the leaderboard shows mean ± sd.")] = 1,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Compare runs: a leaderboard per task (mean ± sd over seeds), a Markdown + self-contained HTML report, plots.

    With --recipes and --set train.budget.tokens=N every matching recipe is trained under the same budget
    (its own max_steps, max_train_minutes and early stopping switched off)."""
    _progress(no_progress)
    from .compare import compare_recipes, compare_runs

    with _logs_to_stderr():
        if recipes:
            report = compare_recipes(recipes, out, overrides=overrides or [], data=data, data_dir=data_dir,
                                     runs_dir=runs_dir, extra_run_dirs=list(run_dirs or []), seeds=seeds)
        else:
            report = compare_runs(list(run_dirs or []), out)
    typer.echo(f"wrote {report.markdown} and {report.html} ({len(report.runs)} runs, {len(report.figures)} plots)")


@app.command("attention")
def attention_cli(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (or any saved model + tokenizer folder).")],
    sentence: Annotated[str, typer.Argument(help="The source sentence.")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write (more files get suffixes).")] = Path("attention.png"),
    focus: Annotated[str | None, typer.Option("--focus", help="Also plot what this token attends to.")] = None,
) -> None:
    """Draw attention maps: cross-attention of RNN seq2seq models, per-layer/head maps of Transformers."""
    from .attention_maps import draw_attention_for_run

    with _logs_to_stderr():
        paths = draw_attention_for_run(run_dir, sentence, out, focus=focus)
    for path in paths:
        typer.echo(f"wrote {path}")


@app.command("experiment")
def experiment_cli(
    name: Annotated[str, typer.Argument(help="long-range, vanishing-gradients, gru-vs-lstm, bidirectional, "
                                             "attention-vs-none or parallelism.")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder for table.md + figure (default experiments/NAME).")]
    = None,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny settings (seconds), for tests.")] = False,
    data_dir: DataDirOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Measure a classic claim about RNNs, LSTMs, GRUs, attention and Transformers: a table and a figure."""
    _progress(no_progress)
    from .experiments import run_experiment

    with _logs_to_stderr():
        result = run_experiment(name, out or Path("experiments") / name, quick=quick, data_dir=data_dir)
    typer.echo(result.table)
    typer.echo(f"\nwrote {result.table_path} and {result.figure_path}")


@app.command("push")
def push_cli(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    repo_id: Annotated[str, typer.Argument(help="Hub repository id, e.g. your-name/conll-bilstm-crf.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository private (new repos only).")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to push to (created if missing).")] = None,
    commit_message: Annotated[str | None, typer.Option("--commit-message", help="Commit message.")] = None,
) -> None:
    """Push a run folder to the Hugging Face Hub (model, code, tokenizer, card); token from HF_TOKEN or login."""
    from .hub import left_out_files, push_run

    with _logs_to_stderr():
        url = push_run(run_dir, repo_id, private=private, revision=revision, commit_message=commit_message)
    typer.echo(f"pushed {run_dir} to {url}")
    if left := left_out_files(run_dir):
        typer.echo(f"left out (not files nlpipe ships): {', '.join(left)}")


@app.command("export")
def export_cli(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    out_dir: Annotated[Path | None, typer.Argument(help="Where to write the Hub-ready copy.")] = None,
    repo_id: Annotated[str | None, typer.Option("--repo-id", help="Repository id shown in the card.")] = None,
    export_format: Annotated[str | None, typer.Option(
        "--format", help="'onnx': ONNX graphs + a standalone onnxruntime runner (docs/export.md).")] = None,
    quantize: Annotated[str | None, typer.Option("--quantize", help="With --format onnx: 'int8'.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RUN_DIR-onnx).")] = None,
) -> None:
    """Write a copy of a run folder that loads with trust_remote_code=True, without nlpipe
    (or, with --format onnx, one that runs with onnxruntime alone)."""
    if export_format is not None or quantize is not None:
        from .export.command import export_onnx_cli

        export_onnx_cli(run_dir, out or out_dir, export_format, quantize)
        return
    if out_dir is None and out is None:
        raise NlpipeError("export: give OUT_DIR (Hub-ready copy) or --format onnx [--out DIR]")
    out_dir = out_dir or out
    from .hub import export_run, left_out_files, shipped_files

    with _logs_to_stderr():
        written = export_run(run_dir, out_dir, repo_id=repo_id)
    typer.echo(f"exported {run_dir} to {out_dir}: {', '.join(shipped_files(written))}")
    if left := left_out_files(run_dir):
        typer.echo(f"left out (not files nlpipe ships): {', '.join(left)}")


class _RunsGroup(typer.core.TyperGroup):
    """`nlpipe runs [DIR]` lists; `nlpipe runs show RUN` shows one: a first word that is no subcommand is DIR."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:  # noqa: ANN001 - click's signature
        if not args or (args[0] not in self.commands and not args[0].startswith("-")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(cls=_RunsGroup, help="List run folders (`nlpipe runs [DIR]`) and show one (`runs show RUN`).",
                       **_PLAIN)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list_cli(
    folder: Annotated[Path, typer.Argument(help="Folder holding run folders.")] = Path("runs"),
) -> None:
    """List run folders (newest first): status, task, model, data source, score, training time."""
    from .run_listing import format_listing, list_runs

    listing = list_runs(folder)
    for note in listing.notes:  # malformed folders: said on stderr, the table stays parseable
        typer.echo(f"note: {note}", err=True)
    if not listing.runs:
        typer.echo(f"no run folders in {folder}", err=True)
        return
    typer.echo(format_listing(listing))


@runs_app.command("show")
def runs_show_cli(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json as it is.")] = False,
    open_curve: Annotated[bool, typer.Option("--open", help="Open the learning curve in the image viewer.")] = False,
) -> None:
    """Print a run's metrics and write (or open) its learning curve."""
    from .run_listing import format_run, read_run, write_curve

    entry = read_run(run_dir)
    if as_json:
        typer.echo(json.dumps(entry.metrics, indent=2))
        return
    with _logs_to_stderr():
        curve = write_curve(entry)
    typer.echo(format_run(entry, curve))
    if open_curve and curve is not None:
        typer.launch(str(curve))


@app.command("serve")
def serve_cli(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (with --onnx: or an ONNX export folder).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8000,
    onnx: Annotated[bool, typer.Option("--onnx", help="Run it with ONNX Runtime: RUN_DIR-onnx (exported there "
                                       "when missing), or the ONNX export folder given.")] = False,
    max_texts: Annotated[int, typer.Option("--max-texts", help="Texts per request.")] = 64,
    max_chars: Annotated[int, typer.Option("--max-chars", help="Characters per text.")] = 5_000,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Texts per model call.")] = 32,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="Wait to group requests.")] = 5.0,
) -> None:
    """Serve a model over HTTP: a JSON API for its task, /health, metadata at /, and a web page at /ui."""
    try:
        from .serving import ServeLimits, serve
    except ImportError as exc:  # the `serve` extra is optional
        raise NlpipeError(f"nlpipe serve needs {exc.name or 'FastAPI and uvicorn'}: "
                          "pip install 'nlpipe[serve]'") from exc

    limits = ServeLimits(max_texts=max_texts, max_chars=max_chars, max_batch_size=max_batch_size,
                         max_wait_ms=max_wait_ms)
    serve(run_dir, host=host, port=port, onnx=onnx, limits=limits)


def entry_point() -> None:
    """The ``nlpipe`` program (console script, ``python -m nlpipe``, the ``cli.py`` shim): `main` with tcmalloc.

    Only a program's own entry re-executes itself with tcmalloc preloaded where it is installed (faster CPU
    training, nlpipe/cpu_allocator.py); `main` called from someone else's Python never replaces their process.
    """
    from .cpu_allocator import use_tcmalloc

    use_tcmalloc()
    main()


def main() -> None:
    """Run the CLI, turning NlpipeError into one clean line.

    typer's standalone mode (its public default) handles everything click-level the way any typer
    CLI does: usage errors print usage + one ``Error:`` line with exit code 2, Ctrl-C exits 130, a
    closed pipe (``| head``) exits quietly. Only nlpipe's own errors are left to this function.
    """
    import signal

    # SIGTERM (kill, job schedulers) outside the training loop, which checkpoints on it itself: stop with one
    # line and exit 143, unwinding normally so that a run folder this command prepared is cleaned up or stays
    # resumable (nlpipe/run_folder.py) instead of the process dying mid-write.
    def stop_on_sigterm(signum: int, frame: object) -> None:
        typer.echo("interrupted (SIGTERM)", err=True)
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        app(prog_name="nlpipe")  # the same name under `python -m nlpipe` and the cli.py shim
    except NlpipeError as exc:
        if os.environ.get("RANK", "0") == "0":  # under DDP every process meets the same error: say it once
            typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
