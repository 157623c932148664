"""Training rows read straight from an encoded split's Arrow buffers.

The training loader fetches one batch of rows per step. Through ``datasets.Dataset.__getitems__`` a
32-row batch of the tagger's four id columns costs ≈ 0.3 ms (the rows are formatted into Python lists);
slicing the columns' flat value buffers at their list offsets costs ≈ 0.05 ms and copies nothing. At two
threads a word tagger's step is ≈ 30 ms, so the difference is ≈ 1 % of training (docs/performance.md).

Only flat layouts are read this way: columns of numbers and lists of numbers without nulls, in the split's
own row order. Anything else (nested lists, strings, an index mapping left by ``select`` or ``shuffle``)
keeps the dataset itself; `arrow_rows` says which.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch


class ArrowRows(torch.utils.data.Dataset):
    """Rows as dicts of numpy views (list columns) and numpy scalars, from zero-copy views of the Arrow chunks.

    A row holds the same values `datasets` would return as lists, so a task's ``collate`` gives the same
    tensors from either (tests/training/test_arrow_rows.py).
    """

    def __init__(self, columns: dict[str, list[tuple[np.ndarray, np.ndarray | None]]], chunk_starts: np.ndarray,
                 num_rows: int) -> None:
        self.columns = columns  # name -> per chunk (values, offsets or None for a column of numbers)
        self.chunk_starts = chunk_starts  # the first row of each chunk (all columns are chunked alike)
        self.num_rows = num_rows

    def __len__(self) -> int:
        return self.num_rows

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        if any(i < 0 or i >= self.num_rows for i in indices):
            raise IndexError(f"row index out of range for {self.num_rows} rows")
        rows = np.asarray(indices, dtype=np.int64)
        chunks = np.searchsorted(self.chunk_starts, rows, side="right") - 1
        local = rows - self.chunk_starts[chunks]
        out: list[dict[str, Any]] = [{} for _ in indices]
        for name, parts in self.columns.items():
            for row, chunk, i in zip(out, chunks.tolist(), local.tolist(), strict=True):
                values, offsets = parts[chunk]
                row[name] = values[i] if offsets is None else values[offsets[i]:offsets[i + 1]]
        return out


def _flat_column(column: pa.ChunkedArray) -> list[tuple[np.ndarray, np.ndarray | None]] | None:
    """Per chunk (values, offsets) of a column of numbers or of lists of numbers; None for any other layout."""
    parts = []
    for chunk in column.chunks:
        if chunk.null_count:
            return None
        if pa.types.is_integer(chunk.type) or pa.types.is_floating(chunk.type):
            parts.append((chunk.to_numpy(zero_copy_only=True), None))
        elif pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type):
            values = chunk.values
            if values.null_count or not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
                return None
            parts.append((values.to_numpy(zero_copy_only=True), chunk.offsets.to_numpy(zero_copy_only=True)))
        else:
            return None
    return parts


def arrow_rows(dataset: datasets.Dataset) -> ArrowRows | None:
    """`ArrowRows` over every column of `dataset`, or None when a column or the row order is not flat."""
    if dataset._indices is not None or dataset.format.get("type") is not None or not dataset.column_names:
        return None
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    columns = {}
    boundaries = None
    for name in dataset.column_names:
        column = table.column(name)
        starts = np.cumsum([0, *(len(chunk) for chunk in column.chunks)], dtype=np.int64)[:-1]
        if boundaries is not None and not np.array_equal(boundaries, starts):
            return None  # columns chunked differently (not what `datasets.map` writes)
        boundaries = starts
        parts = _flat_column(column)
        if parts is None:
            return None
        columns[name] = parts
    return ArrowRows(columns, boundaries, len(dataset))
