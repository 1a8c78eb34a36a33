"""What an OUT_DIR survives: a second writer, an unwritable -o, a kill or failure mid-commit, pickle
weights, and a rerun in another process (byte-identical files)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import semid.io
import semid.pipeline
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from semid import QuantizerConfig, SemidError, encode_catalogue, load, load_quantizer
from semid.cli import main
from semid.io import COMMIT_MARKER, OUTPUT_FILES

SMALL = QuantizerConfig(kind="rq", levels=2, codebook_size=4, refine_iters=2)
SMALL_FLAGS = ["--quantizer", "rq", "--levels", "2", "--codebook-size", "4", "--quiet"]


@pytest.fixture()
def embedded(tmp_path, clustered):
    np.save(tmp_path / "emb.npy", clustered.numpy())
    (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
    return str(tmp_path / "emb.npy"), str(tmp_path / "ids.txt")


def _files(folder) -> dict[str, bytes]:
    """Every file's bytes; stats.json without its timings_s, which differ from run to run."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    if "stats.json" in files:
        stats = json.loads(files["stats.json"])
        stats.pop("timings_s")
        files["stats.json"] = json.dumps(stats).encode()
    return files


# A lock holder in another process, with filelock as semid.io.one_writer uses it; it holds until stdin closes.
HOLD_LOCK = """
import sys
from filelock import FileLock
lock = FileLock(sys.argv[1], timeout=0)
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_second_writer_is_refused_at_once_with_exit_2(tmp_path, embedded):
    emb, ids = embedded
    out = tmp_path / "out"
    out.mkdir()
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a"}\n', encoding="utf-8")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / ".lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        result = CliRunner().invoke(main, ["encode", "-o", str(out), "--embeddings", emb, "--ids", ids, *SMALL_FLAGS])
        assert result.exit_code == 2, result.output
        assert f"Error: {out}: another semid encode is writing to this folder" in result.output
        assert time.monotonic() - start < 5  # refused at once, not after waiting for the holder
        embedded_too = CliRunner().invoke(main, ["embed", str(items), "-o", str(out), "--quiet"])
        assert embedded_too.exit_code == 2 and "another semid embed is writing" in embedded_too.output
        assert {p.name for p in out.iterdir()} == {".lock"}  # neither wrote anything
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    again = CliRunner().invoke(main, ["encode", "-o", str(out), "--embeddings", emb, "--ids", ids, *SMALL_FLAGS])
    assert again.exit_code == 0, again.output  # the holder is gone: the folder is free again
    assert len(load(out)) == 300


@pytest.mark.parametrize("case", ["under_a_file", "is_a_file", "read_only_parent"])
def test_an_unwritable_out_dir_fails_before_the_slow_part(tmp_path, embedded, monkeypatch, case):
    def slow_part(*args, **kwargs):
        raise AssertionError("embedding or fitting ran before -o was checked")

    monkeypatch.setattr(semid.pipeline, "_precomputed_catalogue", slow_part)
    monkeypatch.setattr(semid.pipeline, "embed_catalogue", slow_part)
    emb, ids = embedded
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    if case == "under_a_file":
        out, expected = tmp_path / "afile/out", f"{tmp_path / 'afile/out'}: cannot be created"
    elif case == "is_a_file":  # click refuses it too; the library call must as well
        out, expected = tmp_path / "afile", f"{tmp_path / 'afile'}: exists and is not a folder"
        with pytest.raises(SemidError, match="exists and is not a folder"):
            encode_catalogue(None, out, quantizer=SMALL, embeddings=emb, ids=ids)
        expected = "is a file"
    else:
        if os.name == "nt" or os.geteuid() == 0:
            pytest.skip("root (or Windows) ignores a read-only folder's mode")
        parent = tmp_path / "locked"
        parent.mkdir()
        parent.chmod(0o500)
        out, expected = parent / "out", f"{parent / 'out'}: cannot be created"
    try:
        result = CliRunner().invoke(main, ["encode", "-o", str(out), "--embeddings", emb, "--ids", ids, *SMALL_FLAGS])
    finally:
        if case == "read_only_parent":
            (tmp_path / "locked").chmod(0o700)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_a_failure_between_renames_leaves_a_folder_that_load_refuses(tmp_path, embedded, monkeypatch):
    emb, ids = embedded
    out = tmp_path / "out"
    encode_catalogue(None, out, quantizer=SMALL, embeddings=emb, ids=ids)
    before = _files(out)
    real_replace = os.replace
    renamed = []

    def replace_once_then_fail(src, dst):
        if renamed:
            raise OSError("disk gone")
        real_replace(src, dst)
        renamed.append(dst)

    monkeypatch.setattr(semid.io.os, "replace", replace_once_then_fail)
    with pytest.raises(OSError, match="disk gone"):
        encode_catalogue(None, out, quantizer=dataclasses.replace(SMALL, levels=3), embeddings=emb, ids=ids)
    monkeypatch.undo()
    after = _files(out)
    # what the marker guards against: one output file is from the new run, the rest from the old one
    changed = {name for name in OUTPUT_FILES if name in before and before[name] != after.get(name)}
    assert len(changed) == 1 and COMMIT_MARKER in after
    assert not [name for name in after if name.endswith(".tmp")]  # staged files of a failed run are removed
    for reader in (load, load_quantizer):
        with pytest.raises(SemidError) as info:
            reader(out)
        assert str(info.value).startswith(f"{out}: holds {COMMIT_MARKER}")
    shown = CliRunner().invoke(main, ["stats", str(out)])
    assert shown.exit_code == 2 and COMMIT_MARKER in shown.output
    encode_catalogue(None, out, quantizer=SMALL, embeddings=emb, ids=ids)  # a full rerun repairs the folder
    assert _files(out) == before


# encode_catalogue in another process, killed (os._exit: no cleanup at all) right after its first rename.
KILLED_MID_COMMIT = """
import os, sys
from semid import QuantizerConfig, encode_catalogue
real_replace = os.replace
def replace_then_die(src, dst):
    real_replace(src, dst)
    os._exit(9)
os.replace = replace_then_die
encode_catalogue(None, sys.argv[1], quantizer=QuantizerConfig(kind="rq", levels=2, codebook_size=4, refine_iters=2,
                 seed=7), embeddings=sys.argv[2], ids=sys.argv[3])
"""


def test_a_kill_mid_commit_is_detected_and_its_leftovers_swept_by_the_next_run(tmp_path, embedded):
    emb, ids = embedded
    out = tmp_path / "out"
    encode_catalogue(None, out, quantizer=SMALL, embeddings=emb, ids=ids)
    before = _files(out)
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_COMMIT, str(out), emb, ids], capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert leftovers and COMMIT_MARKER in _files(out)
    with pytest.raises(SemidError, match="was stopped while replacing its files"):
        load(out)
    encode_catalogue(None, out, quantizer=SMALL, embeddings=emb, ids=ids)
    assert _files(out) == before  # no marker, no staging files: the old seed's files exactly


def test_stale_staging_files_are_swept_only_under_the_lock_and_only_semid_ones(tmp_path, embedded):
    emb, ids = embedded
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".semid.safetensors.k3j_x9.tmp", out / ".stats.json.abcd1234.tmp"]
    foreign = [out / ".notes.txt.abcd1234.tmp", out / "user.tmp"]  # not semid's kind: left alone
    for path in stale + foreign:
        path.write_bytes(b"")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / ".lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SemidError, match="another semid encode"):
            encode_catalogue(None, out, quantizer=SMALL, embeddings=emb, ids=ids)
        assert all(path.exists() for path in stale)  # they may be the holder's live staging files
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    encode_catalogue(None, out, quantizer=SMALL, embeddings=emb, ids=ids)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in foreign)


@pytest.fixture()
def pickle_only_model(tmp_path, tiny_bert):
    """tiny_bert with its weights as pytorch_model.bin (a pickle) instead of model.safetensors."""
    folder = tmp_path / "pickle-model"
    shutil.copytree(tiny_bert, folder)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("case", ["bin_only", "bin_beside_another_safetensors"])
def test_pickle_weights_are_refused_and_never_unpickled(tmp_path, pickle_only_model, write_jsonl, monkeypatch,
                                                        case):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on model weights")

    monkeypatch.setattr(torch, "load", no_unpickling)
    if case == "bin_beside_another_safetensors":  # passes semid's own check; transformers must refuse the .bin
        (pickle_only_model / "adapter.safetensors").write_bytes(
            semid.io.tensors_to_bytes({"x": torch.zeros(1)}))
        expected = "field 'model' cannot load"
    else:
        expected = f"{pickle_only_model}: holds only pickle weights (pytorch_model.bin); semid loads safetensors"
    items = write_jsonl([{"id": "a", "title": "red"}, {"id": "b", "title": "nude"}])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["encode", str(items), "-o", str(out), "--model", str(pickle_only_model),
                                       "--no-cache", "--levels", "1", "--codebook-size", "2", "--quiet"])
    assert result.exit_code == 2, result.output
    assert expected in result.output and not out.exists()


def test_same_seed_gives_byte_identical_files_in_two_processes(tmp_path, embedded):
    emb, ids = embedded
    command = [sys.executable, "-m", "semid.cli", "encode", "--embeddings", emb, "--ids", ids, "--dedup",
               "--export", "recbole", "--threads", "1", *SMALL_FLAGS]
    runs = [subprocess.Popen([*command, "-o", str(tmp_path / name)], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    a, b = tmp_path / "a", tmp_path / "b"
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and "semid.safetensors" in names
    for name in names:
        if name == "stats.json":  # records the run: its timings_s differ, every other field must not
            stats_a, stats_b = (json.loads((folder / name).read_bytes()) for folder in (a, b))
            assert stats_a.pop("timings_s").keys() == stats_b.pop("timings_s").keys()
            assert stats_a == stats_b
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
