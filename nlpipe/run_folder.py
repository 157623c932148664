"""Run folders: what one is, who may write it, and how one is replaced. Every command asks this module.

A run folder is recognisably nlpipe's when its ``run_info.json`` carries the marker ``"nlpipe_run_folder"``
(written when a run finishes) or its ``recipe.yaml`` starts with the header `recipe.dump_recipe` writes
(written before the first training step, so an interrupted run is one too; runs written before the marker
existed are recognised the same way). nlpipe only ever replaces or deletes such a folder, and only when it
holds nothing but the files nlpipe writes there (`RUN_FOLDER_FILES`).

Writing (``nlpipe run recipe``) goes through `prepare_run_folder`:

- a lock beside the folder (``.<name>.nlpipe-lock``, a `filelock.FileLock` that records pid and host)
  keeps two runs out of the same folder; the second fails at once, saying which process holds it;
- ``--overwrite`` trains into a staging folder beside the old run (``.<name>.nlpipe-overwrite``) and swaps
  it in with two renames once the new run is complete, so a failed or interrupted overwrite leaves the old
  run whole. An interrupted overwrite keeps its checkpoints in the staging folder: ``--resume`` on the same
  ``--output-dir`` continues it (and swaps at the end), ``--overwrite`` starts it over;
- nothing is deleted while following a symlink: a run folder that is a link is not replaced, and removal
  uses `shutil.rmtree`, which unlinks links inside the tree instead of descending into them.

Reading (``predict``, ``eval``, ``attention``, ``compare``, ``export``, ``push``, and whatever comes next)
goes through `check_run_folder` (files present and parseable, weights not truncated, right task) and
`open_run` (the model and tokenizer loaded and checked against each other), so every command names the
broken file the same way.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NlpipeError

MARKER = "nlpipe_run_folder"
"""Key of ``run_info.json`` that says "nlpipe wrote this folder"; its value is the folder format version."""
FORMAT_VERSION = 1
RECIPE_HEADER = "# nlpipe run recipe "
"""First characters of a ``recipe.yaml`` written by `recipe.dump_recipe` (the marker of an unfinished run)."""

RUN_FOLDER_FILES = (
    # the model (save_pretrained), sharded or not
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    # the tokenizer (save_pretrained of a fast tokenizer, and the files slow ones add)
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "vocab.json", "vocab.txt", "merges.txt", "*.spm", "*.model",
    # the run
    "recipe.yaml", "run_info.json", "metrics.json", "train_log.jsonl", "README.md", "*.png",
    "logs", "checkpoints", ".write-test",
)
"""Names (globs) nlpipe writes at the top of a run folder. Anything else there is the user's: a folder
holding it is never replaced."""

LOCK_SUFFIX = ".nlpipe-lock"
STAGING_SUFFIX = ".nlpipe-overwrite"
REPLACED_SUFFIX = ".nlpipe-replaced"


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
"""A recipe ``name:``: it names the run folder ``runs/<name>``, so it is a name, never a path."""


def check_run_name(name: object, source: str) -> None:
    """Check a recipe's ``name:`` is a plain name (no separators, no ``..``, not absolute, not hidden).

    Raises:
        NlpipeError: naming the recipe file and key.
    """
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise NlpipeError(
            f"{source}: key 'name': {shown} is not a run name (it names the folder runs/<name>: letters, digits, "
            "'.', '_', '+', '-', starting with a letter or digit, no '/' or '..'); use --output-dir to choose "
            "the folder"
        )


def _sibling(target: Path, suffix: str) -> Path:
    return target.parent / f".{target.name}{suffix}"


def lock_path(target: str | Path) -> Path:
    """The lock file of the run folder `target` (beside it, so it survives the swap of an overwrite)."""
    return _sibling(Path(target), LOCK_SUFFIX)


def staging_path(target: str | Path) -> Path:
    """Where ``--overwrite`` builds the new run before it replaces `target`."""
    return _sibling(Path(target), STAGING_SUFFIX)


def _replaced_path(target: Path) -> Path:
    return _sibling(target, REPLACED_SUFFIX)


def _target_of_staging(path: Path) -> Path | None:
    """``runs/.x.nlpipe-overwrite`` → ``runs/x`` (the loop's resume hint may name the staging folder)."""
    name = path.name
    if name.startswith(".") and name.endswith(STAGING_SUFFIX) and len(name) > len(STAGING_SUFFIX) + 1:
        return path.parent / name[1 : -len(STAGING_SUFFIX)]
    return None


# ----------------------------------------------------------------------------------------------- identity


def identity_fields() -> dict[str, Any]:
    """What `run_recipe` adds to ``run_info.json`` so the folder is recognisably nlpipe's."""
    return {MARKER: FORMAT_VERSION}


def _regular_file(path: Path) -> bool:
    """A plain file, not a link (identity is never taken from a link's target)."""
    return path.is_file() and not path.is_symlink()


def is_run_folder(path: str | Path) -> bool:
    """True when `path` is a real folder (not a link) that nlpipe wrote as a run folder, finished or not."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    info = path / "run_info.json"
    if _regular_file(info):
        try:
            value = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if isinstance(value, dict) and MARKER in value:
            return True
    recipe = path / "recipe.yaml"
    if _regular_file(recipe):
        try:
            with open(recipe, encoding="utf-8") as handle:
                head = handle.read(len(RECIPE_HEADER))
        except (OSError, UnicodeDecodeError):
            return False
        return head == RECIPE_HEADER
    return False


def foreign_entries(path: str | Path) -> list[str]:
    """Top-level names in `path` that nlpipe does not write in a run folder (sorted)."""
    return sorted(
        entry.name for entry in Path(path).iterdir()
        if not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in RUN_FOLDER_FILES)
    )


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def inside_run_folder(path: str | Path) -> Path | None:
    """The run folder `path` is or lies in (checking `path` and its existing parents), or None."""
    path = Path(os.path.abspath(path))
    for folder in (path, *path.parents):
        if folder.is_dir() and (is_run_folder(folder) or _target_of_staging(folder) is not None):
            return folder
    return None


def refuse_run_folder(path: str | Path, option: str) -> None:
    """Refuse to write a command's output (`option`, e.g. ``--out``) into a run folder.

    Raises:
        NlpipeError: `path` is a run folder or lies inside one.
    """
    found = inside_run_folder(path)
    if found is not None:
        raise NlpipeError(
            f"{option} {path}: {'is' if found == Path(os.path.abspath(path)) else 'lies inside'} the run folder "
            f"{found}; nlpipe does not write other files into a run folder, choose a folder outside it"
        )


def check_replaceable(path: str | Path) -> None:
    """Check that `path` may be deleted by ``--overwrite``: a real nlpipe run folder holding only nlpipe's files.

    Raises:
        NlpipeError: it is a link, not a run folder, or holds files nlpipe did not write (named).
    """
    path = Path(path)
    if path.is_symlink():
        raise NlpipeError(
            f"{path}: is a symbolic link; --overwrite only replaces a real run folder, give the folder it points to "
            "or choose another --output-dir"
        )
    if not is_run_folder(path):
        names = sorted(p.name for p in path.iterdir())
        raise NlpipeError(
            f"{path}: not an nlpipe run folder (it holds {_listing(names)}); --overwrite only replaces folders "
            "written by 'nlpipe run recipe' — choose another --output-dir"
        )
    foreign = foreign_entries(path)
    if foreign:
        raise NlpipeError(
            f"{path}: holds files nlpipe did not write ({_listing(foreign)}); --overwrite would delete them — "
            "move them out of the run folder or choose another --output-dir"
        )


def remove_run_folder(path: str | Path) -> None:
    """Delete a folder nlpipe wrote, never following a link (the caller has checked it is ours)."""
    path = Path(path)
    if path.is_symlink() or not path.exists():
        return
    # rmtree unlinks links found inside the tree; it never deletes what they point to.
    shutil.rmtree(path)


# ----------------------------------------------------------------------------------------------- lock


def _holder_text(lock_file: Path) -> str:
    try:
        holder = json.loads(lock_file.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["started"])))
        return f"process {int(holder['pid'])} on host {holder['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "another process"


class RunFolderLock:
    """An exclusive lock on one run folder, taken without waiting; it records who holds it.

    The lock file lies beside the folder (``.<name>.nlpipe-lock``) and is removed on release.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._lock: Any = None

    def acquire(self) -> RunFolderLock:
        """Take the lock now.

        Raises:
            NlpipeError: another process holds it (naming its pid and host).
        """
        from filelock import FileLock, Timeout

        def record_holder(fd: int) -> None:
            text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)

        lock = FileLock(str(self.path), timeout=0, on_acquired=record_holder)
        try:
            lock.acquire()
        except Timeout:
            raise NlpipeError(
                f"{self.target}: another nlpipe run is writing this folder ({_holder_text(self.path)}); wait for it "
                "to finish, stop it, or choose another --output-dir"
            ) from None
        except OSError as exc:
            raise NlpipeError(
                f"{self.target}: cannot lock the run folder ({self.path}: {exc.strerror}); choose another --output-dir"
            ) from None
        self._lock = lock
        return self

    def release(self) -> None:
        """Remove the lock file, then release (a process that opened the old file sees it unlinked and retries)."""
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._lock.release()
        self._lock = None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_by(target: str | Path) -> str | None:
    """Who is writing the run folder `target` right now ("process N on host H, since ..."), or None."""
    from filelock import FileLock, Timeout

    path = lock_path(target)
    if not path.is_file():
        return None
    probe = FileLock(str(path), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return _holder_text(path)
    except OSError:
        return None
    probe.release()
    return None


# ----------------------------------------------------------------------------------------------- writing


def _latest_checkpoint(work_dir: Path) -> Path | None:
    from .training.checkpointing import latest_checkpoint

    return latest_checkpoint(work_dir / "checkpoints")


@dataclass
class PreparedRunFolder:
    """Where a run writes, decided once before anything is loaded; see `prepare_run_folder`.

    ``work_dir`` is where training writes: the run folder itself, or the staging folder of an overwrite
    (``staged``). `create` makes it at the first write, `finish` swaps it in, `abandon` cleans up after a
    failure. Only the main process of a distributed run writes or locks (``writer``).
    """

    target: Path
    work_dir: Path
    resume: bool
    staged: bool
    writer: bool = True
    lock: RunFolderLock | None = None
    _new_dirs: list[Path] = field(default_factory=list)
    _created: bool = False

    def create(self) -> Path:
        """Make the work folder (the first write of the run) and return it."""
        if not self.writer:
            return self.work_dir
        if self.staged and not self.resume and self.work_dir.exists():
            remove_run_folder(self.work_dir)  # an earlier overwrite's leftover: ours, and replaced on request
        self._created = not self.work_dir.exists()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir

    def finish(self) -> Path:
        """The run is complete: swap a staged run in for the old one, release the lock; return the run folder."""
        try:
            if self.writer and self.staged:
                replaced = _replaced_path(self.target)
                if replaced.exists():
                    remove_run_folder(replaced)
                if self.target.exists():
                    os.rename(self.target, replaced)
                os.rename(self.work_dir, self.target)
                remove_run_folder(replaced)
        finally:
            self.release()
        return self.target

    def abandon(self) -> None:
        """After a failure: drop what this run made that holds nothing worth keeping, and release the lock.

        A folder this run made (the staging folder of an overwrite, or a new run folder) goes when it holds no
        checkpoint, so the rerun is not blocked (an overwrite's old run is untouched); one with a checkpoint stays
        for ``--resume``. Parent folders made only for this run go when empty.
        """
        try:
            ours = self.staged or self._created
            if self.writer and ours and self.work_dir.is_dir() and _latest_checkpoint(self.work_dir) is None:
                remove_run_folder(self.work_dir)
        finally:
            self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        for folder in self._new_dirs:  # deepest first; only the empty ones this run made
            try:
                folder.rmdir()
            except OSError:
                break
        self._new_dirs = []


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return the ones created, deepest first."""
    new_dirs = []
    existing = folder
    while not existing.exists() and existing != existing.parent:
        new_dirs.append(existing)
        existing = existing.parent
    folder.mkdir(parents=True, exist_ok=True)
    return new_dirs


def _recover_interrupted_swap(target: Path) -> None:
    """A kill between the two renames of a swap leaves the old run under its ``.replaced`` name: finish or undo."""
    replaced = _replaced_path(target)
    if not replaced.is_dir() or replaced.is_symlink() or not is_run_folder(replaced):
        return
    if target.exists():
        remove_run_folder(replaced)  # the new run is in place: only the deletion was left
    else:
        os.rename(replaced, target)


def prepare_run_folder(
    output_dir: str | Path, *, resume: bool = False, overwrite: bool = False, writer: bool = True
) -> PreparedRunFolder:
    """Decide where a run writes, before anything is loaded; lock the run folder.

    Args:
        output_dir: the run folder the user asked for (a staging folder's name means its run folder).
        resume: continue from the newest checkpoint (of an interrupted overwrite first, else of the folder).
        overwrite: replace an existing run folder (staged; the old run stays until the new one is complete).
        writer: False on the non-main processes of a distributed run: decide the same, lock and write nothing.

    Raises:
        NlpipeError: the folder is not a folder, is locked by another run, holds a run and neither flag was
        given, is not nlpipe's (or holds the user's files) and would be replaced, has no checkpoint to resume
        from, cannot be written, or its disk is nearly full.
    """
    target = Path(output_dir)
    if target.name in ("", ".", ".."):  # "." or "runs/.." : siblings are named after the folder's real name
        target = Path(os.path.abspath(target))
    target = _target_of_staging(target) or target
    staging = staging_path(target)
    if target.exists() and not target.is_dir():
        raise NlpipeError(f"{target}: exists and is not a folder; choose another --output-dir")
    prepared = PreparedRunFolder(target=target, work_dir=target, resume=resume, staged=False, writer=writer)
    try:
        if writer:
            try:
                prepared._new_dirs = _make_parents(target.parent)
            except OSError as exc:
                raise NlpipeError(
                    f"{target}: cannot write there ({exc.strerror}); choose another --output-dir"
                ) from None
            prepared.lock = RunFolderLock(target).acquire()
            _recover_interrupted_swap(target)
        holds_files = target.is_dir() and any(target.iterdir())
        if resume:
            if staging.is_dir() and _latest_checkpoint(staging) is not None:
                prepared.work_dir, prepared.staged = staging, True
            else:
                from .training.checkpointing import find_resumable

                found, damaged = find_resumable(target / "checkpoints")
                if found is None:
                    raise NlpipeError(
                        f"{target}: no checkpoint to resume from "
                        + (f"(none is intact: {'; '.join(damaged)}); rerun with --overwrite" if damaged else
                           f"(no complete {target / 'checkpoints'}/step-*); run again without --resume")
                    )
        elif staging.exists() and not overwrite:
            raise NlpipeError(
                f"{target}: an interrupted --overwrite of this run left its work in {staging}; pass --resume to "
                "continue it, or --overwrite to start over"
            )
        elif holds_files and not overwrite:
            if is_run_folder(target):
                raise NlpipeError(
                    f"{target}: folder already holds a run; pass --resume to continue it, --overwrite to replace "
                    "it, or choose another --output-dir"
                )
            names = sorted(p.name for p in target.iterdir())
            raise NlpipeError(
                f"{target}: folder already holds files that are not an nlpipe run ({_listing(names)}); "
                "choose another --output-dir"
            )
        elif overwrite and (holds_files or staging.exists()):
            if holds_files:
                check_replaceable(target)
            prepared.work_dir, prepared.staged = staging, True
            if staging.exists() and not (staging.is_dir() and not any(staging.iterdir())):
                check_replaceable(staging)  # an earlier overwrite's work: ours, or refuse to delete it
        if writer:
            _probe_writable(prepared.work_dir)
    except BaseException:
        prepared.release()
        raise
    return prepared


def _probe_writable(folder: Path) -> None:
    """Fail before training when `folder` cannot be written or its disk is nearly full; leave nothing behind."""
    new_dirs: list[Path] = []
    try:
        new_dirs = _make_parents(folder)
        probe = folder / ".write-test"
        probe.write_bytes(b"x" * 1024)
        probe.unlink()
    except OSError as exc:
        raise NlpipeError(f"{folder}: cannot write there ({exc.strerror}); choose another --output-dir") from exc
    finally:
        for made in new_dirs:  # deepest first
            try:
                made.rmdir()
            except OSError:
                break
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < 50 * 2**20:
        raise NlpipeError(f"{folder}: only {free // 2**20} MiB free on that disk; free space or choose another --output-dir")


def check_output_folder(path: str | Path, option: str, writes: Iterable[str], marker: str | None = None) -> None:
    """Before a command writes the files `writes` into the folder `path`: never into a run folder, and never
    over files it did not write itself.

    Args:
        option: the command-line option that named `path` (for the message).
        writes: the file names the command will write there.
        marker: a file the command leaves in its output folder; when present, its earlier output may be replaced.

    Raises:
        NlpipeError: `path` is (or lies in) a run folder, is not a folder, or holds one of `writes` without `marker`.
    """
    path = Path(path)
    refuse_run_folder(path, option)
    if path.exists() and not path.is_dir():
        raise NlpipeError(f"{option} {path}: exists and is not a folder; choose a folder")
    if not path.is_dir() or (marker is not None and _regular_file(path / marker)):
        return
    clashes = sorted(name for name in writes if (path / name).exists() or (path / name).is_symlink())
    if clashes:
        raise NlpipeError(
            f"{option} {path}: already holds {_listing(clashes)}, which nlpipe did not write; move them away or "
            "choose an empty folder"
        )


@contextlib.contextmanager
def replacing_folder(out_dir: str | Path, option: str, marker: str) -> Iterator[Path]:
    """Build a command's output folder beside `out_dir` and swap it in when complete.

    `out_dir` may be missing, empty, or an earlier output of the same command (it holds `marker`); anything
    else is refused before any work. Yields the staging folder to write into; on an error it is removed and
    `out_dir` is untouched.

    Raises:
        NlpipeError: `out_dir` is or lies in a run folder, or holds files that are not this command's output.
    """
    out_dir = Path(out_dir)
    if out_dir.name in ("", ".", ".."):  # the staging folder is named after the real folder
        out_dir = Path(os.path.abspath(out_dir))
    earlier_output = _regular_file(out_dir / marker)
    # An earlier output may look like a run folder (an export holds recipe.yaml); its parents may not be one.
    refuse_run_folder(out_dir.parent if earlier_output else out_dir, option)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise NlpipeError(f"{option} {out_dir}: is a link or a file; give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not earlier_output:
        names = sorted(p.name for p in out_dir.iterdir())
        raise NlpipeError(
            f"{option} {out_dir}: already holds files nlpipe did not write there ({_listing(names)}); "
            "give a new or empty folder"
        )
    staging = _sibling(out_dir, f".nlpipe-new-{os.getpid()}")
    try:
        _make_parents(out_dir.parent)
        if staging.exists():
            remove_run_folder(staging)
        staging.mkdir()
    except OSError as exc:
        raise NlpipeError(f"{option} {out_dir}: cannot write there ({exc.strerror}); choose another folder") from None
    try:
        yield staging
        (staging / marker).write_text(json.dumps({"written_by": "nlpipe", "time": time.time()}) + "\n")
        old = _sibling(out_dir, f".nlpipe-old-{os.getpid()}")
        if out_dir.exists():
            os.rename(out_dir, old)
        os.rename(staging, out_dir)
        remove_run_folder(old)
    except BaseException:
        remove_run_folder(staging)
        raise


_SAFETENSORS_HEADER = struct.Struct("<Q")


# ----------------------------------------------------------------------------------------------- reading

RERUN = "rerun the run (nlpipe run recipe … --overwrite) or restore the file"
IOB_LABEL = re.compile(r"O|[BI]-\S+")


@dataclass
class CheckedRunFolder:
    """A run folder that passed `check_run_folder`: its parsed records (the model is not loaded yet)."""

    path: Path
    recipe: Any
    """The `Recipe` from ``recipe.yaml`` (None for a bare model folder, when the command allows one, and when the
    command reads no model: then see `recipe_raw`)."""
    recipe_raw: dict[str, Any]
    """``recipe.yaml`` as a plain mapping (empty when absent)."""
    info: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any] | None = None


def _read_json_object(path: Path, what: str = "") -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NlpipeError(f"{path}: damaged (not UTF-8 text); {RERUN}") from None
    except OSError as exc:
        raise NlpipeError(f"{path}: cannot be read ({exc.strerror}); {RERUN}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NlpipeError(
            f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}), the file is damaged or half-written; {RERUN}"
        ) from None
    if not isinstance(value, dict):
        raise NlpipeError(f"{path}: expected a JSON object{what}, found {type(value).__name__}; {RERUN}")
    return value


def check_safetensors(path: str | Path) -> dict[str, Any]:
    """Check a safetensors file's header and length without loading it; return its tensor table.

    Raises:
        NlpipeError: the file is truncated, padded or its header is damaged (naming the file).
    """
    path = Path(path)
    size = path.stat().st_size
    damaged = f"{path}: truncated or damaged weights"
    with open(path, "rb") as handle:
        head = handle.read(_SAFETENSORS_HEADER.size)
        if len(head) < _SAFETENSORS_HEADER.size:
            raise NlpipeError(f"{damaged} ({size} bytes, no header); {RERUN}")
        (length,) = _SAFETENSORS_HEADER.unpack(head)
        if length > min(size - 8, 100 * 2**20):
            raise NlpipeError(f"{damaged} (header of {length} bytes in a {size}-byte file); {RERUN}")
        try:
            table = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise NlpipeError(f"{damaged} (header is not valid JSON); {RERUN}") from None
    if not isinstance(table, dict):
        raise NlpipeError(f"{damaged} (header is not a table of tensors); {RERUN}")
    tensors = {k: v for k, v in table.items() if k != "__metadata__"}
    try:
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise NlpipeError(f"{damaged} (a tensor entry has no data_offsets); {RERUN}") from None
    if 8 + length + end != size:
        raise NlpipeError(
            f"{damaged} (the header describes {8 + length + end} bytes, the file has {size}); {RERUN}"
        )
    return tensors


def _tokenizer_size(tokenizer_json: dict[str, Any]) -> int | None:
    """Number of token ids a ``tokenizer.json`` can produce (None when its model has no readable vocabulary)."""
    ids: list[int] = []
    vocab = (tokenizer_json.get("model") or {}).get("vocab") if isinstance(tokenizer_json.get("model"), dict) else None
    if isinstance(vocab, dict):
        ids += [v for v in vocab.values() if isinstance(v, int)]
    elif isinstance(vocab, list):
        ids.append(len(vocab) - 1)
    else:
        return None
    for added in tokenizer_json.get("added_tokens") or []:
        if isinstance(added, dict) and isinstance(added.get("id"), int):
            ids.append(added["id"])
    return max(ids) + 1 if ids else None


def _expected_model_type(model_name: str) -> str | None:
    from .model_registry import MODELS, _import

    entry = MODELS.get(model_name)
    return getattr(_import(entry.config_class), "model_type", None) if entry else None


def _check_labels(run_dir: Path, config: dict[str, Any], tensors: dict[str, Any], iob: bool = True) -> None:
    """A token-classification model: labels numbered 0..n-1, as many as the head has outputs; IOB2 names in a
    NER run (`iob`)."""
    id2label = config.get("id2label")
    where = f"{run_dir / 'config.json'}: key 'id2label'"
    if not isinstance(id2label, dict) or not id2label:
        raise NlpipeError(f"{where}: missing or empty; {RERUN}")
    if sorted(str(k) for k in id2label) != sorted(str(i) for i in range(len(id2label))):
        raise NlpipeError(f"{where}: label ids must be 0..{len(id2label) - 1}; {RERUN}")
    bad = [str(v) for v in id2label.values() if not isinstance(v, str) or not IOB_LABEL.fullmatch(v)]
    if bad and iob:
        raise NlpipeError(f"{where}: {bad[0]!r} is not an IOB2 tag (O, B-TYPE, I-TYPE); {RERUN}")
    head = tensors.get("classifier.weight") or tensors.get("classifier.bias")
    shape = head.get("shape") if isinstance(head, dict) else None
    if isinstance(shape, list) and shape and shape[0] != len(id2label):
        raise NlpipeError(
            f"{where}: {len(id2label)} labels, but the classifier in model.safetensors has {shape[0]} outputs; "
            f"the labels do not belong to this model — {RERUN}"
        )


def check_run_folder(
    run_dir: str | Path,
    command: str,
    *,
    tasks: Iterable[str] | None = None,
    needs: Iterable[str] = ("model",),
    allow_bare_model: bool = False,
) -> CheckedRunFolder:
    """The one check every command that reads a run folder runs first (predict, eval, attention, compare,
    export, push, serving, ...). It reads records and headers only; `open_run` loads the model.

    Args:
        command: the command's name, for messages (``predict``).
        tasks: the recipe tasks the command works on (None: any).
        needs: ``"model"`` (recipe.yaml, config.json, model.safetensors, tokenizer files) and/or ``"metrics"``
            (metrics.json).
        allow_bare_model: accept a saved model + tokenizer folder without ``recipe.yaml`` (not a run folder).

    Raises:
        NlpipeError: one line naming the missing or broken file (or key) and the fix: a missing folder or file,
        half-written JSON, a truncated ``model.safetensors``, labels that do not match the head, a tokenizer
        with more tokens than the model, a folder mixing two runs, or a run of a task the command does not do.
    """
    from .recipe import parse_recipe, read_yaml

    run_dir = Path(run_dir)
    needs = tuple(needs)
    if not run_dir.is_dir():
        raise NlpipeError(f"{run_dir}: no such run folder; give a folder written by 'nlpipe run recipe'")
    bare = allow_bare_model and not (run_dir / "recipe.yaml").exists()
    required = []
    if "model" in needs:
        required += [] if bare else ["recipe.yaml"]
        required += ["config.json", "model.safetensors", "tokenizer.json"]
    if "metrics" in needs:
        required += ["metrics.json"]
    for name in required:
        if not (run_dir / name).is_file():
            holder = held_by(run_dir)
            if holder is not None:
                raise NlpipeError(f"{run_dir}: a run is still training into this folder ({holder}); wait for it to "
                                  f"finish, then run 'nlpipe {command}' again")
            raise NlpipeError(f"{run_dir}: '{name}' is missing; the run did not finish — rerun it or use --resume")

    recipe = None
    raw: dict[str, Any] = {}
    if (run_dir / "recipe.yaml").is_file():
        loaded = read_yaml(run_dir / "recipe.yaml")
        if not isinstance(loaded, dict):
            raise NlpipeError(f"{run_dir / 'recipe.yaml'}: damaged (not a mapping of recipe keys); {RERUN}")
        raw = loaded
        if "model" in needs:  # a model is built from it: every key must be valid
            recipe = parse_recipe(raw, str(run_dir / "recipe.yaml"))
    task = recipe.task if recipe is not None else raw.get("task")
    info = _read_json_object(run_dir / "run_info.json") if (run_dir / "run_info.json").is_file() else {}
    if task is not None and info.get("task") not in (None, task):
        raise NlpipeError(
            f"{run_dir / 'run_info.json'}: key 'task' is '{info['task']}' but recipe.yaml says '{task}'; the "
            f"folder mixes two runs — {RERUN}"
        )
    if task is not None and tasks is not None and task not in tuple(tasks):
        model = raw.get("model", {}).get("type") if isinstance(raw.get("model"), dict) else None
        raise NlpipeError(
            f"{run_dir}: a {task} run ({model}); 'nlpipe {command}' works on "
            f"{' or '.join(tuple(tasks))} runs — give such a run folder"
        )
    metrics = _read_json_object(run_dir / "metrics.json") if "metrics" in needs else None

    config: dict[str, Any] = {}
    if "model" in needs:
        config = _read_json_object(run_dir / "config.json")
        for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
            if (run_dir / name).is_file():
                _read_json_object(run_dir / name)
        tokenizer_json = _read_json_object(run_dir / "tokenizer.json")
        tensors = check_safetensors(run_dir / "model.safetensors")
        if recipe is not None:
            expected = _expected_model_type(str(recipe.model.get("type")))
            if expected and config.get("model_type") != expected:
                raise NlpipeError(
                    f"{run_dir / 'config.json'}: key 'model_type' is {config.get('model_type')!r} but recipe.yaml "
                    f"trains {recipe.model.get('type')} ({expected}); the folder mixes two runs — {RERUN}"
                )
        if recipe is not None and recipe.task == "token-classification":
            _check_labels(run_dir, config, tensors)
        elif recipe is None and "id2label" in config and "classifier.weight" in tensors:
            _check_labels(run_dir, config, tensors, iob=False)
        n_tokens = _tokenizer_size(tokenizer_json)
        vocab_size = config.get("vocab_size")
        if isinstance(vocab_size, int) and n_tokens is not None and n_tokens > vocab_size:
            raise NlpipeError(
                f"{run_dir / 'tokenizer.json'}: {n_tokens} tokens, but the model in config.json has vocab_size "
                f"{vocab_size}; the tokenizer does not belong to this model (was it replaced?) — {RERUN}"
            )
    return CheckedRunFolder(path=run_dir, recipe=recipe, recipe_raw=raw, info=info, config=config, metrics=metrics)


def open_run(
    run_dir: str | Path, command: str, *, tasks: Iterable[str] | None = None, allow_bare_model: bool = False,
    model_kwargs: dict[str, Any] | None = None, checked: CheckedRunFolder | None = None,
) -> tuple[CheckedRunFolder, Any, Any]:
    """`check_run_folder` (unless `checked` is given), then load the model (safetensors only, no remote code)
    and its tokenizer.

    Returns:
        (checked folder, model in eval mode, tokenizer).

    Raises:
        NlpipeError: as `check_run_folder`, or the weights do not fit ``config.json`` / the tokenizer files do
        not load (naming the file).
    """
    import transformers

    import nlpipe  # noqa: F401  (registers our Auto classes)

    if checked is None:
        checked = check_run_folder(run_dir, command, tasks=tasks, allow_bare_model=allow_bare_model)
    run_dir = checked.path
    if checked.recipe is not None:
        from .tasks import get_task

        auto = getattr(transformers, get_task(checked.recipe).auto_class)
    else:
        auto = _auto_class_of_config(checked.config)
    model = load_weights(auto, run_dir, **(model_kwargs or {}))
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir, trust_remote_code=False)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise NlpipeError(f"{run_dir / 'tokenizer.json'}: does not load ({detail}); {RERUN}") from None
    model.eval()
    return checked, model, tokenizer


def load_weights(auto: Any, run_dir: str | Path, **kwargs: Any) -> Any:
    """``auto.from_pretrained(run_dir)`` from safetensors only, without remote code, quietly, and refusing
    weights that do not fit ``config.json`` (transformers would initialise missing or reshaped tensors at random).

    Raises:
        NlpipeError: naming ``model.safetensors``, ``config.json`` and the first tensor that does not fit.
    """
    import transformers

    run_dir = Path(run_dir)
    weights = f"{run_dir / 'model.safetensors'}: does not fit {run_dir / 'config.json'}"
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # its load report would print a table; we say it in one line
    transformers.utils.logging.disable_progress_bar()
    try:
        model, loading = auto.from_pretrained(
            run_dir, use_safetensors=True, trust_remote_code=False, output_loading_info=True,
            ignore_mismatched_sizes=True, **kwargs,
        )
    except Exception as exc:  # transformers raises many types for a folder that does not fit together
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise NlpipeError(f"{weights} ({detail}); {RERUN}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    # Missing or reshaped tensors would be initialised at random: a model that answers nonsense.
    for kind, what in (("mismatched_keys", "has another shape than"), ("missing_keys", "is missing, expected by")):
        found = sorted(loading.get(kind) or [], key=str)
        if found:
            first = found[0]
            name = first[0] if isinstance(first, (tuple, list)) else first
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise NlpipeError(f"{weights}: tensor '{name}' {what} config.json{more}; {RERUN}")
    return model


def _auto_class_of_config(config: dict[str, Any]) -> Any:
    """The Auto class for a bare model folder (no recipe.yaml), from its config."""
    import transformers

    if config.get("is_encoder_decoder"):
        return transformers.AutoModelForSeq2SeqLM
    if config.get("model_type") in ("gpt2", "nlpipe_rnn_lm"):
        return transformers.AutoModelForCausalLM
    return transformers.AutoModelForTokenClassification
