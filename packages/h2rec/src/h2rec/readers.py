"""Interaction files in the four layouts found in the wild, read into ``{user: [item, ...]}`` (oldest first).

- ``csv`` / ``tsv`` / ``jsonl``: one interaction per row with user, item and optional timestamp fields;
- ``inter``: RecBole atomic files (``field:type`` header, tab separated), either one interaction per
  row or one user per row with an ``item_id_list`` history plus the last ``item_id`` (UniSRec style);
- ``sequences``: P5 / S3Rec ``user item item ...`` lines;
- ``json``: LC-Rec / LETTER ``{"user": [item, ...]}``.

With timestamps, each user's items are sorted by time (stable, so ties keep file order); without,
file order is chronological order. A timestamp is a finite number (Unix time or any increasing
count): text, dates, NaN or infinity are refused, naming the file, line and field. CSV/TSV follow
RFC 4180 (a quoted field may hold the delimiter or a line break); a malformed quote is refused.
Files are UTF-8 (a leading byte-order mark is allowed). Ids are kept as strings.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

from .config import DataConfig
from .errors import H2RecError

FORMATS = ("csv", "tsv", "jsonl", "inter", "sequences", "json")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".inter": "inter", ".txt": "sequences", ".json": "json"}


def detect_format(path: Path, fmt: str = "auto") -> str:
    """The layout of an interaction file (semid.items.detect_format names item files: other layouts)."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise H2RecError(f"unknown interaction format {fmt!r}; choose one of {list(FORMATS)} or 'auto'")
        return fmt
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    raise H2RecError(f"{path}: cannot tell the layout from the suffix {path.suffix!r}; "
                     f"pass format= one of {list(FORMATS)}")


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
    """Gathers (user, item, time) rows, then orders each user's items."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[float, int, str]]] = {}
        self.count = 0

    def add(self, user: str, item: str, time: float = 0.0) -> None:
        self.rows.setdefault(user, []).append((time, self.count, item))
        self.count += 1

    def sequences(self, path: Path) -> dict[str, list[str]]:
        if not self.count:
            raise H2RecError(f"{path}: no interactions found (empty file?)")
        return {u: [item for _, _, item in sorted(rows)] for u, rows in self.rows.items()}


def _read_rows(path: Path, rows: Iterator[tuple[int, dict]], cfg: DataConfig,
               fields: list[str]) -> dict[str, list[str]]:
    for name in (cfg.user_field, cfg.item_field):
        if name not in fields:
            raise H2RecError(f"{path}: no field {name!r}; the file has {fields}. Set user_field/item_field.")
    has_time = cfg.time_field in fields
    out = _Collector()
    for line, row in rows:
        user = _id(row.get(cfg.user_field), path, line, cfg.user_field)
        item = _id(row.get(cfg.item_field), path, line, cfg.item_field)
        time = _time(row.get(cfg.time_field), path, line, cfg.time_field) if has_time else 0.0
        out.add(user, item, time)
    return out.sequences(path)


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


def _read_delimited(path: Path, cfg: DataConfig, delimiter: str) -> dict[str, list[str]]:
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


def _read_jsonl(path: Path, cfg: DataConfig) -> dict[str, list[str]]:
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


def _read_atomic(path: Path, cfg: DataConfig) -> dict[str, list[str]]:
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
    return out.sequences(path)


def _read_sequences(path: Path) -> dict[str, list[str]]:
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
    return out.sequences(path)


def _read_json(path: Path) -> dict[str, list[str]]:
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
    return out.sequences(path)


def read_interactions(cfg: DataConfig) -> dict[str, list[str]]:
    """``{user: [item, ...]}`` oldest first, from ``cfg.interactions`` in ``cfg.format``."""
    path = Path(cfg.interactions)
    if not path.is_file():
        raise H2RecError(f"{path}: interaction file not found")
    fmt = detect_format(path, cfg.format)
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, cfg, "," if fmt == "csv" else "\t")
    if fmt == "jsonl":
        return _read_jsonl(path, cfg)
    if fmt == "inter":
        return _read_atomic(path, cfg)
    if fmt == "sequences":
        return _read_sequences(path)
    return _read_json(path)
