"""Interaction readers, the leave-one-out split, popularity groups and sampled candidates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from h2rec.config import DataConfig
from h2rec.data import build_dataset, k_core, pad_right, popularity_groups, sample_candidates, training_windows
from h2rec.errors import H2RecError
from h2rec.readers import read_interactions

SEQS = {"u1": ["a", "b", "c", "d"], "u2": ["b", "c", "e"], "u3": ["a", "e"]}
ITEMS = ["a", "b", "c", "d", "e", "f"]


def write_layouts(tmp_path):
    """The same three users in every layout the reader accepts."""
    rows = [(u, i, t) for u, items in SEQS.items() for t, i in enumerate(items)]
    rows_shuffled = rows[::-1]  # timestamps, not file order, must decide the order
    csv_path = tmp_path / "inter.csv"
    csv_path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows_shuffled))
    tsv_path = tmp_path / "inter.tsv"
    tsv_path.write_text("user_id\titem_id\n" + "".join(f"{u}\t{i}\n" for u, i, _ in rows))
    jsonl_path = tmp_path / "inter.jsonl"
    jsonl_path.write_text("".join(json.dumps({"user_id": u, "item_id": i, "timestamp": t}) + "\n"
                                  for u, i, t in rows_shuffled))
    atomic_path = tmp_path / "rows.inter"
    atomic_path.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                           + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows_shuffled))
    seq_atomic = tmp_path / "seq.inter"
    seq_atomic.write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n"
                          + "".join(f"{u}\t{' '.join(items[:-1])}\t{items[-1]}\n" for u, items in SEQS.items()))
    p5 = tmp_path / "sequential_data.txt"
    p5.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in SEQS.items()))
    lcrec = tmp_path / "inter.json"
    lcrec.write_text(json.dumps(SEQS))
    return [csv_path, tsv_path, jsonl_path, atomic_path, seq_atomic, p5, lcrec]


def test_every_layout_reads_the_same_sequences(tmp_path):
    for path in write_layouts(tmp_path):
        assert read_interactions(DataConfig(interactions=str(path))) == SEQS, path.name


@pytest.mark.parametrize("content, message", [
    ("", "empty file"),
    ("user_id,item_id\n", "no interactions"),
    ("user,item\nu1,a\n", "no field 'user_id'"),
    ("user_id,item_id\nu1,a\nu2,\n", "inter.csv:3: field 'item_id' is empty"),
    ("user_id,item_id,timestamp\nu1,a,yesterday\n", "inter.csv:2: field 'timestamp' is not a number"),
    ("user_id,item_id\nu1,a,extra\n", "inter.csv:2: 3 fields where the header has 2"),
    ("user_id,item_id,timestamp\nu1,a,1\nu1,b,NaN\n", "inter.csv:3: field 'timestamp' is 'NaN'; a time must"),
    ('user_id,item_id\nu1,"a\n', "inter.csv:2: a quoted field opened on this line is never closed"),
])
def test_bad_csv_names_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "inter.csv"
    path.write_text(content)
    with pytest.raises(H2RecError, match=message):
        read_interactions(DataConfig(interactions=str(path)))


def test_bad_jsonl_and_sequences(tmp_path):
    bad = tmp_path / "inter.jsonl"
    bad.write_text('{"user_id": "u1", "item_id": "a"}\n{"user_id": "u1", "item_id": \n')
    with pytest.raises(H2RecError, match="inter.jsonl:2: malformed JSON"):
        read_interactions(DataConfig(interactions=str(bad)))
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"user_id": "u1", "item_id": "a"}\n{"user_id": "u2"}\n')
    with pytest.raises(H2RecError, match="missing.jsonl:2: field 'item_id' is missing"):
        read_interactions(DataConfig(interactions=str(missing)))
    seq = tmp_path / "seq.txt"
    seq.write_text("u1 a b\nu2\n")
    with pytest.raises(H2RecError, match="seq.txt:2: user 'u2' has no items"):
        read_interactions(DataConfig(interactions=str(seq)))
    binary = tmp_path / "latin1.csv"
    binary.write_bytes("user_id,item_id\nu1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(H2RecError, match="latin1.csv:2: not valid UTF-8 at byte 7 of the line"):
        read_interactions(DataConfig(interactions=str(binary)))
    unknown = tmp_path / "x.parquet"
    unknown.write_text("")
    with pytest.raises(H2RecError, match="cannot tell the layout"):
        read_interactions(DataConfig(interactions=str(unknown)))


def dataset(tmp_path, **kw):
    path = tmp_path / "inter.json"
    path.write_text(json.dumps(SEQS))
    return build_dataset(DataConfig(interactions=str(path), **kw), ITEMS)


def test_leave_one_out_split(tmp_path):
    ds = dataset(tmp_path)
    a, b, c, d, e = 1, 2, 3, 4, 5
    assert ds.valid.users.tolist() == [0, 1]  # u3 has 2 items: training only
    assert ds.stats["users_train_only"] == 1
    assert [h.tolist() for h in ds.valid.histories] == [[a, b], [b]]
    assert ds.valid.targets.tolist() == [c, c]
    assert [h.tolist() for h in ds.test.histories] == [[a, b, c], [b, c]]
    assert ds.test.targets.tolist() == [d, e]
    assert [t.tolist() for t in ds.train] == [[a, b], [b], [a, e]]


def test_popularity_counts_training_only(tmp_path):
    ds = dataset(tmp_path, head_share=0.3)
    # training: a x2, b x2, e x1; c and d appear only in validation/test
    assert ds.popularity.tolist() == [0, 2, 2, 0, 0, 1, 0]
    assert ds.head.tolist() == [False, True, True, False, False, False, False]  # ceil(0.3 * 6) = 2 items


def test_changing_a_test_item_does_not_move_popularity(tmp_path):
    ds = dataset(tmp_path)
    other = {**SEQS, "u1": ["a", "b", "c", "f"]}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    ds2 = build_dataset(DataConfig(interactions=str(path)), ITEMS)
    assert np.array_equal(ds.popularity, ds2.popularity)
    assert np.array_equal(ds.groups, ds2.groups) and np.array_equal(ds.head, ds2.head)


def test_popularity_groups():
    pop = np.array([0, 50, 1, 7, 0, 12, 3, 30, 2, 9, 4])  # 10 items
    groups, labels = popularity_groups(pop, None)
    assert len(labels) == 5
    assert groups[1] == 4 and groups[7] == 4  # the two most popular = top 20% = Head
    assert groups[4] == 0 and groups[2] == 0  # the two rarest
    bounded, _ = popularity_groups(pop, (2, 5, 10, 20))
    assert bounded[1:].tolist() == [4, 0, 2, 0, 3, 1, 4, 1, 2, 1]
    with pytest.raises(H2RecError, match="4 ascending"):
        popularity_groups(pop, (5, 2, 1, 0))


def test_unknown_items_are_reported(tmp_path):
    path = tmp_path / "inter.json"
    path.write_text(json.dumps({"u1": ["a", "zz", "b"]}))
    with pytest.raises(H2RecError, match="1 item id.* no semantic ID .*'zz'"):
        build_dataset(DataConfig(interactions=str(path), semid="sid_dir"), ITEMS)


def test_k_core():
    seqs = {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "c", "d"]}
    assert k_core(seqs, 2) == {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "c"]}
    assert k_core(seqs, 3) == {}


def test_padding_and_training_rows():
    padded = pad_right([np.array([1, 2, 3]), np.array([4])], 2)
    assert padded.tolist() == [[2, 3], [4, 0]]


def test_training_windows_skip_users_too_short(tmp_path):
    ds = dataset(tmp_path)
    causal = training_windows(ds.train, max_len=3, causal=True, scheme="sliding", stride=None).rows
    assert causal.tolist() == [[1, 2, 0, 0], [1, 5, 0, 0]]  # u2's single training item gives no pair
    cloze = training_windows(ds.train, max_len=3, causal=False, scheme="sliding", stride=None).rows
    assert cloze.shape == (3, 3)


def test_sampled_candidates_avoid_the_users_items_and_repeat_exactly(tmp_path):
    rng = np.random.default_rng(0)
    items = [str(i) for i in range(300)]
    seqs = {f"u{u}": [str(i) for i in rng.choice(300, size=20, replace=False)] for u in range(40)}
    (tmp_path / "inter.json").write_text(json.dumps(seqs))
    ds = build_dataset(DataConfig(interactions=str(tmp_path / "inter.json")), items)
    a = sample_candidates(ds, ds.test, 100, seed=7)
    b = sample_candidates(ds, ds.test, 100, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sample_candidates(ds, ds.test, 100, seed=8))
    for row, u in enumerate(ds.test.users):
        assert len(set(a[row])) == 100
        assert not set(a[row]) & set(ds.sequences[u].tolist())
        assert a[row].min() >= 1 and a[row].max() <= 300

