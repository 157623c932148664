"""Share a run folder: export it so it loads without nlpipe, and push it to the Hugging Face Hub.

``export_run(run_dir, out_dir)`` writes a Hub-ready copy of a finished run folder, made only of files
nlpipe writes itself (an allow-list)::

    config.json            re-saved, with ``auto_map`` (and ``custom_pipelines``) regenerated from nlpipe's code
    model.safetensors      the weights, re-saved (never a pickle)
    configuration_*.py, modeling_*.py, ...   the model's code, copied from the nlpipe package, for ``trust_remote_code=True``
    pipeline_*.py          the model's own pipeline (CRF Viterbi decoding) when it has one
    tokenizer.json  tokenizer_config.json  (special_tokens_map.json)   with any ``auto_map`` removed
    README.md              the model card, rewritten for the repository id
    recipe.yaml  metrics.json  run_info.json  train_log.jsonl  training_curve.png   copied when plain files

Anything else in the run folder is left out and listed (`left_out_files`): pickles (``pytorch_model.bin``,
``training_args.bin``), stray ``.py`` files, symlinks (never followed), ``checkpoints/`` (resume state) and
``logs/`` (TensorBoard events: ``train_log.jsonl`` holds the same numbers). The export is built beside
`out_dir` and swapped in when complete; `out_dir` must be new, empty, or an earlier export.

``push_run(run_dir, repo_id)`` exports into a temporary folder and uploads it in one commit with
`huggingface_hub.HfApi.create_commit`. The token comes from ``HF_TOKEN`` or the standard login
(`huggingface_hub.get_token`) and is passed only to the Hub client: never printed, logged, or
written into cards, configs or recipes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import NlpipeError

NOT_SHIPPED = ("checkpoints", "logs")
"""Run-folder sub-folders that stay on disk (resume state; TensorBoard events duplicated by train_log.jsonl)."""
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors")
"""Files `save_pretrained` rewrites in the export from the loaded model."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
"""Tokenizer data copied into the export (``tokenizer_config.json`` without ``auto_map``: nlpipe ships no tokenizer code)."""
COPIED_FILES = ("recipe.yaml", "metrics.json", "run_info.json", "train_log.jsonl", "training_curve.png")
"""Run records copied as they are (plain files only)."""
CARD = "README.md"
EXPORT_MARKER = ".nlpipe-export"
"""Left in an export folder, so a later export may replace it (never pushed: hidden files are not shipped)."""
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
PIPELINE_TASKS = {"token-classification": ("ner", "token-classification")}
"""Task names a model's own pipeline is registered under; ``ner`` is the alias users type."""
DEFAULT_COMMIT_MESSAGE = "Upload model trained with nlpipe"

_NLPIPE_IMPORT = re.compile(r"^\s*(from\s+nlpipe\b|import\s+nlpipe\b|from\s+\.\s+import\b|from\s+\.\.)")


# --------------------------------------------------------------------------- export


def _check_run_dir(run_dir: Path, command: str = "export") -> None:
    """The shared run-folder check, plus: the files an export re-saves are never links."""
    from .run_folder import check_run_folder

    check_run_folder(run_dir, command, allow_bare_model=True)
    for name in (*MODEL_FILES, *TOKENIZER_FILES):
        if (run_dir / name).is_symlink():
            raise NlpipeError(
                f"{run_dir / name}: is a symbolic link; nlpipe {command} ships only files nlpipe wrote — replace the "
                "link with the file itself"
            )


def _auto_class_for(config: Any) -> str:
    """The transformers Auto class name that builds this config's model (from nlpipe's model registry)."""
    from .model_registry import MODELS, _import

    for entry in MODELS.values():
        if type(config) is _import(entry.config_class):
            return entry.auto_class
    raise NlpipeError(
        f"config model_type '{config.model_type}' is not a model nlpipe knows "
        f"({', '.join(MODELS)}); export only run folders written by 'nlpipe run recipe'"
    )


def _is_nlpipe_class(cls: type) -> bool:
    return cls.__module__.startswith("nlpipe.")


@contextlib.contextmanager
def _registered_for_auto_class(config_cls: type, model_cls: type, auto_class: str) -> Iterator[None]:
    """Make `save_pretrained` copy the defining files and write ``auto_map``, only for the export.

    `register_for_auto_class` sets a class attribute; it is undone afterwards so later saves of the
    same classes (e.g. the next run folder) stay plain.
    """
    saved = {cls: cls.__dict__.get("_auto_class", None) for cls in (config_cls, model_cls)}
    had = {cls: "_auto_class" in cls.__dict__ for cls in (config_cls, model_cls)}
    config_cls.register_for_auto_class()
    model_cls.register_for_auto_class(auto_class)
    try:
        yield
    finally:
        for cls in (config_cls, model_cls):
            if had[cls]:
                cls._auto_class = saved[cls]
            else:
                with contextlib.suppress(AttributeError):
                    delattr(cls, "_auto_class")


def find_custom_pipeline(model_cls: type, task_pipeline: type) -> type | None:
    """The model family's own pipeline class (a subclass of `task_pipeline` in ``pipeline_*.py`` next to the model).

    Returns None when the family has none. The file must follow the same rules as the model files
    (flat sibling imports only), since it is copied next to them.
    """
    import importlib
    import inspect

    package = model_cls.__module__.rsplit(".", 1)[0]
    folder = Path(inspect.getfile(model_cls)).parent
    for path in sorted(folder.glob("pipeline_*.py")):
        module = importlib.import_module(f"{package}.{path.stem}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and issubclass(obj, task_pipeline) and obj is not task_pipeline:
                return obj
    return None


def _add_custom_pipeline(model: Any, auto_class: str, out_dir: Path) -> str | None:
    """Copy the family's pipeline file and declare it in ``config.custom_pipelines``; return its file name."""
    import inspect

    from transformers import TokenClassificationPipeline

    if auto_class != "AutoModelForTokenClassification":
        return None
    pipeline_cls = find_custom_pipeline(type(model), TokenClassificationPipeline)
    if pipeline_cls is None:
        return None
    source = Path(inspect.getfile(pipeline_cls))
    shutil.copy2(source, out_dir / source.name)
    info = {"impl": f"{source.stem}.{pipeline_cls.__name__}", "pt": [auto_class], "tf": [], "type": "text"}
    model.config.custom_pipelines = {task: dict(info) for task in PIPELINE_TASKS["token-classification"]}
    return source.name


def check_self_contained(folder: str | Path) -> None:
    """Check that no exported ``.py`` file imports nlpipe or uses an import `trust_remote_code` cannot follow.

    Raises:
        NlpipeError: naming the file and line of the first offending import.
    """
    for path in sorted(Path(folder).glob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if _NLPIPE_IMPORT.match(line):
                raise NlpipeError(
                    f"{path.name}:{number}: '{line.strip()}' cannot be loaded with trust_remote_code (only flat "
                    "sibling imports like 'from .configuration_x import X' work, never nlpipe itself); "
                    "fix the model file in nlpipe/models/"
                )


def export_run(run_dir: str | Path, out_dir: str | Path, *, repo_id: str | None = None) -> Path:
    """Write a Hub-ready copy of a run folder that loads with ``trust_remote_code=True`` and no nlpipe.

    The weights are re-saved with `save_pretrained` after `register_for_auto_class`, so ``config.json``
    gets ``auto_map`` and the model's code files are copied; a model family with its own pipeline
    (``pipeline_*.py``) also gets ``custom_pipelines`` so ``pipeline("ner", model=..., trust_remote_code=True)``
    uses it. The model card is rewritten to show loading by `repo_id`. Models built from transformers'
    own classes (bert, marian, gpt2) need no code and are re-saved without ``auto_map``. Only the
    allow-listed files are written (see the module docstring); `left_out_files` lists the rest.

    Args:
        run_dir: a finished run folder.
        out_dir: where to write the copy (new, empty, or an earlier export, which is replaced as a whole;
            never a run folder).
        repo_id: the Hub repository id shown in the card's usage example.

    Returns:
        `out_dir`.

    Raises:
        NlpipeError: the run folder is incomplete or broken, `out_dir` is (in) a run folder or holds other
        files, or an exported code file imports something `trust_remote_code` cannot load.
    """
    from .run_folder import replacing_folder

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_run_dir(run_dir)
    if out_dir.resolve() == run_dir.resolve():
        raise NlpipeError(f"{out_dir}: the export folder must differ from the run folder; choose another folder")
    # "." is replaced by a new folder of the same name: return it by its path, not the old working folder.
    written = Path(os.path.abspath(out_dir)) if out_dir.name in ("", ".", "..") else out_dir
    with replacing_folder(out_dir, "export folder", EXPORT_MARKER) as staging:
        _write_export(run_dir, staging, repo_id)
    return written


def _write_export(run_dir: Path, out_dir: Path, repo_id: str | None) -> None:
    """Write the allow-listed export of `run_dir` into the empty folder `out_dir`."""
    import transformers

    import nlpipe  # noqa: F401  (registers our Auto classes)

    from .run_folder import load_weights

    for name in (*COPIED_FILES, *TOKENIZER_FILES):
        item = run_dir / name
        if item.is_file() and not item.is_symlink():  # never a link's target
            shutil.copyfile(item, out_dir / name)
    tokenizer_config = out_dir / "tokenizer_config.json"
    if tokenizer_config.is_file():
        values = _read_json(tokenizer_config)
        if values.pop("auto_map", None) is not None:  # would name code nlpipe did not write
            tokenizer_config.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    try:
        config = transformers.AutoConfig.from_pretrained(run_dir, trust_remote_code=False)
    except Exception as exc:  # unknown model_type, bad values: transformers raises several types
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise NlpipeError(f"{run_dir / 'config.json'}: does not load ({detail}); rerun the run or restore the file"
                          ) from None
    auto_class = _auto_class_for(config)
    for key in ("auto_map", "custom_pipelines"):  # regenerated below from nlpipe's own classes, never trusted
        if hasattr(config, key):
            delattr(config, key)
    model = load_weights(getattr(transformers, auto_class), run_dir, config=config)
    if _is_nlpipe_class(type(model)):
        with _registered_for_auto_class(type(model.config), type(model), auto_class):
            _add_custom_pipeline(model, auto_class, out_dir)
            model.save_pretrained(out_dir)
        check_self_contained(out_dir)
    else:
        model.save_pretrained(out_dir)

    if (out_dir / "recipe.yaml").is_file():
        _rewrite_card(out_dir, repo_id)


def left_out_files(run_dir: str | Path) -> list[str]:
    """What an export of `run_dir` leaves out besides ``checkpoints/`` and ``logs/``: files nlpipe does not
    ship (pickles, stray code, unknown files) and links (marked ``(symlink)``), sorted."""
    shipped = {*MODEL_FILES, *TOKENIZER_FILES, *COPIED_FILES, CARD}
    left = []
    for item in sorted(Path(run_dir).iterdir()):
        if item.is_symlink():
            left.append(f"{item.name} (symlink)")
        elif item.name not in shipped and item.name not in NOT_SHIPPED and not item.name.startswith("."):
            left.append(item.name + ("/" if item.is_dir() else ""))
    return left


def _rewrite_card(out_dir: Path, repo_id: str | None) -> None:
    """The card of the export: same content, usage with `repo_id` and trust_remote_code where needed.

    Read from the export's own copies (plain files of the run folder), never through a link.
    """
    from .model_card import model_card_text
    from .recipe import parse_recipe, read_yaml

    recipe = parse_recipe(read_yaml(out_dir / "recipe.yaml"), str(out_dir / "recipe.yaml"))
    metrics = _read_json(out_dir / "metrics.json")
    info = _read_json(out_dir / "run_info.json")
    config = json.loads((out_dir / "config.json").read_text())
    text = model_card_text(
        recipe, metrics, info, (out_dir / "training_curve.png").is_file(),
        repo_id=repo_id, remote_code="auto_map" in config,
    )
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_files(folder: str | Path) -> list[str]:
    """Relative paths (POSIX) of the plain files in an export folder, sorted: what a push uploads.

    Hidden files (the export marker) and links are never shipped.
    """
    folder = Path(folder)
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


# --------------------------------------------------------------------------- push


def check_repo_id(repo_id: str | None, source: str = "repo id") -> str:
    """Validate a Hub repository id (``namespace/name``) with huggingface_hub's own validator.

    Raises:
        NlpipeError: empty or invalid id, with the rule it breaks.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not repo_id:
        raise NlpipeError(f"{source}: no Hub repository id; give one like 'your-name/conll-bilstm-crf'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise NlpipeError(f"{source}: '{repo_id}' is not a valid Hub repository id ({exc}); "
                          "use 'your-name/model-name' with letters, digits, '-', '_', '.'") from exc
    if "/" not in repo_id:
        raise NlpipeError(f"{source}: '{repo_id}' has no namespace; use 'your-name/{repo_id}'")
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """The token to push with: `token`, else ``HF_TOKEN``, else the one saved by ``hf auth login``.

    Raises:
        NlpipeError: no token anywhere (the message never contains a token).
    """
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise NlpipeError(
            "no Hugging Face token: set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens) or run 'hf auth login', then push again"
        )
    return token


def push_command(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None) -> str:
    """The ``nlpipe push`` command line that pushes `run_dir` later."""
    parts = ["nlpipe", "push", str(run_dir), repo_id]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", revision]
    return " ".join(shlex.quote(p) for p in parts)


def _is_network_error(exc: BaseException) -> bool:
    """Connection refused, DNS failure, timeout, offline mode: anything below HTTP."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    # huggingface_hub's HTTP client raises its own TransportError family (httpx or httpx2).
    return any(cls.__name__ in ("TransportError", "NetworkError", "TimeoutException") for cls in type(exc).__mro__)


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Export a run folder and upload it to the Hub as a model repository.

    Creates the repository when missing (`private` only applies then), the branch `revision` when
    given and missing, and uploads the export in one commit.

    Returns:
        The URL of the commit (or of the repository when the client gives none).

    Raises:
        NlpipeError: invalid repo id, no token, incomplete run folder, Hub unreachable (the message says
        the model is safe at `run_dir` and gives the command to push later), token rejected.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id)
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, "push")
    token = resolve_token(token)
    later = push_command(run_dir, repo_id, private=private, revision=revision)
    safe = f"the model is safe on disk at {run_dir}; push it later with: {later}"
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="nlpipe-push-") as staging:
        export_run(run_dir, staging, repo_id=repo_id)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
            # One explicit commit of exactly the exported files (no hidden ignore rules, no deletions).
            operations = [
                CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(staging) / name))
                for name in shipped_files(staging)
            ]
            commit = api.create_commit(
                repo_id=repo_id, operations=operations, repo_type="model", revision=revision,
                commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
            )
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise NlpipeError(
                    f"the Hub refused the token for '{repo_id}' (HTTP {status}): use a token with write access to "
                    f"that namespace (HF_TOKEN or 'hf auth login'); {safe}"
                ) from None
            raise NlpipeError(f"the Hub rejected the upload to '{repo_id}': {_scrub(str(exc), token)}; {safe}") from None
        except Exception as exc:
            if _is_network_error(exc):
                raise NlpipeError(
                    f"cannot reach the Hugging Face Hub ({type(exc).__name__}: {_scrub(str(exc), token)}); {safe}"
                ) from None
            if isinstance(exc, (ValueError, KeyError, TypeError)):  # JSONDecodeError is a ValueError
                from huggingface_hub import constants

                detail = _scrub(str(exc), token)[:200]
                raise NlpipeError(
                    f"{constants.ENDPOINT} did not answer like the Hugging Face Hub API ({type(exc).__name__}: "
                    f"{detail}); check HF_ENDPOINT and any proxy in between; {safe}"
                ) from None
            raise
    return str(getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}")


def check_push_settings(recipe: Any) -> None:
    """Before training a recipe with ``push_to_hub: true``: the repo id is valid and a token exists.

    Raises:
        NlpipeError: naming the recipe key to fix.
    """
    check_repo_id(recipe.hub.repo_id, f"{recipe.source}: key 'hub.repo_id'")
    resolve_token()
