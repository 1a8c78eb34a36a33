"""Delimited and Parquet interaction files read by pyarrow into an :class:`Interactions` table.

A delimited file (CSV, TSV, row-per-interaction ``.inter``) is parsed here only when the result is
the line readers' (``readers.py``) to the byte: ids as strings (``007`` stays ``007``), stripped;
times as float64. Anything else (pyarrow refuses the file, a byte check fails, an id is empty, a
time is missing, NaN or infinite) returns None, and the line readers read the file again: they
either accept it (pyarrow is stricter about, e.g., `` 12`` as a number) or name the line and field
that is wrong. Parquet has no line reader behind it, so its checks name the row and field here.

Ids are factorised by pyarrow's hash-based ``dictionary_encode``, whose dictionary is in order of
first appearance: the user order of the line readers.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .config import DataConfig
from .csv_scan import is_utf8, quoting_is_strict
from .errors import H2RecError
from .interactions import Interactions

log = logging.getLogger(__name__)


def read_delimited(path: Path, cfg: DataConfig, fields: list[str], delimiter: str,
                   quoted: bool) -> Interactions | None:
    """``fields``: the header as the line readers read it. None: leave the file to them."""
    wanted = [cfg.user_field, cfg.item_field] + ([cfg.time_field] if cfg.time_field in fields else [])
    # a missing field is theirs to name; with a repeated name pyarrow takes the first column, Python the last
    if any(fields.count(name) != 1 for name in wanted):
        return None
    if not is_utf8(path) or (quoted and not quoting_is_strict(path, delimiter)):
        return _line_readers(path, "not UTF-8, or malformed quoting")
    read = pacsv.ReadOptions(column_names=None if quoted else fields, skip_rows=0 if quoted else 1)
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False,
                               newlines_in_values=quoted)
    types = {cfg.user_field: pa.string(), cfg.item_field: pa.string(), cfg.time_field: pa.float64()}
    convert = pacsv.ConvertOptions(include_columns=wanted, column_types={name: types[name] for name in wanted})
    try:
        table = pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowException as err:  # a parse or conversion error: the line readers name its line
        return _line_readers(path, str(err))
    if quoted and table.column_names != wanted:
        return _line_readers(path, "pyarrow read another header")
    if not table.num_rows:
        return _line_readers(path, "no rows")
    users, user_ids = _codes(table.column(cfg.user_field))
    items, item_ids = _codes(table.column(cfg.item_field))
    if "" in user_ids or "" in item_ids:
        return _line_readers(path, "an empty id")
    times = None
    if cfg.time_field in wanted:
        column = table.column(cfg.time_field)
        if column.null_count:
            return _line_readers(path, "a missing time")
        times = _numpy(column, np.float64)
        if not np.isfinite(times).all():
            return _line_readers(path, "a NaN or infinite time")
    return Interactions.from_columns(users, items, times, user_ids, item_ids)


def _line_readers(path: Path, reason: str) -> None:
    log.debug("%s: read line by line (%s)", path, reason)
    return None


def _numpy(column: pa.ChunkedArray | pa.Array, dtype: type) -> np.ndarray:
    """A null-free numeric column as numpy, through its data buffer: pyarrow's own to_numpy imports
    pandas when it is installed, ~0.4 s of every run that reads a file."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not len(array):
        return np.empty(0, dtype=dtype)
    assert array.null_count == 0 and array.type.bit_width == 8 * np.dtype(dtype).itemsize, array.type
    return np.frombuffer(array.buffers()[1], dtype=dtype)[array.offset:array.offset + len(array)]


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """(N,) codes and the ids they index, in order of first appearance, ids stripped of white space
    (Python's str.strip, as the line readers); an id that is only white space becomes ""."""
    encoded = pc.dictionary_encode(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
    codes = _numpy(encoded.indices, np.int32).astype(np.int64)
    ids = encoded.dictionary.to_pylist()
    stripped = [text.strip() for text in ids]  # on the distinct ids only: cheap next to the column
    if stripped == ids:
        return codes, ids
    # " u1" and "u1" are one user: renumber; the first raw spelling to appear is the first of its id
    merged: dict[str, int] = {}
    remap = np.fromiter((merged.setdefault(text, len(merged)) for text in stripped), dtype=np.int64,
                        count=len(stripped))
    return remap[codes], list(merged)


# ---------------------------------------------------------------------------------------------
# Parquet: typed columns, so the checks are on types and nulls, named by row (1 = the first row)


def read_parquet(path: Path, cfg: DataConfig) -> Interactions:
    # ParquetFile, not pq.read_table: that one goes through pyarrow.dataset, ~0.5 s more to import
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise H2RecError(f"{path}: cannot be read as Parquet ({err})") from None
    with contextlib.closing(parquet):
        wanted = _parquet_columns(path, parquet.schema_arrow, cfg)
        try:
            table = parquet.read(columns=wanted)
        except (pa.ArrowException, OSError) as err:
            raise H2RecError(f"{path}: cannot be read as Parquet ({err})") from None
    if not table.num_rows:
        raise H2RecError(f"{path}: no interactions found (empty file?)")
    users, user_ids = _parquet_ids(path, table, cfg.user_field)
    items, item_ids = _parquet_ids(path, table, cfg.item_field)
    times = _parquet_times(path, table, cfg.time_field) if len(wanted) == 3 else None
    return Interactions.from_columns(users, items, times, user_ids, item_ids)


def _parquet_columns(path: Path, schema: pa.Schema, cfg: DataConfig) -> list[str]:
    """The columns to read (user, item, and time when present), after checking their types."""
    names = schema.names
    for name in (cfg.user_field, cfg.item_field):
        if name not in names:
            raise H2RecError(f"{path}: no field {name!r}; the file has {names}. Set user_field/item_field.")
    wanted = [cfg.user_field, cfg.item_field] + ([cfg.time_field] if cfg.time_field in names else [])
    for name in wanted:
        if names.count(name) != 1:
            raise H2RecError(f"{path}: field {name!r} is {names.count(name)} columns; name each column once")
    for name in wanted[:2]:
        _check_id_type(path, name, schema.field(name).type)
    if len(wanted) == 3:
        _check_time_type(path, cfg.time_field, schema.field(cfg.time_field).type)
    return wanted


def _check_id_type(path: Path, name: str, kind: pa.DataType) -> None:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
        raise H2RecError(f"{path}: field {name!r} holds {kind} values; an id must be a string or an integer")


def _check_time_type(path: Path, name: str, kind: pa.DataType) -> None:
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_timestamp(kind)
            or pa.types.is_date(kind)):
        raise H2RecError(f"{path}: field {name!r} holds {kind} values; a time must be a number (Unix time or any "
                         "increasing count), a timestamp or a date")


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    """The 1-based row of the first true in ``mask``."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 1


def _parquet_ids(path: Path, table: pa.Table, name: str) -> tuple[np.ndarray, list[str]]:
    column = table.column(name)
    if column.null_count:
        raise H2RecError(f"{path}: row {_first(column.is_null())}: field {name!r} is missing (null)")
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_dictionary(column.type):
        column = column.cast(kind)
    if pa.types.is_integer(kind):
        column = column.cast(pa.string())  # 7 -> "7", as the JSON reader spells an integer id
    codes, ids = _codes(column)
    if "" in ids:
        raise H2RecError(f"{path}: row {_first(codes == ids.index(''))}: field {name!r} is empty")
    return codes, ids


def _parquet_times(path: Path, table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise H2RecError(f"{path}: row {_first(column.is_null())}: field {name!r} is missing (null)")
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        # only the order matters: the instant as a count of the column's own unit
        column = column.cast(pa.int64() if pa.types.is_timestamp(column.type) or column.type == pa.date64()
                             else pa.int32())
    times = _numpy(column.cast(pa.float64(), safe=False), np.float64)  # as the line readers: float(value)
    bad = ~np.isfinite(times)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise H2RecError(f"{path}: row {row + 1}: field {name!r} is {float(times[row])!r}; "
                         "a time must be a finite number")
    return times
