"""The columnar ingest (pyarrow readers, CSR tables, vectorised sort, k-core and split) against the
line-by-line algorithm it replaced, kept here as the reference: on a generated log with ties in time,
repeated items and padded ids, every layout gives the split and index maps the old code gave."""

from __future__ import annotations

import csv
import io
import json
import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from h2rec import csv_scan, readers
from h2rec.config import DataConfig
from h2rec.data import build_dataset, head_items, popularity_groups

# ---------------------------------------------------------------------------------------------
# the reference: h2rec's readers and split before the columnar ingest (dicts and lists)


def reference_sequences(rows: list[tuple[str, str, float]]) -> dict[str, list[str]]:
    """Each user's items sorted by (time, file order), users in order of first appearance."""
    grouped: dict[str, list[tuple[float, int, str]]] = {}
    for count, (user, item, time) in enumerate(rows):
        grouped.setdefault(user.strip(), []).append((time, count, item.strip()))
    return {user: [item for _, _, item in sorted(entries)] for user, entries in grouped.items()}


def reference_k_core(sequences: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    while True:
        counts: dict[str, int] = {}
        for items in sequences.values():
            for item in items:
                counts[item] = counts.get(item, 0) + 1
        kept = {}
        for user, items in sequences.items():
            items = [i for i in items if counts[i] >= k]
            if len(items) >= k:
                kept[user] = items
        if kept == sequences:
            return kept
        sequences = kept


def reference_split(raw: dict[str, list[str]], item_ids: list[str], head_share: float = 0.2) -> dict:
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    user_ids = list(raw)
    sequences = [np.array([index[i] for i in raw[u]], dtype=np.int64) for u in user_ids]
    train, users, valid_h, valid_t, test_h, test_t = [], [], [], [], [], []
    for u, seq in enumerate(sequences):
        if len(seq) >= 3:
            train.append(seq[:-2])
            users.append(u)
            valid_h.append(seq[:-2])
            valid_t.append(seq[-2])
            test_h.append(seq[:-1])
            test_t.append(seq[-1])
        else:
            train.append(seq)
    popularity = np.bincount(np.concatenate(train), minlength=len(item_ids) + 1)
    popularity[0] = 0
    return {"user_ids": user_ids, "item_ids": list(item_ids), "sequences": [s.tolist() for s in sequences],
            "train": [s.tolist() for s in train], "valid_users": users,
            "valid_histories": [h.tolist() for h in valid_h], "valid_targets": [int(t) for t in valid_t],
            "test_histories": [h.tolist() for h in test_h], "test_targets": [int(t) for t in test_t],
            "popularity": popularity.tolist(), "head": head_items(popularity, head_share).tolist(),
            "groups": popularity_groups(popularity, None)[0].tolist()}


def view(ds) -> dict:
    """The same fields of a Dataset, as lists."""
    return {"user_ids": ds.user_ids, "item_ids": ds.item_ids, "sequences": [s.tolist() for s in ds.sequences],
            "train": [s.tolist() for s in ds.train], "valid_users": ds.valid.users.tolist(),
            "valid_histories": [h.tolist() for h in ds.valid.histories], "valid_targets": ds.valid.targets.tolist(),
            "test_histories": [h.tolist() for h in ds.test.histories], "test_targets": ds.test.targets.tolist(),
            "popularity": ds.popularity.tolist(), "head": ds.head.tolist(), "groups": ds.groups.tolist()}


# ---------------------------------------------------------------------------------------------
# a generated log in every row layout


def generated_rows(seed: int = 7, n: int = 900) -> tuple[list[tuple[str, str, float]], list[str]]:
    """Rows (user, item, time) in file order: 60 users, 40 items with Zipf-like popularity, times from
    a range of 25 values (many ties, also within a user), items repeated, some ids padded with
    spaces (the readers strip them), ids like "007" (must stay text)."""
    rng = random.Random(seed)
    items = [f"{i:03d}" for i in range(40)]
    weights = [1 / (rank + 1) for rank in range(40)]
    rows = []
    for _ in range(n):
        user = f"u{rng.randrange(60)}"
        item = rng.choices(items, weights)[0]
        if rng.random() < 0.05:
            user = f" {user}"
        if rng.random() < 0.05:
            item = f"{item} "
        rows.append((user, item, float(rng.randrange(25))))
    catalogue = items + ["unused"]
    rng.shuffle(catalogue)
    return rows, catalogue


def write(rows, fmt: str, folder):
    path = folder / f"log.{fmt}"
    if fmt in ("csv", "tsv"):
        delimiter = "," if fmt == "csv" else "\t"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
            writer.writerow(["timestamp", "user_id", "item_id"])  # columns in another order than asked for
            writer.writerows((f"{t:g}", u, i) for u, i, t in rows)
    elif fmt == "inter":
        path.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                        + "".join(f"{u}\t{i}\t{t:g}\n" for u, i, t in rows), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"user_id": u, "item_id": i, "timestamp": t}) + "\n" for u, i, t in rows))
    else:
        columns = list(zip(*rows))
        pq.write_table(pa.table({"user_id": columns[0], "item_id": columns[1], "timestamp": columns[2]}), path)
    return path


FORMATS = ["csv", "tsv", "inter", "jsonl", "parquet"]


@pytest.mark.parametrize("k", [0, 3])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_layout_gives_the_old_split_and_index_maps(tmp_path, fmt, k):
    rows, catalogue = generated_rows()
    path = write(rows, fmt, tmp_path)
    raw = reference_sequences(rows)
    expected = reference_split(reference_k_core(raw, k) if k else raw, catalogue)
    for cache in (False, True, True):  # the file, then the cache written, then the cache read
        ds = build_dataset(DataConfig(interactions=str(path), k_core=k, cache=cache), catalogue)
        assert view(ds) == expected, (fmt, cache)
        assert ds.stats["users_in_file"] == len(raw)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "inter"])
def test_the_line_readers_and_pyarrow_agree(tmp_path, fmt, monkeypatch):
    """The line readers are what pyarrow falls back on: both must read the same table."""
    rows, catalogue = generated_rows(seed=11)
    path = write(rows, fmt, tmp_path)
    fast = build_dataset(DataConfig(interactions=str(path), cache=False), catalogue)
    monkeypatch.setattr(readers, "_read_columnar", lambda *args: None)
    slow = build_dataset(DataConfig(interactions=str(path), cache=False), catalogue)
    assert view(fast) == view(slow)


def test_ties_keep_file_order_and_times_decide_otherwise(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\nu2,c,5\nu1,b,3\nu1,a,3\nu1,z,1\nu2,c,5\nu1,b,3\n")
    expected = {"u2": ["c", "c"], "u1": ["z", "b", "a", "b"]}
    assert readers.read_interactions(DataConfig(interactions=str(path))) == expected


def python_strict(text: str) -> bool:
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), strict=True):
            pass
        return True
    except csv.Error:
        return False


@pytest.mark.parametrize("block", [1, 3, 1 << 20])
def test_the_quote_check_is_pythons_strict_mode(monkeypatch, block):
    """csv_scan's vectorised quote state machine refuses exactly what Python's strict csv reader
    refuses (a small block size makes states carry across blocks)."""
    monkeypatch.setattr(csv_scan, "BLOCK", block)
    rng = random.Random(block)
    alphabet = ['"', '"', ",", "a", "\n", "\r", " "]
    checked = 0
    for _ in range(4000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        if '"' not in text:
            continue
        data = np.frombuffer(text.encode(), dtype=np.uint8)
        assert csv_scan._strict(data, ord(","), False) == python_strict(text), repr(text)
        checked += 1
    assert checked > 2000


@pytest.mark.parametrize("content", [
    'user_id,item_id\nu1,"a,b"\nu1,"say ""hi"""\nu2,"multi\nline"\n',  # valid quoting: read by pyarrow
    'user_id,item_id\nu1, b \n\nu1,c\r\nu2,b\n',  # padded ids, a blank line, CRLF
    '\ufeffuser_id,item_id\nu1,007\nu1,7\n',  # a byte-order mark; "007" and "7" are two items
])
def test_valid_quirks_read_as_the_line_readers_read_them(tmp_path, content, monkeypatch):
    path = tmp_path / "log.csv"
    path.write_text(content, encoding="utf-8", newline="")
    cfg = DataConfig(interactions=str(path))
    fast = readers.read_interactions(cfg)
    monkeypatch.setattr(readers, "_read_columnar", lambda *args: None)
    assert fast == readers.read_interactions(cfg)


def test_parquet_accepts_integer_ids_dictionaries_and_timestamps(tmp_path):
    path = tmp_path / "log.parquet"
    times = pa.array([3_000, 1_000, 2_000], pa.timestamp("ms"))
    pq.write_table(pa.table({"user_id": pa.array(["u1", "u1", "u2"]).dictionary_encode(),
                             "item_id": pa.array([7, 8, 7], pa.int64()), "timestamp": times}), path)
    assert readers.read_interactions(DataConfig(interactions=str(path))) == {"u1": ["8", "7"], "u2": ["7"]}


@pytest.mark.parametrize("columns, message", [
    ({"user": ["u1"], "item_id": ["a"]}, "log.parquet: no field 'user_id'; the file has ['user', 'item_id']"),
    ({"user_id": ["u1", None], "item_id": ["a", "b"]}, "log.parquet: row 2: field 'user_id' is missing (null)"),
    ({"user_id": ["u1", "u1"], "item_id": ["a", "  "]}, "log.parquet: row 2: field 'item_id' is empty"),
    ({"user_id": [1.5], "item_id": ["a"]}, "field 'user_id' holds double values; an id must be a string or an integer"),
    ({"user_id": ["u1"], "item_id": ["a"], "timestamp": ["2021-03-04"]},
     "log.parquet: field 'timestamp' holds string values; a time must be a number"),
    ({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "timestamp": [1.0, None]},
     "log.parquet: row 2: field 'timestamp' is missing (null)"),
    ({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "timestamp": [1.0, float("inf")]},
     "log.parquet: row 2: field 'timestamp' is inf; a time must be a finite number"),
    ({"user_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string())}, "no interactions found"),
])
def test_bad_parquet_names_file_row_and_field(tmp_path, columns, message):
    from h2rec.errors import H2RecError

    path = tmp_path / "log.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(H2RecError, match=re.escape(message)):
        readers.read_interactions(DataConfig(interactions=str(path)))
