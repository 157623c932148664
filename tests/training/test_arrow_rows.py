"""`ArrowRows`: the training loader's rows read from the Arrow buffers must be the rows `datasets` returns."""

from __future__ import annotations

import random
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from nlpipe.tasks.base import pad_rows
from nlpipe.training.arrow_rows import arrow_rows


def _encoded(tmp_path: Path) -> datasets.Dataset:
    """23 rows of ragged id lists (some empty) and a number column, written in chunks of 4 rows to a memory-mapped
    cache file, as `datasets.map` writes an encoded split."""
    rng = random.Random(0)
    raw = datasets.Dataset.from_dict({"n": list(range(23))})

    def encode(batch):
        ids = [[rng.randrange(-100, 50_000) for _ in range(rng.randrange(0, 9))] for _ in batch["n"]]
        return {"input_ids": ids, "labels": [[float(x) / 7 for x in row] for row in ids], "size": batch["n"]}

    return raw.map(encode, batched=True, batch_size=4, writer_batch_size=4, remove_columns=["n"],
                   cache_file_name=str(tmp_path / "encoded.arrow"))


def test_rows_equal_what_datasets_returns_across_chunks(tmp_path: Path) -> None:
    encoded = _encoded(tmp_path)
    assert encoded.data.table.column("input_ids").num_chunks > 3  # several chunks: row → chunk lookup is exercised
    rows = arrow_rows(encoded)
    assert rows is not None and len(rows) == len(encoded) and rows.column_names == encoded.column_names
    order = list(range(len(encoded)))
    random.Random(1).shuffle(order)
    for batch in (order[:7], order[7:], [0], [len(encoded) - 1, 3, 4, 3]):  # chunk edges and a repeat
        got = rows.__getitems__(batch)
        want = encoded.__getitems__(batch)
        for g, w in zip(got, want, strict=True):
            assert g.keys() == w.keys()
            assert {k: np.asarray(g[k]).tolist() for k in g} == w
    assert np.asarray(rows[5]["input_ids"]).tolist() == encoded[5]["input_ids"]
    with pytest.raises(IndexError):
        rows.__getitems__([len(encoded)])


def test_collation_is_the_same_from_lists_and_from_arrow_rows(tmp_path: Path) -> None:
    encoded = _encoded(tmp_path)
    rows = arrow_rows(encoded)
    batch = [2, 9, 10, 17, 22]
    longest = max(len(encoded[i]["input_ids"]) for i in batch)
    from_lists = pad_rows([encoded[i]["input_ids"] for i in batch], longest, 0)
    from_arrow = pad_rows([r["input_ids"] for r in rows.__getitems__(batch)], longest, 0)
    assert all(torch.equal(a, b) for a, b in zip(from_lists, from_arrow, strict=True))
    assert from_arrow[0].dtype == torch.long


@pytest.mark.parametrize("change", ["nested", "strings", "selected", "formatted"])
def test_other_layouts_keep_the_dataset(tmp_path: Path, change: str) -> None:
    encoded = _encoded(tmp_path)
    if change == "nested":  # e.g. a masked-LM split's offset pairs
        encoded = encoded.add_column("offsets", [[[0, 1]] for _ in range(len(encoded))])
    elif change == "strings":
        encoded = encoded.add_column("text", ["x"] * len(encoded))
    elif change == "selected":  # an index mapping: the buffers are not in row order
        encoded = encoded.select([3, 1, 2])
    else:
        encoded = encoded.with_format("torch")
    assert arrow_rows(encoded) is None
