"""The data catalog: sample, local files and (stand-in) Hub sources give the same columns."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from nlpipe.data.catalog import CATALOG, load_data
from nlpipe.errors import NlpipeError

COLUMNS = {"ner": {"tokens", "tags"}, "translation": {"source", "target"}, "summarization": {"source", "target"},
           "lm": {"text"}}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_sample_source_has_catalog_columns(name: str) -> None:
    data = load_data(name, source="sample")
    assert set(data) == {"train", "validation", "test"}
    assert set(data["train"].column_names) == COLUMNS[CATALOG[name].kind]
    assert len(data["train"]) > len(data["test"]) > 0


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_local_files_of_every_dataset(name: str, shared_data: Path) -> None:
    data = load_data(name, data_dir=shared_data, max_train_examples=50, max_eval_examples=20)
    assert len(data["train"]) == 50 and len(data["test"]) == 20
    assert set(data["train"].column_names) == COLUMNS[CATALOG[name].kind]


def test_env_var_selects_local_files(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPIPE_DATA_DIR", str(shared_data))
    data = load_data("conll2003", max_eval_examples=5)
    assert len(data["train"]) == 14041
    assert data["train"][0]["tokens"][:2] == ["EU", "rejects"]


def test_missing_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(NlpipeError, match="conll2003.*data folder not found"):
        load_data("conll2003", data_dir=tmp_path)
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "train.txt").write_text("EU B-ORG\n")
    with pytest.raises(NlpipeError, match=r"valid\.txt.*not found.*--data sample"):
        load_data("conll2003", data_dir=tmp_path)


def test_unknown_dataset() -> None:
    with pytest.raises(NlpipeError, match="unknown data set 'imagenet'"):
        load_data("imagenet", source="sample")


def test_hub_source_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub path (a stand-in for datasets.load_dataset) maps ClassLabel ids to our tag strings."""
    calls = {}

    def fake_load_dataset(path, name=None, revision=None, cache_dir=None):
        calls.update(path=path, revision=revision, cache_dir=cache_dir)
        split = datasets.Dataset.from_dict({"tokens": [["EU", "rejects"]], "ner_tags": [[3, 0]], "pos_tags": [[1, 2]]})
        return datasets.DatasetDict({"train": split, "validation": split, "test": split})

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    monkeypatch.delenv("NLPIPE_DATA_DIR", raising=False)
    data = load_data("conll2003")
    assert calls["path"] == "eriktks/conll2003" and calls["revision"] == "refs/convert/parquet"
    assert data["train"][0] == {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}


def test_hub_failure_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("datasets.load_dataset", offline)
    monkeypatch.delenv("NLPIPE_DATA_DIR", raising=False)
    with pytest.raises(NlpipeError, match="--data-dir DIR.*--data sample"):
        load_data("multi30k")
