"""`h2rec recommend RUN --all-users -o FILE`: every user's top-k in a table, the same as the single-user
`recommend`, written whole or not at all; bad names exit 2 before any work."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import h2rec
import numpy as np
import pytest
from click.testing import CliRunner
from h2rec import build_config, recommend_all
from h2rec.cli import main

K = 5


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory) -> Path:
    """A one-epoch H2Rec run on the tiny dataset (240 users, 160 items)."""
    config = build_config(overrides={
        "data.interactions": str(tiny["interactions"]), "data.semid": str(tiny["semid"]), "data.max_len": 20,
        "model.dim": 32, "train.epochs": 1, "train.batch_size": 64, "train.device": "cpu", "eval.batch_size": 256})
    run_dir = tmp_path_factory.mktemp("recommend-all") / "run"
    h2rec.train(config, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def recommender(run) -> h2rec.Recommender:
    return h2rec.load(run, "cpu")


def read_table(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pytest.importorskip("pyarrow.parquet").read_table(path).to_pylist()
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return [{**row, "rank": int(row["rank"]), "score": float(row["score"])} for row in csv.DictReader(handle)]
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_user(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["user_id"], []).append(row)
    return out


def recommend_all_users(run: Path, out: Path, *extra: str):
    # a small batch, so that the users cross many batch borders
    return CliRunner().invoke(main, ["recommend", str(run), "--all-users", "-o", str(out), "-k", str(K),
                                     "--batch-size", "7", "--device", "cpu", "--quiet", *extra])


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_every_user_gets_the_single_user_top_k(run, recommender, tmp_path, suffix):
    out = tmp_path / f"recs{suffix}"
    result = recommend_all_users(run, out)
    assert result.exit_code == 0, result.output
    rows = read_table(out)
    assert list(rows[0]) == ["user_id", "rank", "item_id", "score"]
    users = by_user(rows)
    ds = recommender.dataset
    assert list(users) == ds.user_ids and len(rows) == K * len(ds.user_ids)  # the data's user order
    for row_index, user in enumerate(ds.user_ids):
        assert [r["rank"] for r in users[user]] == list(range(1, K + 1))
        seen = {ds.item_ids[i - 1] for i in ds.sequences[row_index]}
        assert not seen & {r["item_id"] for r in users[user]}  # seen items left out by default
    for user in ds.user_ids[::40]:
        single = recommender.recommend(user, k=K)
        assert [r["item_id"] for r in users[user]] == [s["item_id"] for s in single]
        np.testing.assert_allclose([r["score"] for r in users[user]], [s["score"] for s in single], atol=1e-4)


def test_include_history_ranks_seen_items_as_the_single_user_command_does(run, recommender, tmp_path):
    out = tmp_path / "recs.jsonl"
    result = recommend_all_users(run, out, "--include-history")
    assert result.exit_code == 0, result.output
    users = by_user(read_table(out))
    for user in recommender.dataset.user_ids[::40]:
        single = recommender.recommend(user, k=K, exclude_history=False)
        assert [r["item_id"] for r in users[user]] == [s["item_id"] for s in single]


def test_k_beyond_the_unseen_items_writes_only_the_unseen_ones(run, recommender, tmp_path):
    out = tmp_path / "recs.csv"
    result = CliRunner().invoke(main, ["recommend", str(run), "--all-users", "-o", str(out), "-k", "500",
                                       "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    users = by_user(read_table(out))
    ds = recommender.dataset
    for row_index, user in enumerate(ds.user_ids[:20]):
        unseen = ds.n_items - len(np.unique(ds.sequences[row_index]))
        assert len(users[user]) == unseen and all(np.isfinite(r["score"]) for r in users[user])


def test_a_failed_run_leaves_no_file(run, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = recommend_all.top_items

    def fail_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(recommend_all, "top_items", fail_on_third_batch)
    out = tmp_path / "recs.csv"
    recommend_all_users(run, out)
    assert calls["n"] == 3 and list(tmp_path.iterdir()) == []  # no table, no temp file


def test_an_existing_file_is_replaced_only_with_overwrite(run, tmp_path):
    out = tmp_path / "recs.csv"
    out.write_text("keep me\n")
    result = recommend_all_users(run, out)
    assert result.exit_code == 2 and "exists; pass --overwrite" in result.output
    assert out.read_text() == "keep me\n"
    result = recommend_all_users(run, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("user_id,rank,item_id,score\n")


@pytest.mark.parametrize("case", ["suffix", "no_out", "both", "neither", "out_without_all", "no_pyarrow"])
def test_bad_input_exits_2_with_a_clear_message(run, tmp_path, monkeypatch, case):
    args = ["recommend", str(run), "--device", "cpu"]
    if case == "suffix":
        args += ["--all-users", "-o", str(tmp_path / "recs.txt")]
        expected = "-o " + str(tmp_path / "recs.txt") + ": unknown table format '.txt'; end the name in .parquet"
    elif case == "no_out":
        args += ["--all-users"]
        expected = "--all-users writes a file: give it with -o"
    elif case == "both":
        args += ["--all-users", "--user", "u00001", "-o", str(tmp_path / "recs.csv")]
        expected = "--user and --all-users: give one of them"
    elif case == "neither":
        expected = "give --user ID for one user, or --all-users -o FILE"
    elif case == "out_without_all":
        args += ["--user", "u00001", "-o", str(tmp_path / "recs.csv")]
        expected = "-o: only with --all-users"
    else:
        monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
        args += ["--all-users", "-o", str(tmp_path / "recs.parquet")]
        expected = "writing Parquet needs pyarrow: pip install 'h2rec[parquet]'"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    if case == "no_pyarrow":
        assert f"-o {tmp_path / 'recs.parquet'}" in result.output  # names the flag and the file
    assert list(tmp_path.iterdir()) == []
