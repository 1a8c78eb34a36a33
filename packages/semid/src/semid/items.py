"""Read an item catalogue (JSONL, CSV, TSV or RecBole atomic `.item`) into ids and texts.

Every record becomes one text: by default all non-id fields as `key: value` lines, or the chosen
`text_fields`, or a `template`. Values are HTML-unescaped and whitespace-normalised; lists are
joined with ", ". Every user mistake raises a SemidError naming file, line and field.
"""

from __future__ import annotations

import csv
import html
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from semid.config import ReadConfig
from semid.errors import SemidError, fail
from semid.io import jsonl_bytes

# Extension -> format; `ReadConfig.format` overrides.
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".item": "atomic",
}
# RecBole atomic-file column types (recbole/utils/enum_type.py FeatureType).
_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
# Reading with surrogateescape keeps undecodable bytes as lone surrogates, so a bad byte can be
# traced to the line and field it sits in instead of failing the whole read.
_SURROGATES = range(0xDC80, 0xDD00)


@dataclass(frozen=True)
class ItemSet:
    """Items in file order: row i is (ids[i], texts[i]) from line lines[i] of `path`."""

    path: Path | None
    ids: list[str]
    texts: list[str]
    lines: list[int]
    id_field: str = "id"
    empty_text_lines: list[int] = field(default_factory=list)  # warning, not error: such items still get codes

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def warnings(self) -> list[str]:
        """Human-readable warnings (empty texts), for the CLI and stats.json."""
        if not self.empty_text_lines:
            return []
        shown = ", ".join(str(line) for line in self.empty_text_lines[:5])
        more = ", ..." if len(self.empty_text_lines) > 5 else ""
        return [f"{self.path}: {len(self.empty_text_lines)} item(s) have empty text (lines {shown}{more})"]


def detect_format(path: str | PathLike) -> str:
    """Format name from the file extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        known = ", ".join(sorted(_EXTENSIONS))
        raise fail(path, None, "format", f"cannot be told from the extension {suffix or '(none)'} (known: {known}); "
                   "pass --format jsonl|csv|tsv|atomic")
    return _EXTENSIONS[suffix]


def read_items(path: str | PathLike, config: ReadConfig | None = None) -> ItemSet:
    """Read `path` into an ItemSet, following `config` (format, id field, text fields or template)."""
    config = config or ReadConfig()
    path = Path(path)
    if not path.is_file():
        raise fail(path, None, None, "no such file")
    fmt = config.format or detect_format(path)
    id_field = config.id_field or ("item_id" if fmt == "atomic" else "id")
    template_fields = _template_fields(config.template) if config.template is not None else None

    ids: list[str] = []
    texts: list[str] = []
    lines: list[int] = []
    empty: list[int] = []
    first_seen: dict[str, int] = {}
    for line, record in _records(path, fmt):
        _check_utf8(path, line, record)
        item_id = _item_id(path, line, record, id_field)
        if item_id in first_seen:
            raise fail(path, line, id_field, f"repeats id {item_id!r} (first on line {first_seen[item_id]})")
        first_seen[item_id] = line
        if template_fields is not None:
            text = _text_from_template(path, line, record, config.template, template_fields)
        else:
            text = _text_from_fields(path, line, record, id_field, config.text_fields)
        if not text:
            empty.append(line)
        ids.append(item_id)
        texts.append(text)
        lines.append(line)
    if not ids:
        raise fail(path, None, None, "holds no items")
    return ItemSet(path=path, ids=ids, texts=texts, lines=lines, id_field=id_field, empty_text_lines=empty)


# ---------------------------------------------------------------------------------------------
# records: (line, {field: value}) per format


def _records(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # utf-8-sig drops a byte-order mark (spreadsheet exports); see _SURROGATES for surrogateescape.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        if fmt == "jsonl":
            yield from _jsonl_records(path, handle)
        else:
            yield from _table_records(path, handle, fmt)


def _jsonl_records(path: Path, handle) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            if _has_surrogate(raw):
                raise fail(path, line_no, None, f"invalid UTF-8 at column {_surrogate_column(raw)}") from None
            raise fail(path, line_no, None, f"malformed JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict):
            raise fail(path, line_no, None, f"expected a JSON object, got {type(record).__name__} "
                       "(one object per line; a JSON array file is not supported)")
        yield line_no, record


def _table_records(path: Path, handle, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # strict: a quote never closed is an error, not a cell that silently swallows the rest of the
    # file (which once surfaced only as "codebook larger than the catalogue").
    if fmt == "csv":
        reader = csv.reader(handle, strict=True)
    else:  # tsv and RecBole atomic files are tab separated; RecBole does no quoting
        quoting = csv.QUOTE_NONE if fmt == "atomic" else csv.QUOTE_MINIMAL
        reader = csv.reader(handle, delimiter="\t", quoting=quoting, strict=True)
    rows = _csv_rows(path, reader)
    try:
        header = next(rows)
    except StopIteration:
        raise fail(path, 1, None, "empty file: no header line") from None
    names = _header_names(path, header, fmt)
    last_line = reader.line_num
    for row in rows:
        line_no = last_line + 1  # first physical line of this record (a quoted CSV cell may span lines)
        last_line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(names):
            raise fail(path, line_no, None, f"has {len(row)} values but the header has {len(names)} fields")
        yield line_no, {name: value for name, value in zip(names, row) if name is not None}


def _csv_rows(path: Path, reader) -> Iterator[list[str]]:
    """The reader's rows; its csv.Error becomes a SemidError naming the line the bad record starts on."""
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            hint = "; a quote opened here is never closed" if "end of data" in str(error) else ""
            raise fail(path, start, None, f"malformed {'CSV' if reader.dialect.delimiter == ',' else 'TSV'} "
                       f"({error}{hint})") from None
        start = reader.line_num + 1
        yield row


def _header_names(path: Path, header: list[str], fmt: str) -> list[str | None]:
    """Field names; None for an unnamed first column (a pandas export's row index), which is skipped."""
    names: list[str | None] = []
    for column, cell in enumerate(header, start=1):
        name = cell.strip()
        if fmt == "atomic":
            # RecBole header cells are `name:type`, e.g. `item_id:token`, `categories:token_seq`.
            name, _, kind = name.rpartition(":")
            if not name or kind not in _ATOMIC_TYPES:
                raise fail(path, 1, cell, f"in header column {column} is not `name:type` with type in "
                           f"{', '.join(_ATOMIC_TYPES)} (RecBole atomic file)")
        if not name and column == 1 and fmt != "atomic" and len(header) > 1:
            names.append(None)  # `df.to_csv()` writes the index as an unnamed first column: not item data
            continue
        if not name:
            raise fail(path, 1, None, f"header column {column} has no name")
        if name in names:
            raise fail(path, 1, name, "appears twice in the header")
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# checks and text building


def _has_surrogate(text: str) -> bool:
    return any(ord(ch) in _SURROGATES for ch in text)


def _surrogate_column(text: str) -> int:
    return next(i for i, ch in enumerate(text, start=1) if ord(ch) in _SURROGATES)


def _check_utf8(path: Path, line: int, record: dict[str, Any]) -> None:
    for key, value in record.items():
        if _has_surrogate(key) or _has_surrogate(json.dumps(value, ensure_ascii=False)):
            name = key.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise fail(path, line, name, "holds invalid UTF-8")


def _item_id(path: Path, line: int, record: dict[str, Any], id_field: str) -> str:
    if id_field not in record:
        known = ", ".join(record) or "none"
        raise fail(path, line, id_field, f"is missing (fields here: {known}); choose one with --id-field")
    value = record[id_field]
    if isinstance(value, (dict, list)):
        raise fail(path, line, id_field, f"must be a string or number, got {type(value).__name__}")
    item_id = "" if value is None else str(value).strip()
    if not item_id:
        raise fail(path, line, id_field, "is empty")
    return item_id


def to_text(value: Any) -> str:
    """One field value as normalised text: HTML entities unescaped, whitespace collapsed, lists joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(part for part in (to_text(v) for v in value) if part)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {text}" for k, v in value.items() if (text := to_text(v)))
    return " ".join(html.unescape(str(value)).split())


def _text_from_fields(
    path: Path, line: int, record: dict[str, Any], id_field: str, text_fields: tuple[str, ...] | None
) -> str:
    if text_fields is None:
        names = [name for name in record if name != id_field]
    else:
        names = list(text_fields)
        for name in names:
            if name not in record:
                raise fail(path, line, name, "named in --text-fields is missing")
    parts = ((name, to_text(record[name])) for name in names)
    return "\n".join(f"{name}: {text}" for name, text in parts if text)


def _template_fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise fail(None, None, "template", f"is not a valid format string ({error})") from None
    names = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name or name.isdigit():
            raise fail(None, None, "template", f"needs named fields like {{title}}, got {{{name}}}")
        names.append(name.split(".")[0].split("[")[0])
    return names


def _text_from_template(
    path: Path, line: int, record: dict[str, Any], template: str, names: list[str]
) -> str:
    for name in names:
        if name not in record:
            raise fail(path, line, name, "named in --template is missing")
    values = {name: to_text(record[name]) for name in names}
    try:
        text = template.format_map(values)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as error:
        raise SemidError(f"{path}:{line}: --template cannot be filled ({error})") from None
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# texts.jsonl in an OUT_DIR: the texts that were embedded, so a run can be inspected and repeated


def texts_jsonl(ids: list[str], texts: list[str]) -> bytes:
    """texts.jsonl: one {"id": ..., "text": ...} per item, in row order."""
    return jsonl_bytes({"id": item_id, "text": text} for item_id, text in zip(ids, texts))


def read_texts(path: str | PathLike) -> tuple[list[str], list[str]]:
    """(ids, texts) from a texts.jsonl written by semid."""
    ids, texts = [], []
    for line, record in _records(Path(path), "jsonl"):
        if not isinstance(record.get("id"), str) or not isinstance(record.get("text"), str):
            raise fail(path, line, "text", "and field 'id' must both be strings")
        ids.append(record["id"])
        texts.append(record["text"])
    return ids, texts
