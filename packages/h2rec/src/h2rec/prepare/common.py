"""What every layout shares: options, the input files, reading (gzipped) text files line by line
with ``file:line`` errors, a compact interaction log, and the filters that decide what is kept.

A layout module reads its files into a :class:`Source` (every interaction, plus the text fields of
the items that occur in them); :func:`build` applies the filters in a fixed order and counts what
each one drops; ``writer.py`` writes the result.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import logging
import math
import re
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from semid.items import to_text

from ..errors import H2RecError

log = logging.getLogger("h2rec.prepare")
PROGRESS_EVERY = 1_000_000  # lines between progress messages on big files


@dataclass(frozen=True)
class PrepareOptions:
    k_core: int = 0  # 0 = off; k = drop users and items with fewer than k interactions, repeatedly (Amazon papers: 5)
    min_rating: float | None = None  # keep interactions rated at least this (layouts with ratings only)
    # items without text (no metadata record, or every text field empty): None = the layout's default,
    # drop for raw dumps (semid needs text), keep for published benchmark splits (p5, recbole)
    keep_textless: bool | None = None
    repeats: Literal["keep", "first"] = "keep"  # a user's later interaction with the same item: kept, or dropped
    ids: Literal["original", "sequence"] = "original"  # p5: datamaps' ASIN / user ids, or the sequence integers
    item_key_offset: int | None = None  # p5 {key: {...}} items JSON: sequence id = key + offset (None: 1 / LC-Rec 0)

    def __post_init__(self) -> None:
        if self.k_core < 0:
            raise H2RecError(f"--k-core must be 0 (off) or more, got {self.k_core}")
        if self.min_rating is not None and not math.isfinite(self.min_rating):
            raise H2RecError(f"--min-rating must be a finite number, got {self.min_rating}")
        if self.repeats not in ("keep", "first"):
            raise H2RecError(f"--repeats must be 'keep' or 'first', got {self.repeats!r}")
        if self.ids not in ("original", "sequence"):
            raise H2RecError(f"--ids must be 'original' or 'sequence', got {self.ids!r}")


# ---------------------------------------------------------------------------------------------
# input files: folders are expanded, each file gets the one role its name fits


@dataclass(frozen=True)
class Role:
    name: str  # key in the resolved mapping, e.g. "reviews"
    matches: Callable[[str], bool]  # on the lower-cased file name
    expected: str  # for messages: "reviews_<Category>_5.json.gz"
    required: bool = True


def resolve_inputs(layout: str, inputs: Sequence[str | Path], roles: Sequence[Role]) -> dict[str, Path]:
    """``{role: file}``. A folder contributes the files whose names fit a role (others are ignored);
    a file named on the command line must fit one. A role filled twice, or a required role not
    filled, is an error listing what was expected."""
    found: dict[str, list[Path]] = {role.name: [] for role in roles}
    if not inputs:
        raise H2RecError(f"{layout}: no input files given")
    for given in map(Path, inputs):
        if given.is_dir():
            candidates, explicit = sorted(p for p in given.iterdir() if p.is_file()), False
        elif given.is_file():
            candidates, explicit = [given], True
        else:
            raise H2RecError(f"{given}: no such file or folder")
        for path in candidates:
            role = next((r for r in roles if r.matches(path.name.lower())), None)
            if role is not None:
                if path not in found[role.name]:
                    found[role.name].append(path)
            elif explicit:
                wanted = "; ".join(f"{r.name}: {r.expected}" for r in roles)
                raise H2RecError(f"{path}: not a file of the {layout} layout (expected {wanted})")
    resolved = {}
    for role in roles:
        paths = found[role.name]
        if len(paths) > 1:
            names = ", ".join(str(p) for p in paths)
            raise H2RecError(f"{layout}: several {role.name} files ({names}); name the one to use")
        if paths:
            resolved[role.name] = paths[0]
        elif role.required:
            where = ", ".join(str(p) for p in map(Path, inputs))
            raise H2RecError(f"{layout}: no {role.name} file ({role.expected}) in {where}")
    return resolved


# ---------------------------------------------------------------------------------------------
# reading: line by line, gzip by suffix, errors naming file and line


def read_lines(path: Path, fallback_encoding: str | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line, decoded as UTF-8 (or ``fallback_encoding`` for a line
    that is not: MovieLens 1M is Latin-1). ``.gz`` files are decompressed as they are read."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    log.info("reading %s", path)
    number = 0
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    if fallback_encoding is None:
                        raise H2RecError(f"{path}:{number}: not valid UTF-8 "
                                         f"at byte {err.start + 1} of the line") from None
                    text = raw.decode(fallback_encoding)
                if number == 1:
                    text = text.lstrip("\ufeff")
                if number % PROGRESS_EVERY == 0:
                    log.info("%s: %s lines read", path.name, f"{number:,}")
                yield number, text
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise H2RecError(f"{path}:{number + 1}: the compressed file ends early or is damaged ({err}); "
                         "download it again") from None
    except OSError as err:
        raise H2RecError(f"{path}: cannot be read ({err.strerror or err})") from None


def parse_record(path: Path, line: int, text: str, python_literals: bool = False) -> dict[str, Any]:
    """One JSON object per line. With ``python_literals`` (Amazon 2014 metadata), a line that is not
    JSON is read as a Python dict literal by ``ast.literal_eval``, which evaluates no code."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        if not python_literals:
            raise H2RecError(f"{path}:{line}: malformed JSON ({err.msg} at column {err.colno})") from None
        try:
            record = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise H2RecError(f"{path}:{line}: malformed JSON ({err.msg} at column {err.colno}) "
                             "and not a Python dict literal either") from None
    if not isinstance(record, dict):
        raise H2RecError(f"{path}:{line}: expected one object per line, got {type(record).__name__}")
    return record


def read_csv(path: Path, fallback_encoding: str | None = None
             ) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """``(header, rows)`` of a CSV file (RFC 4180: a quoted cell may hold commas or line breaks);
    each row is ``(its first line, values)`` and has as many values as the header."""
    lines = read_lines(path, fallback_encoding)
    last = {"line": 0}

    def texts():
        for line, text in lines:
            last["line"] = line
            yield text

    reader = csv.reader(texts(), strict=True)

    def next_record() -> tuple[int, list[str]] | None:
        while True:
            start = last["line"] + 1
            try:
                values = next(reader)
            except StopIteration:
                return None
            except csv.Error as err:
                raise H2RecError(f"{path}:{start}: malformed CSV ({err})") from None
            if values and values != [""]:
                return start, values

    first = next_record()
    if first is None:
        raise H2RecError(f"{path}: empty file")
    header = [name.strip() for name in first[1]]

    def rows():
        while (record := next_record()) is not None:
            if len(record[1]) != len(header):
                raise H2RecError(f"{path}:{record[0]}: {len(record[1])} values where the header has {len(header)}")
            yield record

    return header, rows()


def key_pattern(key: str) -> re.Pattern:
    """Finds ``"key": "value"`` (or single quotes) in a raw line, to skip unneeded metadata lines unparsed."""
    return re.compile(r"""['"]""" + re.escape(key) + r"""['"]\s*:\s*['"]([^'"\\]+)['"]""")


def required(record: dict[str, Any], name: str, path: Path, line: int) -> Any:
    value = record.get(name)
    if value is None:
        raise H2RecError(f"{path}:{line}: field {name!r} is missing")
    return value


def as_id(value: Any, path: Path, line: int, name: str) -> str:
    if value is None:
        raise H2RecError(f"{path}:{line}: field {name!r} is missing")
    if isinstance(value, (dict, list, tuple, bool, float)):
        raise H2RecError(f"{path}:{line}: field {name!r} must be a string or integer id, got {value!r}")
    text = str(value).strip()
    if not text:
        raise H2RecError(f"{path}:{line}: field {name!r} is empty")
    return text


def as_number(value: Any, path: Path, line: int, name: str) -> float:
    if value is None:
        raise H2RecError(f"{path}:{line}: field {name!r} is missing")
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise H2RecError(f"{path}:{line}: field {name!r} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise H2RecError(f"{path}:{line}: field {name!r} is {value!r}; expected a finite number")
    return number


def clean(value: Any) -> Any:
    """A metadata value for items.jsonl: strings as they are (semid normalises whitespace and HTML
    entities when it reads them), nested lists flattened to unique non-empty strings (Amazon 2014
    categories are lists of category paths), numbers kept, None -> ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else ""
    if isinstance(value, (list, tuple, set)):
        flat: list[str] = []

        def walk(v):
            if isinstance(v, (list, tuple, set)):
                for part in v:
                    walk(part)
            elif (text := to_text(v)) and text not in flat:
                flat.append(text)

        walk(value)
        return flat
    return to_text(value)


def has_text(record: dict[str, Any]) -> bool:
    return any(to_text(v) for v in record.values())


# ---------------------------------------------------------------------------------------------
# the interaction log: 24 bytes a row, ids interned, so 10^7 rows fit in a few hundred MB


class Interactions:
    """Every (user, item, time) row read, in file order. Users and items are interned as integers;
    rows that a reading-time filter (rating) refuses still count their user and item as read."""

    def __init__(self) -> None:
        self.user_codes: dict[str, int] = {}
        self.item_codes: dict[str, int] = {}
        self._users, self._items, self._times = array("q"), array("q"), array("d")
        self.read = 0  # rows read, kept or not

    def add(self, user: str, item: str, time: float, keep: bool = True) -> None:
        u = self.user_codes.setdefault(user, len(self.user_codes))
        i = self.item_codes.setdefault(item, len(self.item_codes))
        self.read += 1
        if keep:
            self._users.append(u)
            self._items.append(i)
            self._times.append(time)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.frombuffer(self._users, dtype=np.int64), np.frombuffer(self._items, dtype=np.int64),
                np.frombuffer(self._times, dtype=np.float64))


@dataclass
class Source:
    """What a layout module read."""

    layout: str
    files: dict[str, Path]
    interactions: Interactions
    items: dict[str, dict[str, Any]]  # item id -> text fields, for items that occur in the interactions
    fields: tuple[str, ...]  # the text fields every item gets in items.jsonl, "title" first
    timed: bool  # False: the source has order only; times are positions in each user's sequence
    keep_textless_default: bool  # False for raw dumps, True for published benchmark splits
    counts: dict[str, int] = field(default_factory=dict)  # read-time counts: metadata_records, below_min_rating, ...
    notes: list[str] = field(default_factory=list)  # for the report: how ids or fields were chosen


@dataclass
class Prepared:
    items: list[dict[str, Any]]  # items.jsonl rows, sorted by id
    user_names: list[str]  # code -> id
    item_names: list[str]
    users: np.ndarray  # interactions.csv rows, as codes: (n,) each
    item_codes: np.ndarray
    times: np.ndarray
    report: dict[str, Any]


def natural_order(names: Sequence[str]) -> list[int]:
    """Indices that sort ``names`` numerically when all are integers ("2" before "10"), else as text."""
    if all(name.isdigit() for name in names):
        return sorted(range(len(names)), key=lambda k: (int(names[k]), names[k]))
    return sorted(range(len(names)), key=names.__getitem__)


def build(source: Source, options: PrepareOptions) -> Prepared:
    """Applies the filters in order (duplicates, repeats, items without text, k-core), counting
    what each drops, and lays out the kept rows: users in id order, each user's items oldest first."""
    if not source.interactions.read:
        raise H2RecError(f"{source.layout}: no interactions in {', '.join(str(p) for p in source.files.values())}")
    users, items, times = source.interactions.arrays()
    user_names = list(source.interactions.user_codes)
    item_names = list(source.interactions.item_codes)
    n = len(users)
    position = np.arange(n)
    keep = np.ones(n, dtype=bool)
    keep_textless = source.keep_textless_default if options.keep_textless is None else options.keep_textless
    dropped: dict[str, Any] = {"below_min_rating": source.counts.get("below_min_rating", 0)}

    # duplicates: the same user, item and time again (a row logged twice); repeats: the same user and
    # item at a later time. Sorted by (user, item, time, file order), both sit right after their first.
    order = np.lexsort((position, times, items, users))
    same_pair = (users[order][1:] == users[order][:-1]) & (items[order][1:] == items[order][:-1])
    same_time = same_pair & (times[order][1:] == times[order][:-1])
    keep[order[1:][same_time]] = False
    dropped["duplicates"] = int(same_time.sum())
    if options.repeats == "first":
        later = order[1:][same_pair & ~same_time]
        dropped["repeats"] = int(keep[later].sum())
        keep[later] = False
    else:
        dropped["repeats"] = 0

    # items without text: no metadata record at all ("unknown"), or a record whose fields are all empty
    known = np.array([name in source.items for name in item_names], dtype=bool)
    texted = np.array([name in source.items and has_text(source.items[name]) for name in item_names], dtype=bool)
    present = np.zeros(len(item_names), dtype=bool)
    present[items[keep]] = True
    textless = {
        "unknown_items": int((present & ~known).sum()),
        "unknown_item_interactions": int((keep & ~known[items]).sum()),
        "items_without_text": int((present & known & ~texted).sum()),
        "items_without_text_interactions": int((keep & known[items] & ~texted[items]).sum()),
    }
    if keep_textless:
        dropped.update(dict.fromkeys(textless, 0))
    else:
        dropped.update(textless)
        keep &= texted[items]

    # k-core: users and items with fewer than k interactions go, until none is left
    if options.k_core:
        before_users, before_items, before = _distinct(users, keep), _distinct(items, keep), int(keep.sum())
        while True:
            user_count = np.bincount(users[keep], minlength=len(user_names))
            item_count = np.bincount(items[keep], minlength=len(item_names))
            thin = keep & ((user_count[users] < options.k_core) | (item_count[items] < options.k_core))
            if not thin.any():
                break
            keep &= ~thin
        dropped["k_core"] = {"users": before_users - _distinct(users, keep),
                             "items": before_items - _distinct(items, keep),
                             "interactions": before - int(keep.sum())}
    else:
        dropped["k_core"] = {"users": 0, "items": 0, "interactions": 0}

    if not keep.any():
        raise H2RecError(f"{source.layout}: no interaction is left after the filters "
                         f"({describe_drops(dropped)}); loosen --k-core / --min-rating or use --keep-textless")

    # layout: users in id order, each user's rows by time then file order
    user_rank = np.empty(len(user_names), dtype=np.int64)
    user_rank[natural_order(user_names)] = np.arange(len(user_names))
    rows = np.flatnonzero(keep)
    rows = rows[np.lexsort((rows, times[rows], user_rank[users[rows]]))]
    kept_items = np.unique(items[rows])
    kept_names = [item_names[k] for k in kept_items]
    catalogue = []
    for k in natural_order(kept_names):
        record = source.items.get(kept_names[k], {})
        catalogue.append({"id": kept_names[k], **{name: record.get(name, "") for name in source.fields}})

    read = {"users": len(user_names), "items": len(item_names), "interactions": source.interactions.read}
    read.update({k: v for k, v in source.counts.items() if k != "below_min_rating"})
    kept = {"users": _distinct(users, keep), "items": len(kept_items), "interactions": len(rows)}
    if keep_textless:
        kept["items_without_text"] = textless["unknown_items"] + textless["items_without_text"]
    options_used = {**asdict(options), "keep_textless": keep_textless}
    report = {
        "layout": source.layout,
        "inputs": {role: str(path) for role, path in source.files.items()},
        "options": options_used,
        "timestamps": "Unix seconds" if source.timed else "position in the user's sequence (the source has no times)",
        "read": read,
        "dropped": dropped,
        "kept": kept,
        "notes": source.notes,
    }
    return Prepared(items=catalogue, user_names=user_names, item_names=item_names, users=users[rows],
                    item_codes=items[rows], times=times[rows], report=report)


def _distinct(codes: np.ndarray, mask: np.ndarray) -> int:
    return int(len(np.unique(codes[mask])))


def describe_drops(dropped: dict[str, Any]) -> str:
    parts = [f"{k.replace('_', ' ')}: {v}" for k, v in dropped.items() if isinstance(v, int) and v]
    core = dropped.get("k_core", {})
    if core.get("interactions"):
        parts.append(f"k-core: {core['interactions']} interactions")
    return ", ".join(parts) or "nothing dropped"
