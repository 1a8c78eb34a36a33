"""A run folder that can't lie: absolute paths and a data fingerprint, one writer, checks before the
first file, what --resume may change, and what a kill leaves behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h2rec
import numpy as np
import pytest
import semid
from click.testing import CliRunner
from h2rec import build_config, training
from h2rec.cli import main

FAST = ["--max-len", "20", "--dim", "32", "--batch-size", "64", "--device", "cpu", "--quiet"]


def config_for(interactions, sids, **overrides):
    values = {"data.interactions": str(interactions), "data.semid": str(sids), "data.max_len": 20,
              "model.dim": 32, "model.kind": "hid", "train.epochs": 2, "train.batch_size": 64,
              "train.device": "cpu", "eval.batch_size": 256}
    return build_config(overrides={**values, **overrides})


@pytest.fixture
def data(tiny, tmp_path):
    """A private copy of the tiny dataset (tests change it): {"items", "interactions", "semid", "root"}."""
    root = tmp_path / "data"
    root.mkdir()
    copies = {"root": root}
    for name in ("items", "interactions"):
        copies[name] = Path(shutil.copy(tiny[name], root / tiny[name].name))
    copies["semid"] = Path(shutil.copytree(tiny["semid"], root / "semid"))
    return copies


def train_cli(data, out, *extra):
    return CliRunner().invoke(main, ["train", "--interactions", str(data["interactions"]), "--semid",
                                     str(data["semid"]), "-o", str(out), "--model", "hid", *FAST, *extra])


def evaluate_cli(run):
    return CliRunner().invoke(main, ["evaluate", str(run), "--device", "cpu", "--json"])


# ----------------------------------------------------------------------------- what the folder records
def test_run_stores_absolute_paths_and_evaluates_from_any_directory(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data["root"])
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--interactions", data["interactions"].name, "--semid", "semid",
                                       "-o", str(run), "--model", "hid", "--epochs", "1", *FAST])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["interactions"] == str(data["interactions"].resolve())
    assert config["data"]["semid"] == str(data["semid"].resolve())
    record = json.loads((run / "data.json").read_text())
    assert record["interactions"]["bytes"] == data["interactions"].stat().st_size
    assert len(record["item_ids"]) == record["semid"]["items"] == 160
    trained = json.loads((run / "results.json").read_text())

    monkeypatch.chdir(tmp_path)  # the relative paths typed above mean nothing here
    result = evaluate_cli(run)
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)  # stderr may hold a busy-CPU warning
    assert again["test"]["full"]["overall"] == trained["test"]["full"]["overall"]


def test_changed_interactions_are_refused_by_evaluate_recommend_and_resume(data, tmp_path):
    run = tmp_path / "run"
    assert train_cli(data, run, "--epochs", "1").exit_code == 0
    lines = data["interactions"].read_text().splitlines(keepends=True)
    data["interactions"].write_text("".join(lines[:-1]))  # the last interaction removed

    for result in (evaluate_cli(run),
                   CliRunner().invoke(main, ["recommend", str(run), "--user", "u00001", "--device", "cpu"]),
                   train_cli(data, run, "--resume", "--epochs", "2")):
        assert result.exit_code == 2, result.output
        assert "no longer match" in result.output and str(data["interactions"]) in result.output
        assert "sha256" in result.output


def test_a_re_encoded_semid_folder_is_refused(data, tmp_path):
    """The issue's case: the item file shuffled and encoded again gives other item indices."""
    run = tmp_path / "run"
    assert train_cli(data, run, "--epochs", "1").exit_code == 0
    sids = semid.load(data["semid"])
    emb, ids_file = tmp_path / "emb.npy", tmp_path / "ids.txt"
    np.save(emb, sids.embeddings.numpy())
    ids_file.write_text("\n".join(sids.ids) + "\n")
    lines = data["items"].read_text().splitlines(keepends=True)
    data["items"].write_text("".join(lines[i] for i in np.random.default_rng(0).permutation(len(lines))))
    shutil.rmtree(data["semid"])
    semid.encode_catalogue(data["items"], data["semid"], embeddings=emb, ids=ids_file,
                           quantizer=semid.QuantizerConfig(kind="rq", levels=3, codebook_size=8), cache_dir=None)
    assert semid.load(data["semid"]).ids != sids.ids

    result = evaluate_cli(run)
    assert result.exit_code == 2, result.output
    assert "semantic IDs" in result.output and "re-encoded or another catalogue" in result.output


def test_a_semid_folder_of_another_catalogue_is_refused_below_the_coverage(data, tmp_path):
    """Interactions that use a few of the semid folder's ids: say how many, refuse unless asked."""
    sids = semid.load(data["semid"])
    keep = set(sids.ids[:40])  # a quarter of the catalogue
    lines = data["interactions"].read_text().splitlines()
    header, rows = lines[0], lines[1:]
    column = header.split(",").index("item_id")
    data["interactions"].write_text("\n".join([header] + [r for r in rows if r.split(",")[column] in keep]) + "\n")

    run = tmp_path / "run"
    result = train_cli(data, run, "--epochs", "1")
    assert result.exit_code == 2, result.output
    assert "of the 160 items" in result.output and "--min-catalogue-coverage" in result.output
    assert not run.exists()  # a refused start leaves nothing behind
    result = train_cli(data, run, "--epochs", "1", "--min-catalogue-coverage", "0")
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- checks before the first file
@pytest.mark.parametrize("case, message", [
    ("short", "no user has 3 or more items"),
    ("negatives", "eval.negatives is 5000"),
])
def test_checks_that_would_fail_after_training_fail_before_any_file(data, tmp_path, case, message):
    extra = ["--epochs", "1"]
    if case == "short":  # every user keeps 2 items: nothing to validate or test on
        lines = data["interactions"].read_text().splitlines()
        seen: dict[str, int] = {}
        kept = [lines[0]]
        for line in lines[1:]:
            user = line.split(",")[0]
            seen[user] = seen.get(user, 0) + 1
            if seen[user] <= 2:
                kept.append(line)
        data["interactions"].write_text("\n".join(kept) + "\n")
        extra += ["--min-catalogue-coverage", "0"]
    else:
        extra += ["--eval-negatives", "5000"]
    run = tmp_path / "nested" / "run"
    result = train_cli(data, run, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not run.exists()


# ----------------------------------------------------------------------------- one writer per folder
def test_a_second_writer_on_the_same_folder_is_refused_at_once(data, tmp_path):
    """Two processes: a real `h2rec train` holds the folder; a second one exits 2 at once and the
    first one's run is untouched."""
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "h2rec.cli", "train", "--interactions", str(data["interactions"]), "--semid",
         str(data["semid"]), "-o", str(run), "--model", "hid", "--epochs", "200", "--patience", "200",
         "--seed", "42", *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (run / "config.json").is_file():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.2)
        start = time.monotonic()
        result = train_cli(data, run, "--seed", "43", "--epochs", "1")
        assert result.exit_code == 2, result.output
        assert "another h2rec train is writing to this folder" in result.output
        assert time.monotonic() - start < 30  # refused at once, not after waiting
        resumed = train_cli(data, run, "--resume")
        assert resumed.exit_code == 2 and "another h2rec train" in resumed.output
        assert json.loads((run / "config.json").read_text())["train"]["seed"] == 42
    finally:
        first.kill()
        first.communicate()


# ----------------------------------------------------------------------------- what --resume may change
def test_resume_applies_allowed_changes_and_refuses_the_rest(data, tmp_path):
    run = tmp_path / "run"
    assert train_cli(data, run, "--epochs", "1", "--lr", "0.002").exit_code == 0

    result = train_cli(data, run, "--resume", "--model", "sid", "--lr", "0.5", "--epochs", "12")
    assert result.exit_code == 2, result.output
    assert "model.kind ('hid' -> 'sid')" in result.output and "train.lr (0.002 -> 0.5)" in result.output
    assert "train.epochs" not in result.output.split("differ from it:")[1].split(".")[0]

    result = CliRunner().invoke(main, ["train", "--interactions", str(data["interactions"]), "--semid",
                                       str(data["semid"]), "-o", str(run), "--model", "hid",
                                       *[a for a in FAST if a != "--quiet"], "--resume", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "resume: train.epochs 1 -> 2" in result.output
    config = json.loads((run / "config.json").read_text())
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert config["train"]["lr"] == 0.002  # the run continued with its own settings
    assert config["train"]["epochs"] == 2  # config.json says what it continued with, and when that changed
    assert config["resumed_with_changes"] == [{"at_epoch": 1, "train.epochs": [1, 2]}]
    state = json.loads((run / "checkpoints" / "last.json").read_text())
    assert state["epoch"] == 2


def test_resume_in_python_without_a_config_continues_as_saved(data, tmp_path):
    config = config_for(data["interactions"], data["semid"], **{"train.epochs": 1})
    first = h2rec.train(config, tmp_path / "run", progress=False)
    again = h2rec.train(None, tmp_path / "run", resume=True, progress=False)
    assert again["test"] == first["test"]


# ----------------------------------------------------------------------------- a kill and what it leaves
def test_a_kill_after_the_last_checkpoint_loses_no_metrics_line_and_leftovers_go(data, tmp_path, monkeypatch):
    config = config_for(data["interactions"], data["semid"])
    run = tmp_path / "run"
    real_save = training.save_checkpoint
    calls = {"n": 0}

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # the last epoch: checkpoint committed, metrics line and results not yet
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(training, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        h2rec.train(config, run, progress=False)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    # what a kill in the middle of other writes leaves: a temp file and an unnamed checkpoint
    (run / "checkpoints" / ".last-3.safetensors.abc.tmp").write_bytes(b"")
    (run / "checkpoints" / "last-3.safetensors").write_bytes(b"half")
    (run / ".results.json.xyz.tmp").write_bytes(b"")

    results = h2rec.train(config, run, resume=True, progress=False)
    assert results["epochs_run"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["average-2.safetensors",  # the default average of the weights
                     "best-" + str(results["best_epoch"]) + ".safetensors", "last-2.safetensors",
                     "last-2.state.safetensors", "last.json"]
    assert not list(run.glob(".*.tmp"))
    mask = os.umask(0)
    os.umask(mask)
    assert (run / "checkpoints" / "last-2.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_damaged_or_foreign_checkpoints_are_an_exit_2(data, tmp_path):
    small, wide = tmp_path / "small", tmp_path / "wide"
    assert train_cli(data, small, "--epochs", "1").exit_code == 0
    assert train_cli(data, wide, "--epochs", "1", "--dim", "16").exit_code == 0
    best = next((small / "checkpoints").glob("best-*.safetensors"))
    saved = best.read_bytes()

    best.write_bytes(saved[: len(saved) // 2])  # truncated
    result = evaluate_cli(small)
    assert result.exit_code == 2, result.output
    assert best.name in result.output and "damaged" in result.output

    shutil.copy(next((wide / "checkpoints").glob("best-*.safetensors")), best)  # another width
    result = evaluate_cli(small)
    assert result.exit_code == 2, result.output
    assert best.name in result.output and "does not fit this model" in result.output
