"""The dataset cache: a second build reads the prepared entry, not the file; a changed file or a
changed reading setting makes another entry; --no-cache reads the file and writes nothing; damaged
entries, unwritable folders and concurrent builders cost no run."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import pytest
from click.testing import CliRunner
from h2rec import dataset_cache
from h2rec.cli import main
from h2rec.config import DataConfig
from h2rec.data import build_dataset

ITEMS = ["a", "b", "c", "d", "e"]
LOG = "user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu1,c,3\nu2,b,1\nu2,c,1\nu2,d,2\nu3,a,5\nu3,e,4\n"


@pytest.fixture
def reads(monkeypatch, tmp_path):
    """A cache folder of this test's own, and the list of files parsed (one entry per parse)."""
    monkeypatch.setenv("H2REC_CACHE_DIR", str(tmp_path / "cache"))
    parsed = []
    real = dataset_cache.read_prepared

    def counting(cfg):
        parsed.append(cfg.interactions)
        return real(cfg)

    monkeypatch.setattr(dataset_cache, "read_prepared", counting)
    return parsed


def entries(tmp_path) -> list[str]:
    folder = tmp_path / "cache" / "interactions"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def split(ds) -> tuple:
    return ds.user_ids, [s.tolist() for s in ds.sequences], ds.test.targets.tolist()


def test_the_second_build_reads_the_cache(tmp_path, reads):
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    first = build_dataset(DataConfig(interactions=str(path)), ITEMS)
    second = build_dataset(DataConfig(interactions=str(path)), ITEMS)
    assert len(reads) == 1 and len(entries(tmp_path)) == 1
    assert split(first) == split(second)
    assert second.stats == first.stats


def test_a_changed_file_or_reading_setting_is_another_entry(tmp_path, reads):
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    build_dataset(DataConfig(interactions=str(path)), ITEMS)
    # settings the split uses after reading, and the path spelling, share the entry
    build_dataset(DataConfig(interactions=str(path), max_len=3, head_share=0.5, format="csv"), ITEMS)
    os.utime(path, (1, 1))  # a new mtime, the same content: still the same entry
    build_dataset(DataConfig(interactions=str(path)), ITEMS)
    assert len(reads) == 1
    changed = build_dataset(DataConfig(interactions=str(path), k_core=2), ITEMS)
    assert len(reads) == 2 and "u3" not in changed.user_ids
    build_dataset(DataConfig(interactions=str(path), time_field="none"), ITEMS)  # file order instead of times
    assert len(reads) == 3
    path.write_text(LOG.replace("u3,e,4", "u3,d,4"))  # the same size, another content
    ds = build_dataset(DataConfig(interactions=str(path)), ITEMS)
    assert len(reads) == 4 and ds.sequences[2].tolist() == [4, 1]
    assert len(entries(tmp_path)) == 4


def test_no_cache_reads_the_file_and_writes_nothing(tmp_path, reads):
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    for _ in range(2):
        build_dataset(DataConfig(interactions=str(path), cache=False), ITEMS)
    assert len(reads) == 2 and not (tmp_path / "cache").exists()


def test_a_damaged_entry_is_rebuilt(tmp_path, reads, caplog):
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    first = build_dataset(DataConfig(interactions=str(path)), ITEMS)
    (entry,) = entries(tmp_path)
    (tmp_path / "cache" / "interactions" / entry / "items.npy").write_bytes(b"not numpy")
    again = build_dataset(DataConfig(interactions=str(path)), ITEMS)
    assert len(reads) == 2 and split(again) == split(first)
    assert "damaged cache entry" in caplog.text
    assert split(build_dataset(DataConfig(interactions=str(path)), ITEMS)) == split(first) and len(reads) == 2


def test_an_unwritable_cache_folder_costs_a_warning(tmp_path, monkeypatch, caplog):
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("H2REC_CACHE_DIR", str(blocker))  # a file where the folder should be
    ds = build_dataset(DataConfig(interactions=str(path)), ITEMS)
    assert ds.user_ids == ["u1", "u2", "u3"] and "cannot use the cache folder" in caplog.text


def build_in_child(path: str, queue) -> None:
    ds = build_dataset(DataConfig(interactions=path), [f"i{n}" for n in range(300)])
    queue.put([s.tolist() for s in ds.sequences])


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_concurrent_builders_share_one_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("H2REC_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"u{n % 997},i{n % 300},{n % 13}\n" for n in range(60_000)))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=build_in_child, args=(str(path), queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert all(result == results[0] for result in results)
    folder = tmp_path / "cache" / "interactions"
    assert len(entries(tmp_path)) == 1 and not list(folder.glob("*.tmp"))  # no staging folder left


def test_train_evaluate_recommend_read_the_file_once(tiny, tmp_path, reads):
    run = tmp_path / "run"
    common = ["--max-len", "10", "--dim", "16", "--batch-size", "64", "--epochs", "1", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(main, ["train", "--interactions", str(tiny["interactions"]), "--semid",
                                       str(tiny["semid"]), "-o", str(run), "--model", "hid", *common])
    assert result.exit_code == 0, result.output
    assert len(reads) == 1
    for args in (["evaluate", str(run), "--device", "cpu", "--json"],
                 ["recommend", str(run), "--user", "u00001", "--device", "cpu"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert len(reads) == 1  # both came from the entry train wrote
    result = CliRunner().invoke(main, ["evaluate", str(run), "--device", "cpu", "--json", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert len(reads) == 2
    assert json.loads((run / "config.json").read_text())["data"]["cache"] is True


def test_cache_list_and_clear(tmp_path, reads):
    """`h2rec cache list` shows each entry and its file; `clear --missing` deletes the entries whose
    file is gone, `clear` the rest; an entry being built (its lock held) is left alone; the next
    build prepares its file again."""
    from filelock import FileLock

    kept, gone = tmp_path / "kept.csv", tmp_path / "gone.csv"
    kept.write_text(LOG)
    gone.write_text(LOG + "u4,a,1\nu4,b,2\n")
    for path in (kept, gone):
        build_dataset(DataConfig(interactions=str(path)), ITEMS)
    gone.unlink()
    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["cache", "list", "--json"]).output)
    assert sorted(e["path"] for e in listed) == sorted(str(p.resolve()) for p in (kept, gone))
    assert {e["path"]: e["source_present"] for e in listed} == {str(kept.resolve()): True, str(gone.resolve()): False}
    assert all(e["bytes"] > 0 and e["interactions"] in (8, 10) for e in listed)
    assert "(file gone)" in runner.invoke(main, ["cache", "list"]).output

    result = runner.invoke(main, ["cache", "clear", "--missing"])
    assert result.exit_code == 0 and "removed 1 of 1" in result.output
    assert [e["path"] for e in dataset_cache.cache_entries()] == [str(kept.resolve())]
    assert runner.invoke(main, ["cache", "clear", "--older-than", "1"]).output.startswith("removed 0 of 0")

    key = entries(tmp_path)[0]
    with FileLock(tmp_path / "cache" / "interactions" / f".{key}.lock"):  # a builder holds it
        assert "removed 0 of 1" in runner.invoke(main, ["cache", "clear"]).output
    assert entries(tmp_path) == [key]
    assert "removed 1 of 1" in runner.invoke(main, ["cache", "clear"]).output
    assert entries(tmp_path) == [] and not list((tmp_path / "cache" / "interactions").glob(".*.tmp"))
    build_dataset(DataConfig(interactions=str(kept)), ITEMS)
    assert len(reads) == 3  # the two first builds, and this one after the clear


def test_cache_clear_of_an_empty_or_absent_folder(tmp_path, reads):
    result = CliRunner().invoke(main, ["cache", "clear"])
    assert result.exit_code == 0 and "removed 0 of 0" in result.output
    assert "0 entries" in CliRunner().invoke(main, ["cache", "list"]).output
