"""Run a recipe end to end, and evaluate or use a finished run folder.

`run_recipe` is what ``nlpipe run recipe NAME`` calls: load the recipe, load the data, train (or
reuse) the tokenizer, build the model, train it with the one Accelerate loop, evaluate the best
model, and write a Hub-ready run folder::

    runs/NAME/
      config.json  model.safetensors       the best model (AutoModel*.from_pretrained(run_dir))
      tokenizer.json  tokenizer_config.json
      recipe.yaml                          the resolved recipe (overrides applied)
      run_info.json                        data source, versions, machine, timings
      metrics.json                         scores per split + training figures
      train_log.jsonl  logs/               the training log and TensorBoard events
      README.md  training_curve.png        the model card
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data.catalog import describe_source, load_data, source_label
from .errors import NlpipeError
from .recipe import Recipe, dump_recipe, load_recipe
from .run_folder import identity_fields, prepare_run_folder
from .tasks import get_task
from .tokenizer_training import load_spec, train_tokenizer


@dataclass
class RunResult:
    """A finished run: where it is and its metrics."""

    run_dir: Path
    metrics: dict[str, Any]


def machine_description() -> str:
    """A short description of the hardware, for logs and cards."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from .cpu_allocator import loaded_allocator

    allocator = loaded_allocator()  # tcmalloc changes CPU training speed (nlpipe/cpu_allocator.py)
    return f"CPU {cpu}, {torch.get_num_threads()} threads" + (f", {allocator}" if allocator != "system" else "")


def git_commit() -> str | None:
    """The nlpipe checkout's commit, when running from one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _check_output_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Fail before training when the folder is unusable (see `run_folder.prepare_run_folder`); write nothing."""
    prepare_run_folder(run_dir, resume=resume, overwrite=overwrite).release()


def _remove_unstarted_run(run_dir: Path, existed: bool, before: set[Path]) -> None:
    """A run that failed before its first checkpoint has nothing to resume: take back the files it
    wrote (only those, only names nlpipe writes) so that rerunning the same command is not refused."""
    if any(p.is_dir() for p in (run_dir / "checkpoints").glob("step-*")):
        return
    for name in ("recipe.yaml", "train_log.jsonl", "logs", "checkpoints"):
        item = run_dir / name
        if item in before or not (item.exists() or item.is_symlink()):
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
    if not existed:
        try:
            run_dir.rmdir()
        except OSError:
            pass


def make_accelerator(recipe: Recipe, run_dir: Path | None, *, cpu: bool | None = None) -> Any:
    """An Accelerator for the recipe (mixed precision, accumulation, TensorBoard when available)."""
    import torch
    from accelerate import Accelerator

    log_with = None
    if run_dir is not None:
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            pass
    if cpu is None:
        cpu = not torch.cuda.is_available()
    # Accelerate keeps its settings in process-wide singletons; a second run in the same process
    # (Python users, `nlpipe compare --recipes`) with another mixed precision or accumulation would be
    # refused. Reset them, keeping the process group (PartialState) of a distributed launch.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(
        cpu=cpu,
        mixed_precision=resolve_mixed_precision(recipe.train.mixed_precision, cpu),
        gradient_accumulation_steps=recipe.train.gradient_accumulation_steps,
        log_with=log_with,
        project_dir=str(run_dir / "logs") if run_dir is not None else None,
    )


def resolve_mixed_precision(setting: str, cpu: bool) -> str:
    """The Accelerate mixed-precision mode for a recipe's ``train.mixed_precision`` ("auto" resolved)."""
    if setting != "auto":
        return setting
    import torch

    if not cpu:
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # bf16 pays where the CPU multiplies bf16 in hardware: AMX tiles (Xeon Sapphire Rapids+) or AVX-512 BF16 dot
    # products (AMD Zen 4+, Xeon Cooper Lake+; whole training steps 1.5-1.8x, benchmarks/perf_precision.py).
    # Without either, bf16 matmuls are emulated: many times slower than float32 (HF5 notes).
    return "bf16" if cpu_has_bf16_units() else "no"


def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AMX tiles or AVX-512 BF16)."""
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def count_parameters(model: Any) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_recipe(
    name_or_path: str | Recipe,
    overrides: list[str] | None = None,
    *,
    data: str | None = None,
    data_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train and evaluate a recipe; write the run folder; return its metrics.

    Args:
        name_or_path: recipe name (``ner-bilstm``), path, or an already loaded `Recipe`.
        overrides: ``key.sub=value`` strings.
        data: ``"sample"`` for the built-in sample data (the recipe's ``sample`` settings then apply: a quick
            smoke run), ``"hub"`` to force the Hub.
        data_dir: local files laid out like ``shared/data`` (else ``$NLPIPE_DATA_DIR``, else the Hub).
        output_dir: the run folder (default ``runs/<recipe name>``).
        resume: continue from the folder's last checkpoint.
        overwrite: replace an existing run folder.

    Raises:
        NlpipeError: any problem the user can fix (recipe, data, folder, NaN loss, interruption).
    """
    from .training.checkpointing import check_resume_identity

    recipe = (name_or_path if isinstance(name_or_path, Recipe)
              else load_recipe(name_or_path, overrides, sample=data == "sample"))
    if recipe.push_to_hub:  # fail now, not after training, on a bad repo id or a missing token
        from .hub import check_push_settings

        check_push_settings(recipe)
    # The run folder is decided and locked before anything is loaded; an overwrite trains beside the old
    # run and replaces it only at the end (see nlpipe/run_folder.py).
    folder = prepare_run_folder(output_dir or Path("runs") / recipe.name, resume=resume, overwrite=overwrite,
                                writer=int(os.environ.get("RANK", "0")) == 0)
    try:
        identity = {"recipe": recipe.to_dict(), "data": describe_source(data, data_dir)}
        if resume:  # refuse another recipe or data source before loading or writing anything
            check_resume_identity(folder.work_dir, identity)
        result = _train_and_write(recipe, folder.work_dir, folder, data=data, data_dir=data_dir, resume=resume,
                                  progress=progress, identity=identity)
    except NlpipeError as exc:
        folder.abandon()
        if folder.staged:
            raise NlpipeError(f"{exc}; the previous run in {folder.target} is untouched",
                              exit_code=exc.exit_code) from exc
        raise
    except BaseException:
        folder.abandon()
        raise
    run_dir = folder.finish()
    if recipe.push_to_hub and int(os.environ.get("RANK", "0")) == 0:
        from .hub import push_run

        url = push_run(run_dir, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision,
                       commit_message=recipe.hub.commit_message)
        print(f"pushed to {url}")
    return RunResult(run_dir=run_dir, metrics=result)


def _train_and_write(
    recipe: Recipe, run_dir: Path, folder: Any, *, data: str | None, data_dir: str | Path | None, resume: bool,
    progress: bool, identity: dict[str, Any],
) -> dict[str, Any]:
    """Load data, train, evaluate and write the run into `run_dir` (the work folder); return the metrics."""
    from accelerate.utils import set_seed

    from .init_from import init_source, load_init_tokenizer, resolve_init_folder
    from .model_card import write_model_card
    from .training.checkpointing import check_resume_identity, data_fingerprint
    from .training.loop import train

    accelerator = make_accelerator(recipe, run_dir)
    set_seed(recipe.train.seed)

    dataset = load_data(
        recipe.data.dataset, source=data, data_dir=data_dir, seed=recipe.train.seed,
        max_train_examples=recipe.data.max_train_examples, max_eval_examples=recipe.data.max_eval_examples,
    )
    identity["data_sha256"] = data_fingerprint(dataset)
    if resume:
        check_resume_identity(run_dir, identity)
    task = get_task(recipe)
    dataset = task.corpus(dataset, data=data, data_dir=data_dir)
    task.setup(dataset, recipe.data.dataset)
    init_folder = None
    if init_source(recipe):  # model.init_from: the pretrained model's own tokenizer
        with accelerator.main_process_first():
            init_folder = resolve_init_folder(init_source(recipe), recipe.source)
            tokenizer = load_init_tokenizer(recipe, init_folder)
    else:
        spec = load_spec(recipe.tokenizer["spec"], {k: v for k, v in recipe.tokenizer.items() if k != "spec"},
                         recipe.source)
        with accelerator.main_process_first():
            tokenizer = train_tokenizer(spec, task.tokenizer_texts(dataset["train"]))
    task.bind_tokenizer(tokenizer)
    with accelerator.main_process_first():
        encoded = {split: task.encode(dataset[split], tokenizer, split) for split in dataset}
    model = task.build_model(tokenizer)
    n_params = count_parameters(model)
    accelerator.print(
        f"{recipe.name}: {recipe.model['type']} with {n_params:,} parameters; "
        f"{len(dataset['train']):,} training examples; {machine_description()}"
    )
    existed = run_dir.is_dir()
    before = set(run_dir.iterdir()) if existed else set()
    folder.create()  # first write: the data, tokenizer and model are fine
    if accelerator.is_main_process and not resume:  # a resume keeps the run's recipe.yaml (checked equal above)
        dump_recipe(recipe, run_dir / "recipe.yaml")
    accelerator.init_trackers(recipe.name.replace("/", "_"))

    try:
        result = train(task, model, encoded, dataset, recipe, run_dir, accelerator, resume=resume,
                       progress=progress, identity=identity)
    except (NlpipeError, KeyboardInterrupt):
        if not resume and accelerator.is_main_process:
            _remove_unstarted_run(run_dir, existed, before)
        raise

    import torch

    # Without the autocast wrapper: the reported scores and the saved model are full precision.
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    model.eval()
    metrics: dict[str, Any] = {}
    eval_speed: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for split in recipe.eval.splits:
            started = time.perf_counter()
            scores = task.evaluate(model, encoded[split], dataset[split], accelerator, recipe.eval.batch_size)
            # Inference speed for leaderboards: the task's own evaluation (generation for seq2seq) per example.
            seconds = time.perf_counter() - started
            eval_speed[split] = {"seconds": round(seconds, 3), "examples": len(dataset[split]),
                                 "examples_per_s": round(len(dataset[split]) / max(seconds, 1e-9), 2)}
            metrics[split] = scores
            accelerator.print(
                f"{split}: " + "  ".join(f"{k}={v:.2f}" for k, v in scores.items() if k in _HEADLINE)
            )
    # Once per run (the same for every split), not at each validation: how the scores were computed.
    signatures = {k: v for scores in metrics.values() for k, v in scores.items() if k.endswith("_signature")}
    for key, value in signatures.items():
        accelerator.print(f"{key}: {value}")
    metrics["train"] = {
        "wall_s": round(result.wall_s, 2),
        "tokens": result.train_tokens,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "steps": result.global_step,
        "epochs": round(result.epochs, 3),
        "best_step": result.best_step,
        "best_validation": result.best_metric,
        "stopped_because": result.stopped_because,
    }
    if result.checkpoint_average:  # train.average_checkpoints: which steps, their average's score, kept or not
        metrics["train"]["checkpoint_average"] = result.checkpoint_average
    if result.budget:  # train.budget: what it was and the steps it was planned as
        metrics["train"]["budget"] = result.budget
    metrics["parameters"] = n_params
    metrics["eval_speed"] = eval_speed
    metrics["selection_metric"] = recipe.eval.metric
    source = describe_source(data, data_dir)
    # Which data the scores are on: a sample run's are not results on the named data set.
    metrics["data"] = {"dataset": recipe.data.dataset, "source": source["source"],
                       "description": source_label(recipe.data.dataset, source)}
    accelerator.end_training()
    if accelerator.is_main_process:
        model.save_pretrained(run_dir)
        tokenizer.save_pretrained(run_dir)
        info = {
            "recipe": recipe.name,
            "task": recipe.task,
            "dataset": recipe.data.dataset,
            "data": source,
            "sample_settings": recipe.sample_applied,  # the recipe's quick-run settings, when on sample data
            "machine": machine_description(),
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
            "nlpipe_commit": git_commit(),
            **identity_fields(),
        }
        if init_folder is not None:  # the pretrained start (a Hub snapshot's folder names its commit)
            info["init_from"] = {"source": init_source(recipe), "folder": str(init_folder.resolve())}
        (run_dir / "run_info.json").write_text(json.dumps(info, indent=2))
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_model_card(run_dir, recipe, metrics, info)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return metrics


_HEADLINE = ("f1", "precision", "recall", "f1_strict", "sacrebleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "perplexity")


def load_run(run_dir: str | Path, command: str = "predict") -> tuple[Recipe, dict[str, Any], Any, Any]:
    """Open a finished run folder: (recipe, run_info, model, tokenizer).

    The folder is checked first (`run_folder.check_run_folder`: every file present and whole, labels and
    tokenizer matching the model); `command` names the command in messages.

    Raises:
        NlpipeError: the folder is missing, lacks a file a run folder must have, or a file is broken (named).
    """
    from .run_folder import open_run

    checked, model, tokenizer = open_run(run_dir, command)
    return checked.recipe, checked.info, model, tokenizer


@dataclass
class RunEvaluation:
    """A finished run opened for scoring: its recipe, task (tokenizer bound), model and data.

    ``task.recipe`` is ``recipe``: changing ``recipe.generate`` changes how the next ``evaluate`` decodes.
    """

    recipe: Recipe
    task: Any
    model: Any
    dataset: Any

    def encode(self, split: str) -> Any:
        if split not in self.dataset:
            raise NlpipeError(f"--split {split}: no such split; choose train, validation or test")
        return self.task.encode(self.dataset[split], self.task.tokenizer, split)

    def evaluate(self, split: str, encoded: Any = None) -> dict[str, float]:
        """The task's metrics on `split` (pass `encoded` to reuse an encoding across calls)."""
        import torch

        encoded = self.encode(split) if encoded is None else encoded
        with torch.no_grad():
            return self.task.evaluate(self.model, encoded, self.dataset[split], None, self.recipe.eval.batch_size)


def open_run_evaluation(
    run_dir: str | Path, *, data: str | None = None, data_dir: str | Path | None = None,
    max_eval_examples: int | None = None,
) -> RunEvaluation:
    """Open a saved run folder with the data it was trained on (or `data`/`data_dir`) for evaluation."""
    recipe, info, model, tokenizer = load_run(run_dir, "eval")
    recorded = info.get("data") if isinstance(info.get("data"), dict) else {}
    if data is None and data_dir is None:
        data = {"sample": "sample", "hub": "hub"}.get(recorded.get("source"))
        data_dir = recorded.get("data_dir")
    dataset = load_data(recipe.data.dataset, source=data, data_dir=data_dir, seed=recipe.train.seed,
                        max_eval_examples=max_eval_examples or recipe.data.max_eval_examples)
    task = get_task(recipe)
    dataset = task.corpus(dataset, data=data, data_dir=data_dir)
    task.bind_tokenizer(tokenizer)
    if hasattr(task, "set_labels_from_config"):
        task.set_labels_from_config(model.config)
    return RunEvaluation(recipe=recipe, task=task, model=model, dataset=dataset)


def evaluate_run(
    run_dir: str | Path, split: str = "test", *, data: str | None = None, data_dir: str | Path | None = None
) -> dict[str, float]:
    """Evaluate a saved run folder on a split of the data it was trained on (or of `data`/`data_dir`)."""
    return open_run_evaluation(run_dir, data=data, data_dir=data_dir).evaluate(split)


def default_data_dir() -> str | None:
    """``$NLPIPE_DATA_DIR`` if set."""
    return os.environ.get("NLPIPE_DATA_DIR")
