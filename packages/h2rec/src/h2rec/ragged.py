"""Rows of different lengths over one flat array: what a list of per-user arrays was, without an
array object per user.

The leave-one-out split is three such views of every user's sequence, differing only in where each
row ends (training: before the last two items; validation history: the same; test history: before
the last one), so they share one array of item indices instead of copying it three times.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence

import numpy as np


class Ragged(Sequence):
    """Row ``r`` is ``values[starts[r]:ends[r]]`` (a read-only view). Indexing by an integer gives the
    row, by a slice the rows as another Ragged; ``len`` counts rows; iteration yields rows."""

    __slots__ = ("values", "starts", "ends")

    def __init__(self, values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        values = values.view()
        values.flags.writeable = False  # rows share storage: writing one would change others' data
        self.values, self.starts, self.ends = values, np.asarray(starts, np.int64), np.asarray(ends, np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Ragged(self.values, self.starts[index], self.ends[index])
        row = operator.index(index)
        return self.values[self.starts[row]:self.ends[row]]

    def __iter__(self) -> Iterator[np.ndarray]:
        values = self.values
        for start, end in zip(self.starts.tolist(), self.ends.tolist()):
            yield values[start:end]

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def __repr__(self) -> str:
        return f"Ragged({len(self)} rows, {int(self.lengths.sum())} values)"

