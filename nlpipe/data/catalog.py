"""The data sets a recipe can name, and where each comes from.

A recipe names its data set once (``data.dataset: conll2003``); `load_data` then resolves it:

1. ``source="sample"`` — a deterministic generator inside the package (small but learnable);
2. ``data_dir`` (``--data-dir`` or ``$NLPIPE_DATA_DIR``) — local files laid out like ``shared/data``;
3. otherwise the Hugging Face Hub id (a Parquet copy; script-based Hub sets no longer load).

Whatever the source, every split comes back with the same columns: ``tokens``/``tags`` for
tagging, ``source``/``target`` for seq2seq, ``text`` for language modelling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NlpipeError, shorten
from . import readers, samples

if TYPE_CHECKING:  # imported where data is loaded: recipe checks (`get_source`) serve the light CLI
    import datasets

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetSource:
    """One catalog entry."""

    kind: str
    """Record format and sample generator: ner | translation | summarization | lm."""
    folder: str
    """Folder name under a data dir (``shared/data/<folder>``)."""
    files: dict[str, tuple[str, ...]]
    """Split → file name(s) inside the folder (two for parallel text)."""
    reader: str
    """conll | parallel | csv | lines"""
    hub_id: str
    hub_config: str | None = None
    hub_revision: str | None = None
    hub_columns: dict[str, str] = field(default_factory=dict)
    """Our column → the Hub data set's column."""
    csv_columns: dict[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    """Fixed label set (tagging), in the order of the Hub's ClassLabel ids."""


CONLL_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")

CATALOG: dict[str, DatasetSource] = {
    "conll2003": DatasetSource(
        kind="ner",
        folder="conll2003",
        files={"train": ("train.txt",), "validation": ("valid.txt",), "test": ("test.txt",)},
        reader="conll",
        hub_id="eriktks/conll2003",
        hub_revision="refs/convert/parquet",
        hub_columns={"tokens": "tokens", "tags": "ner_tags"},
        labels=CONLL_LABELS,
    ),
    "multi30k": DatasetSource(
        kind="translation",
        folder="multi30k",
        files={
            "train": ("train.de", "train.en"),
            "validation": ("val.de", "val.en"),
            "test": ("test_2016_flickr.de", "test_2016_flickr.en"),
        },
        reader="parallel",
        hub_id="bentrevett/multi30k",
        hub_columns={"source": "de", "target": "en"},
    ),
    "samsum": DatasetSource(
        kind="summarization",
        folder="samsum",
        files={"train": ("train.csv",), "validation": ("validation.csv",), "test": ("test.csv",)},
        reader="csv",
        hub_id="knkarthick/samsum",
        hub_columns={"source": "dialogue", "target": "summary"},
        csv_columns={"source": "dialogue", "target": "summary"},
    ),
    "ptb": DatasetSource(
        kind="lm",
        folder="ptb",
        files={"train": ("ptb.train.txt",), "validation": ("ptb.valid.txt",), "test": ("ptb.test.txt",)},
        reader="lines",
        hub_id="ptb-text-only/ptb_text_only",
        hub_revision="refs/convert/parquet",
        hub_columns={"text": "sentence"},
    ),
    "wikitext2": DatasetSource(
        kind="lm",
        folder="wikitext2",
        files={"train": ("train.txt",), "validation": ("valid.txt",), "test": ("test.txt",)},
        reader="lines",
        hub_id="Salesforce/wikitext",
        hub_config="wikitext-2-v1",
        hub_columns={"text": "text"},
    ),
}


def get_source(name: str, where: str = "recipe") -> DatasetSource:
    """Catalog entry by name; unknown names are an NlpipeError listing the catalog."""
    if name not in CATALOG:
        raise NlpipeError(f"{where}: key 'data.dataset': unknown data set {shorten(name)}; known: {', '.join(CATALOG)}")
    return CATALOG[name]


def _find_file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise NlpipeError(
        f"{folder / name}(.gz): data file not found; lay out --data-dir as README.md 'Real data' describes "
        f"(<dir>/{folder.name}/{name}[.gz]) or use --data sample"
    )


def _read_local(source: DatasetSource, data_dir: Path) -> dict[str, list[dict]]:
    folder = data_dir / source.folder
    if not folder.is_dir():
        raise NlpipeError(f"{folder}: data folder not found; --data-dir must contain '{source.folder}/'")
    out: dict[str, list[dict]] = {}
    for split, names in source.files.items():
        paths = [_find_file(folder, n) for n in names]
        if source.reader == "conll":
            out[split] = readers.read_conll(paths[0])
        elif source.reader == "parallel":
            out[split] = readers.read_parallel(paths[0], paths[1])
        elif source.reader == "csv":
            out[split] = readers.read_csv(paths[0], source.csv_columns)
        else:
            out[split] = readers.read_lines(paths[0])
    return out


def _read_hub(source: DatasetSource, cache: Path) -> dict[str, list[dict]]:
    """Load from the Hub (network) and normalise columns to ours."""
    try:
        import datasets

        loaded = datasets.load_dataset(
            source.hub_id, source.hub_config, revision=source.hub_revision, cache_dir=str(cache)
        )
    except Exception as exc:  # the Hub's errors are many and change between releases
        raise NlpipeError(
            f"could not load '{source.hub_id}' from the Hugging Face Hub ({type(exc).__name__}); "
            f"offline, use --data-dir DIR (files laid out as README.md 'Real data' describes) or --data sample"
        ) from exc
    out: dict[str, list[dict]] = {}
    for split in SPLITS:
        if split not in loaded:
            continue
        ds = loaded[split]
        records = []
        for row in ds:
            record = {ours: row[theirs] for ours, theirs in source.hub_columns.items()}
            if source.labels and "tags" in record:
                record["tags"] = [source.labels[i] if isinstance(i, int) else i for i in record["tags"]]
            records.append(record)
        out[split] = records
    return out


def _to_datasets(records: dict[str, list[dict]], name: str) -> datasets.DatasetDict:
    import datasets

    result = {}
    for split in SPLITS:
        rows = records.get(split)
        if not rows:
            raise NlpipeError(f"data set '{name}': split '{split}' is empty or missing; every split needs examples")
        result[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(result)


def load_data(
    name: str,
    *,
    source: str | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
) -> datasets.DatasetDict:
    """Load a catalog data set as a `DatasetDict` with train/validation/test splits.

    Args:
        name: catalog name (``conll2003``, ``multi30k``, ``samsum``, ``ptb``, ``wikitext2``).
        source: ``"sample"`` for the built-in generator, ``"hub"`` to force the Hub, None to decide
            from `data_dir` / ``$NLPIPE_DATA_DIR`` (local files) or else the Hub.
        data_dir: a folder laid out like ``shared/data``.
        max_train_examples / max_eval_examples: keep only the first N examples of those splits.

    Raises:
        NlpipeError: unknown name, missing files, unreadable data, empty split.
    """
    entry = get_source(name)
    if source not in (None, "sample", "hub", "dir"):
        raise NlpipeError(f"--data {shorten(source)}: choose 'sample' (built-in data) or give --data-dir DIR")
    data_dir = data_dir or (None if source in ("sample", "hub") else os.environ.get("NLPIPE_DATA_DIR"))
    if source == "sample":
        records = samples.make_sample(entry.kind, seed=seed)
    elif data_dir:
        records = _read_local(entry, Path(data_dir))
    else:
        from ..tokenizer_training import cache_dir

        records = _read_hub(entry, cache_dir() / "datasets")
    if max_train_examples:
        records["train"] = records["train"][:max_train_examples]
    if max_eval_examples:
        for split in ("validation", "test"):
            records[split] = records[split][:max_eval_examples]
    return _to_datasets(records, name)


def describe_source(source: str | None, data_dir: str | Path | None) -> dict[str, Any]:
    """What a run folder records about where its data came from (so `nlpipe eval` can reload it)."""
    data_dir = data_dir or (None if source in ("sample", "hub") else os.environ.get("NLPIPE_DATA_DIR"))
    if source == "sample":
        return {"source": "sample"}
    if data_dir:
        return {"source": "dir", "data_dir": str(Path(data_dir).resolve())}
    return {"source": "hub"}


def source_label(dataset: str, data: dict[str, Any] | None) -> str:
    """Which data a run really used, for people: cards, metrics.json and `nlpipe compare`.

    A run on the built-in sample says so (it is synthetic data in the data set's format, not the data set), so
    nothing downstream presents its scores as results on ``conll2003`` & co.
    """
    source = (data or {}).get("source")
    if source == "sample":
        return f"nlpipe built-in sample (synthetic, {dataset} format; not {dataset})"
    if source == "dir":
        return f"{dataset} (local files)"
    if source == "hub":
        entry = CATALOG.get(dataset)
        return f"{dataset} (Hub {entry.hub_id})" if entry else f"{dataset} (Hub)"
    return dataset
