"""Interaction files in the layouts found in the wild, read into an :class:`~h2rec.interactions.Interactions`
table (each user's items oldest first), or ``{user: [item, ...]}`` by :func:`read_interactions`.

- ``csv`` / ``tsv`` / ``jsonl``: one interaction per row with user, item and optional timestamp fields;
- ``parquet``: the same columns in a Parquet file (read by ``columnar.py``; ids strings or integers,
  times numbers, timestamps or dates; errors name the row);
- ``inter``: RecBole atomic files (``field:type`` header, tab separated), either one interaction per
  row or one user per row with an ``item_id_list`` history plus the last ``item_id`` (UniSRec style);
- ``sequences``: P5 / S3Rec ``user item item ...`` lines;
- ``json``: LC-Rec / LETTER ``{"user": [item, ...]}``.

With timestamps, each user's items are sorted by time (stable, so ties keep file order); without,
file order is chronological order. A timestamp is a finite number (Unix time or any increasing
count): text, dates, NaN or infinity are refused, naming the file, line and field. CSV/TSV follow
RFC 4180 (a quoted field may hold the delimiter or a line break); a malformed quote is refused.
Files are UTF-8 (a leading byte-order mark is allowed). Ids are kept as strings, stripped of
surrounding white space.

CSV, TSV and row-per-interaction ``.inter`` files are parsed by pyarrow (``columnar.py``). The line
readers here are the reference: they read every other layout, and a delimited file pyarrow
refuses or that fails a check, so that every error names its file, line and field as before.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .config import DataConfig
from .errors import H2RecError
from .interactions import Interactions

log = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "jsonl", "parquet", "inter", "sequences", "json")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet", ".inter": "inter",
             ".txt": "sequences", ".json": "json"}
PARQUET_MAGIC = b"PAR1"  # the first (and last) 4 bytes of every Parquet file


def detect_format(path: Path, fmt: str = "auto") -> str:
    """The layout of an interaction file (semid.items.detect_format names item files: other layouts)."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise H2RecError(f"unknown interaction format {fmt!r}; choose one of {list(FORMATS)} or 'auto'")
        return fmt
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt == "parquet" and not _starts_with(path, PARQUET_MAGIC):
        raise H2RecError(f"{path}: cannot tell the layout: the name ends in .parquet, but the file does not start "
                         f"with Parquet's {PARQUET_MAGIC!r} (empty, or another format); pass format= one of "
                         f"{list(FORMATS)}")
    if fmt:
        return fmt
    raise H2RecError(f"{path}: cannot tell the layout from the suffix {path.suffix!r}; "
                     f"pass format= one of {list(FORMATS)}")


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as f:
        return f.read(len(magic)) == magic


def _not_utf8(path: Path, err: UnicodeDecodeError) -> H2RecError:
    """The error for a file that is not UTF-8, naming the first bad line. The decoder's own offset
    counts from the start of the chunk it was decoding, so the file is scanned again, line by line
    (a multi-byte UTF-8 character never holds the newline byte, so lines decode independently)."""
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return H2RecError(f"{path}:{line}: not valid UTF-8 at byte {bad.start + 1} of the line "
                                  f"({bad.reason}); save the file as UTF-8")
    return H2RecError(f"{path}: not valid UTF-8 ({err.reason})")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) must not become part of the first field name
        with path.open(encoding="utf-8-sig", newline="") as f:
            yield from enumerate(f, start=1)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None


def _id(value, path: Path, line: int, field: str) -> str:
    if value is None:
        raise H2RecError(f"{path}:{line}: field {field!r} is missing")
    if isinstance(value, (dict, list, bool, float)):
        raise H2RecError(f"{path}:{line}: field {field!r} must be a string or integer id, got {value!r}")
    text = str(value).strip()
    if not text:
        raise H2RecError(f"{path}:{line}: field {field!r} is empty")
    return text


def _time(value, path: Path, line: int, field: str) -> float:
    if value is None:
        raise H2RecError(f"{path}:{line}: field {field!r} is missing")
    try:
        if isinstance(value, bool):  # JSON true/false would pass as 1.0/0.0
            raise TypeError
        time = float(value)
    except (TypeError, ValueError):
        raise H2RecError(f"{path}:{line}: field {field!r} is not a number: {value!r}") from None
    if not math.isfinite(time):  # NaN compares false with everything: sorting by it scrambles the order
        raise H2RecError(f"{path}:{line}: field {field!r} is {value!r}; a time must be a finite number")
    return time


class _Collector:
    """Gathers (user, item, time) rows in file order, coding each id as it first appears; the
    ordering itself is :meth:`Interactions.from_columns`' (vectorised)."""

    def __init__(self, timed: bool = False) -> None:
        self.user_code: dict[str, int] = {}
        self.item_code: dict[str, int] = {}
        self.users, self.items, self.times = array("q"), array("q"), array("d")
        self.timed = timed

    def add(self, user: str, item: str, time: float = 0.0) -> None:
        self.users.append(self.user_code.setdefault(user, len(self.user_code)))
        self.items.append(self.item_code.setdefault(item, len(self.item_code)))
        if self.timed:
            self.times.append(time)

    def interactions(self, path: Path) -> Interactions:
        if not self.users:
            raise H2RecError(f"{path}: no interactions found (empty file?)")
        times = np.frombuffer(self.times, dtype=np.float64) if self.timed else None
        return Interactions.from_columns(np.frombuffer(self.users, dtype=np.int64),
                                         np.frombuffer(self.items, dtype=np.int64), times,
                                         list(self.user_code), list(self.item_code))


def _read_rows(path: Path, rows: Iterator[tuple[int, dict]], cfg: DataConfig, fields: list[str]) -> Interactions:
    for name in (cfg.user_field, cfg.item_field):
        if name not in fields:
            raise H2RecError(f"{path}: no field {name!r}; the file has {fields}. Set user_field/item_field.")
    has_time = cfg.time_field in fields
    out = _Collector(timed=has_time)
    for line, row in rows:
        user = _id(row.get(cfg.user_field), path, line, cfg.user_field)
        item = _id(row.get(cfg.item_field), path, line, cfg.item_field)
        time = _time(row.get(cfg.time_field), path, line, cfg.time_field) if has_time else 0.0
        out.add(user, item, time)
    return out.interactions(path)


def _records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each non-blank record. One csv reader reads the whole file, so a
    quoted field may span lines; strict, so that a malformed quote is an error naming its line
    rather than a field that swallows the lines after it."""
    reader = csv.reader((text for _, text in _lines(path)), delimiter=delimiter, strict=True)
    start = 1  # reader.line_num counts the lines read so far: the next record starts after them
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            if str(err) == "unexpected end of data":
                raise H2RecError(f"{path}:{start}: a quoted field opened on this line is never closed "
                                 "(a quote inside a field is written as two quotes)") from None
            if str(err).startswith("field larger than field limit"):
                raise H2RecError(f"{path}:{start}: a field starting on this line runs past "
                                 f"{csv.field_size_limit()} characters: an unclosed quote?") from None
            raise H2RecError(f"{path}:{reader.line_num}: malformed quoting ({err})") from None
        if len(values) > 1 or (values and values[0].strip()):  # blank lines are skipped
            yield start, values
        start = reader.line_num + 1


def _read_delimited(path: Path, cfg: DataConfig, delimiter: str) -> Interactions:
    records = _records(path, delimiter)
    try:
        _, fields = next(records)
    except StopIteration:
        raise H2RecError(f"{path}: empty file") from None

    def rows():
        for line, values in records:
            if len(values) != len(fields):
                raise H2RecError(f"{path}:{line}: {len(values)} fields where the header has {len(fields)}")
            yield line, dict(zip(fields, values))

    return _read_rows(path, rows(), cfg, fields)


def _read_jsonl(path: Path, cfg: DataConfig) -> Interactions:
    def rows():
        for line, text in _lines(path):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise H2RecError(f"{path}:{line}: malformed JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise H2RecError(f"{path}:{line}: expected a JSON object per line")
            yield line, row

    first = {}
    for _, row in rows():
        first = row
        break
    if not first:
        raise H2RecError(f"{path}: no interactions found (empty file?)")
    return _read_rows(path, rows(), cfg, list(first))


def _read_atomic(path: Path, cfg: DataConfig) -> Interactions:
    lines = _lines(path)
    try:
        _, header = next(lines)
    except StopIteration:
        raise H2RecError(f"{path}: empty file") from None
    fields = [name.split(":", 1)[0] for name in header.rstrip("\r\n").split("\t")]
    list_field = cfg.item_field + "_list"
    if list_field not in fields:
        def rows():
            for line, text in lines:
                if text.strip():
                    values = text.rstrip("\r\n").split("\t")
                    if len(values) != len(fields):
                        raise H2RecError(f"{path}:{line}: {len(values)} fields where the header has {len(fields)}")
                    yield line, dict(zip(fields, values))
        return _read_rows(path, rows(), cfg, fields)

    # One user per row: history list + last item (RecBole's sequential "inter" layout).
    for name in (cfg.user_field, cfg.item_field):
        if name not in fields:
            raise H2RecError(f"{path}: no field {name!r}; the header has {fields}")
    out = _Collector()
    seen: set[str] = set()
    for line, text in lines:
        if not text.strip():
            continue
        row = dict(zip(fields, text.rstrip("\r\n").split("\t")))
        user = _id(row.get(cfg.user_field), path, line, cfg.user_field)
        if user in seen:
            raise H2RecError(f"{path}:{line}: user {user!r} appears twice in a one-row-per-user file")
        seen.add(user)
        for item in (row.get(list_field) or "").split():
            out.add(user, item)
        out.add(user, _id(row.get(cfg.item_field), path, line, cfg.item_field))
    return out.interactions(path)


def _read_sequences(path: Path) -> Interactions:
    out = _Collector()
    seen: set[str] = set()
    for line, text in _lines(path):
        parts = text.split()
        if not parts:
            continue
        user, items = parts[0], parts[1:]
        if not items:
            raise H2RecError(f"{path}:{line}: user {user!r} has no items")
        if user in seen:
            raise H2RecError(f"{path}:{line}: user {user!r} appears on two lines")
        seen.add(user)
        for item in items:
            out.add(user, item)
    return out.interactions(path)


def _read_json(path: Path) -> Interactions:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except json.JSONDecodeError as err:
        raise H2RecError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise H2RecError(f"{path}: expected a JSON object {{user: [item, ...]}}")
    out = _Collector()
    for user, items in data.items():
        if not isinstance(items, list):
            raise H2RecError(f"{path}: user {user!r}: expected a list of items, got {type(items).__name__}")
        for item in items:
            out.add(_id(user, path, 0, "user"), _id(item, path, 0, f"items of user {user!r}"))
    return out.interactions(path)


def _header(path: Path, fmt: str) -> list[str] | None:
    """The field names of a delimited file, read as the line readers read them (None: no header)."""
    if fmt == "inter":
        first = next(_lines(path), None)
        return None if first is None else [name.split(":", 1)[0] for name in first[1].rstrip("\r\n").split("\t")]
    first = next(_records(path, "," if fmt == "csv" else "\t"), None)
    return None if first is None else first[1]


def _read_columnar(path: Path, cfg: DataConfig, fmt: str) -> Interactions | None:
    """A CSV, TSV or row-per-interaction .inter file parsed by pyarrow; None leaves the file to the
    line readers (a one-row-per-user .inter file, pyarrow missing, or anything pyarrow's parse would
    not reproduce exactly: they then read it, or name the line that is wrong)."""
    fields = _header(path, fmt)
    if fields is None or (fmt == "inter" and cfg.item_field + "_list" in fields):
        return None
    try:
        from . import columnar
    except ImportError:  # pyarrow is a dependency, but an install without it still reads every text layout
        log.debug("pyarrow is not installed: %s is read line by line", path)
        return None
    return columnar.read_delimited(path, cfg, fields, delimiter="," if fmt == "csv" else "\t",
                                   quoted=fmt != "inter")


def load_interactions(cfg: DataConfig) -> Interactions:
    """The interactions of ``cfg.interactions`` in ``cfg.format``, each user's items oldest first."""
    path = Path(cfg.interactions)
    if not path.is_file():
        raise H2RecError(f"{path}: interaction file not found")
    fmt = detect_format(path, cfg.format)
    if fmt == "parquet":
        try:
            from .columnar import read_parquet
        except ImportError:
            raise H2RecError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from None
        return read_parquet(path, cfg)
    if fmt in ("csv", "tsv", "inter"):
        table = _read_columnar(path, cfg, fmt)
        if table is not None:
            return table
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, cfg, "," if fmt == "csv" else "\t")
    if fmt == "jsonl":
        return _read_jsonl(path, cfg)
    if fmt == "inter":
        return _read_atomic(path, cfg)
    if fmt == "sequences":
        return _read_sequences(path)
    return _read_json(path)


def read_interactions(cfg: DataConfig) -> dict[str, list[str]]:
    """``{user: [item, ...]}`` oldest first, from ``cfg.interactions`` in ``cfg.format``."""
    return load_interactions(cfg).to_dict()
