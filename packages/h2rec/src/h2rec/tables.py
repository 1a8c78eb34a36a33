"""Recommendation tables (user_id, rank, item_id, score) written a batch of rows at a time, in the
format the file's suffix names: ``.parquet`` (needs pyarrow, the ``h2rec[parquet]`` extra),
``.csv`` or ``.jsonl``.

Writers only append: what makes a killed run leave no partial file is the caller writing to a temp
file and renaming it (``semid.io.atomic_write``). Scores are float32, the model's own precision, and
text formats spell each one as the shortest decimal that reads back as the same float32.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import H2RecError

COLUMNS = ("user_id", "rank", "item_id", "score")
SUFFIXES = (".parquet", ".csv", ".jsonl")
ROW_GROUP = 1 << 17  # Parquet rows per row group: a few MB, not one tiny group per batch of users


@dataclass
class Rows:
    """A batch of rows, one entry per row in each column."""

    user_id: list[str]
    rank: np.ndarray  # int32, 1 = best
    item_id: list[str]
    score: np.ndarray  # float32


class TableWriter(Protocol):
    def write(self, rows: Rows) -> None: ...

    def close(self) -> None: ...


def check_table_path(path: Path, overwrite: bool, flag: str | None = None) -> None:
    """Refuses, before any work, a file the writers cannot make: an unknown suffix, Parquet without
    pyarrow, an existing file (unless ``overwrite``). ``flag``: the option that named ``path``, for
    the message."""
    where = f"{flag} {path}" if flag else str(path)
    if path.suffix.lower() not in SUFFIXES:
        raise H2RecError(f"{where}: unknown table format {path.suffix or '(no suffix)'!r}; "
                         f"end the name in {', '.join(SUFFIXES)}")
    if path.is_dir():
        raise H2RecError(f"{where}: is a folder; give a file name ending in {', '.join(SUFFIXES)}")
    if path.exists() and not overwrite:
        raise H2RecError(f"{where}: exists; pass --overwrite to replace it, or choose another name")
    if path.suffix.lower() == ".parquet":
        _pyarrow(where)


def _pyarrow(where: str):
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (the writer's module, checked here, before any work)
    except ImportError:
        raise H2RecError(f"{where}: writing Parquet needs pyarrow: pip install 'h2rec[parquet]', "
                         "or end the name in .csv or .jsonl") from None
    return pyarrow


def open_table(path: Path, suffix: str) -> TableWriter:
    """A writer into ``path`` (a temp file) in the format ``suffix`` names; checked by check_table_path."""
    suffix = suffix.lower()
    if suffix == ".parquet":
        return ParquetWriter(path, _pyarrow(str(path)))
    if suffix == ".csv":
        return CsvWriter(path)
    assert suffix == ".jsonl", suffix
    return JsonlWriter(path)


def shortest(scores: np.ndarray) -> list[str]:
    """Each float32 as the shortest decimal that reads back as the same float32 (numpy's repr)."""
    return scores.astype(np.float32).astype(str).tolist()


class CsvWriter:
    def __init__(self, path: Path):
        self._file = open(path, "w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(COLUMNS)

    def write(self, rows: Rows) -> None:
        self._csv.writerows(zip(rows.user_id, rows.rank.tolist(), rows.item_id, shortest(rows.score)))

    def close(self) -> None:
        self._file.close()


class JsonlWriter:
    def __init__(self, path: Path):
        self._file = open(path, "w", encoding="utf-8")

    def write(self, rows: Rows) -> None:
        self._file.writelines(
            json.dumps({"user_id": u, "rank": r, "item_id": i, "score": float(s)}, ensure_ascii=False) + "\n"
            for u, r, i, s in zip(rows.user_id, rows.rank.tolist(), rows.item_id, shortest(rows.score)))

    def close(self) -> None:
        self._file.close()


class ParquetWriter:
    """Buffers batches into row groups of about ``ROW_GROUP`` rows: bounded memory, readable groups."""

    def __init__(self, path: Path, pa):
        import pyarrow.parquet as pq

        self._pa = pa
        self._schema = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
                                  ("score", pa.float32())])
        self._writer = pq.ParquetWriter(str(path), self._schema)
        self._buffer: list = []
        self._buffered = 0

    def write(self, rows: Rows) -> None:
        pa = self._pa
        self._buffer.append(pa.record_batch([pa.array(rows.user_id, pa.string()), pa.array(rows.rank, pa.int32()),
                                             pa.array(rows.item_id, pa.string()), pa.array(rows.score, pa.float32())],
                                            schema=self._schema))
        self._buffered += len(rows.user_id)
        if self._buffered >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(self._pa.Table.from_batches(self._buffer, self._schema))
        self._buffer, self._buffered = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
