"""`torchrun --nproc_per_node 2 -m semid encode`: two CPU processes (gloo) share the shards, rank i
embedding shards i, i + 2, ...; rank 0 joins them and writes the files one process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import semid.distributed
from semid import SemidError, load
from semid.distributed import Group, Order

CHUNK, SHARDS = 7, 9  # 60 items

# `semid` as torchrun starts it (-m semid), with a note of which rank wrote which shard.
RECORDING_SEMID = """
import os, sys
import semid.shards
from semid.cli import main
real_write = semid.shards.WorkArea.write_shard
def write_shard(self, shard, matrix):
    real_write(self, shard, matrix)
    with open(sys.argv[1], "a") as log:
        log.write(f"{os.environ.get('RANK', '0')} {shard}\\n")
semid.shards.WorkArea.write_shard = write_shard
main(sys.argv[2:], prog_name="semid")
"""


@pytest.fixture()
def args(tmp_path, item_records, write_jsonl, tiny_bert):
    items = write_jsonl(item_records[:60])
    return ["encode", str(items), "--model", str(tiny_bert), "--chunk-size", str(CHUNK), "--batch-size", "4",
            "--no-cache", "--quiet", "--threads", "1", "--quantizer", "rq", "--levels", "2", "--codebook-size", "4"]


def torchrun(*command: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *command]


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as torchrun sets it, for the single process too
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def files(folder) -> dict[str, bytes]:
    found = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    stats = json.loads(found.pop("stats.json"))
    stats.pop("timings_s")
    shards = stats["source"].pop("embedding_shards")
    assert shards["shards"] == SHARDS and shards["reused"] == 0
    found["stats.json"] = json.dumps(stats).encode()
    return found


def test_two_ranks_write_the_files_of_one_process(tmp_path, args):
    script = tmp_path / "recording_semid.py"
    script.write_text(RECORDING_SEMID, encoding="utf-8")
    one = run([sys.executable, str(script), str(tmp_path / "one.log"), *args, "-o", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = run(torchrun(str(script), str(tmp_path / "two.log"), *args, "-o", str(tmp_path / "two")))
    assert two.returncode == 0, two.stderr
    written = sorted(tuple(map(int, line.split())) for line in (tmp_path / "two.log").read_text().splitlines())
    assert written == sorted((shard % 2, shard) for shard in range(SHARDS))  # shard i on rank i % 2, once
    assert files(tmp_path / "two") == files(tmp_path / "one")  # embeddings, codes, quantizer: byte for byte
    assert json.loads((tmp_path / "two/stats.json").read_text())["source"]["embedding_shards"]["ranks"] == 2


def test_when_rank_0_stops_the_other_rank_stops_too(tmp_path, args):
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    bad_cache = ["--cache-dir", str(tmp_path / "afile/cache")]  # found unwritable by rank 0, after the lock
    failed = run(torchrun("-m", "semid", *[a for a in args if a != "--no-cache"], *bad_cache,
                          "-o", str(tmp_path / "out")))
    assert failed.returncode != 0
    assert "field 'cache_dir' cannot be created" in failed.stderr
    assert "rank 0 stopped:" in failed.stderr  # rank 1 was told, rather than waiting for an order
    assert not (tmp_path / "out").exists()


def test_with_precomputed_embeddings_rank_0_fits_alone(tmp_path, clustered):
    np.save(tmp_path / "emb.npy", clustered.numpy())
    (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
    done = run(torchrun("-m", "semid", "encode", "--embeddings", str(tmp_path / "emb.npy"), "--ids",
                        str(tmp_path / "ids.txt"), "--quantizer", "rq", "--levels", "2", "--codebook-size", "4",
                        "--quiet", "-o", str(tmp_path / "out")))
    # the other rank is told at once that there is nothing to embed, and the group ends before the fit
    # (vector-quantize-pytorch's k-means would otherwise all_gather with a rank that never answers)
    assert done.returncode == 0, done.stderr
    assert len(load(tmp_path / "out")) == 300


def test_rank_0_tells_the_other_ranks_once_whatever_ends_its_job(monkeypatch):
    sent = []
    monkeypatch.setattr(semid.distributed.dist, "broadcast_object_list", lambda box, src: sent.append(box[0]))
    monkeypatch.setattr(semid.distributed.dist, "is_initialized", lambda: False)
    group = Group(rank=0, world_size=2)
    with pytest.raises(SemidError), group.leading():
        raise SemidError("out: another semid encode is writing to this folder")
    with group.leading():
        pass  # a job that had nothing to embed and said nothing
    with group.leading():
        group.tell(Order(embed=True, key="k"))
    assert sent == [Order(embed=False, error="out: another semid encode is writing to this folder"),
                    Order(embed=False), Order(embed=True, key="k")]
