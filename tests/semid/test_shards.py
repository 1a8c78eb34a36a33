"""Embedding in shards (semid.shards): a run stopped after shard k resumes from its last whole shard,
redoes at most the shard it was embedding, and writes the files of an uninterrupted run, byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import semid.embed
import semid.shards
import torch
from click.testing import CliRunner
from semid import EmbedConfig, QuantizerConfig, ReadConfig, encode_catalogue
from semid.cli import main
from semid.embed import embed_texts
from semid.shards import WORK_DIR

SMALL = QuantizerConfig(kind="rq", levels=2, codebook_size=4, refine_iters=2)
CHUNK = 7  # 60 items: 9 shards, the last of 4
SHARDS = 9


@pytest.fixture()
def items(item_records, write_jsonl):
    return write_jsonl(item_records[:60])


@pytest.fixture()
def counted(monkeypatch):
    """semid.embed.Embedder, counting the chunks it embeds; `fail_at` = n makes the n-th chunk raise
    KeyboardInterrupt (a Ctrl-C while that chunk is embedded)."""
    real = semid.embed.Embedder
    state = {"calls": 0, "fail_at": None}

    class Counting(real):
        def embed(self, texts, progress=False):
            state["calls"] += 1
            if state["calls"] == state["fail_at"]:
                raise KeyboardInterrupt
            return super().embed(texts, progress=progress)

    monkeypatch.setattr(semid.embed, "Embedder", Counting)
    return state


def encode(items, out, tiny_bert, chunk_size=CHUNK):
    embed = EmbedConfig(model=str(tiny_bert), batch_size=4, chunk_size=chunk_size)
    return encode_catalogue(items, out, read=ReadConfig(template="{title}"), embed=embed, quantizer=SMALL,
                            cache_dir=None)


def files(folder) -> dict[str, bytes]:
    """Every output file's bytes; stats.json without what records the run (timings, shards reused)."""
    found = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    if "stats.json" in found:
        stats = json.loads(found["stats.json"])
        stats.pop("timings_s")
        stats["source"].pop("embedding_shards")
        found["stats.json"] = json.dumps(stats).encode()
    return found


def shard_files(out) -> list[str]:
    return sorted(p.name for p in (out / WORK_DIR).glob("shard-*.safetensors"))


@pytest.mark.parametrize("killed", ["while_embedding", "after_writing"])
def test_a_stopped_run_resumes_and_writes_the_files_of_an_uninterrupted_run(tmp_path, items, tiny_bert, counted,
                                                                             monkeypatch, killed):
    reference = tmp_path / "reference"
    encode(items, reference, tiny_bert)
    assert counted["calls"] == SHARDS and not (reference / WORK_DIR).exists()

    k = 4  # shards 0..3 are whole when the run stops
    counted["calls"] = 0
    out = tmp_path / "out"
    if killed == "while_embedding":
        counted["fail_at"] = k + 1  # stopped inside shard 4: its work is lost
    else:
        real_write = semid.shards.WorkArea.write_shard

        def write_then_stop(self, shard, matrix):
            real_write(self, shard, matrix)
            if shard == k - 1:
                raise KeyboardInterrupt

        monkeypatch.setattr(semid.shards.WorkArea, "write_shard", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        encode(items, out, tiny_bert)
    first_run = counted["calls"]
    assert shard_files(out) == [f"shard-{i:05d}.safetensors" for i in range(k)]
    assert sorted(p.name for p in out.iterdir()) == [".embed-work", ".lock"]  # no output yet

    if killed == "after_writing":
        monkeypatch.setattr(semid.shards.WorkArea, "write_shard", real_write)
    counted.update(calls=0, fail_at=None)
    resumed = encode(items, out, tiny_bert)
    assert counted["calls"] == SHARDS - k  # only the shards not on disk
    redone = first_run + counted["calls"] - SHARDS
    assert redone == (1 if killed == "while_embedding" else 0)
    assert resumed.stats["source"]["embedding_shards"] == {"shards": SHARDS, "reused": k, "chunk_size": CHUNK,
                                                           "ranks": 1}
    assert not (out / WORK_DIR).exists()
    assert files(out) == files(reference)  # embeddings, codes, quantizer, texts: byte for byte


def test_shards_of_other_settings_are_discarded(tmp_path, items, tiny_bert, counted):
    counted["fail_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        encode(items, tmp_path / "out", tiny_bert)
    assert len(shard_files(tmp_path / "out")) == 2
    counted.update(calls=0, fail_at=None)
    encode(items, tmp_path / "out", tiny_bert, chunk_size=25)  # another chunking: nothing can be reused
    assert counted["calls"] == 3
    encode(items, tmp_path / "reference", tiny_bert, chunk_size=25)
    assert files(tmp_path / "out") == files(tmp_path / "reference")


def test_in_memory_and_sharded_embeddings_are_the_same_rows(tmp_path, items, tiny_bert):
    s = encode(items, tmp_path / "out", tiny_bert)
    config = EmbedConfig(model=str(tiny_bert), batch_size=4, chunk_size=CHUNK)
    assert torch.equal(embed_texts(s.texts, config), s.embeddings)


def test_the_cache_is_written_after_the_shards_and_then_read_instead(tmp_path, items, tiny_bert, counted):
    embed = EmbedConfig(model=str(tiny_bert), batch_size=4, chunk_size=CHUNK)
    cache = tmp_path / "cache"
    first = encode_catalogue(items, tmp_path / "a", embed=embed, quantizer=SMALL, cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 1 and counted["calls"] == SHARDS
    second = encode_catalogue(items, tmp_path / "b", embed=embed, quantizer=SMALL, cache_dir=cache)
    assert counted["calls"] == SHARDS and second.stats["source"]["embedding_cache_hit"] is True
    assert second.stats["source"]["embedding_shards"]["shards"] == 0
    assert torch.equal(first.embeddings, second.embeddings) and torch.equal(first.codes, second.codes)


# `semid embed` in another process, killed (os._exit: no cleanup at all) as it renames shard 2 into place.
KILLED_AT_SHARD_2 = """
import os, sys
import semid.io
from semid.cli import main
real_replace = os.replace
def replace(src, dst):
    if str(dst).endswith("shard-00002.safetensors"):
        os._exit(9)
    real_replace(src, dst)
semid.io.os.replace = replace
main(sys.argv[1:], prog_name="semid")
"""


def test_a_killed_process_leaves_whole_shards_only_and_the_next_run_resumes(tmp_path, items, tiny_bert):
    args = ["embed", str(items), "--model", str(tiny_bert), "--chunk-size", str(CHUNK), "--batch-size", "4",
            "--no-cache", "--quiet", "--threads", "1"]
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_SHARD_2, *args, "-o", str(out)], capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr
    work = out / WORK_DIR
    assert shard_files(out) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert [p.name for p in work.glob(".shard-00002.safetensors.*.tmp")]  # written, never renamed: not a shard
    resumed = subprocess.run([sys.executable, "-m", "semid", *args, "-o", str(out)], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed: 2 of {SHARDS} shard(s)" in resumed.stderr and not work.exists()
    threads = torch.get_num_threads()
    try:  # the reference in this process, at the one thread the two runs above used (--threads 1)
        reference = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "reference")])
    finally:
        torch.set_num_threads(threads)
    assert reference.exit_code == 0, reference.output
    for name in ("embeddings.safetensors", "texts.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def test_half_precision_on_the_cpu_exits_2_naming_the_flag(tmp_path, items):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["embed", str(items), "-o", str(out), "--device", "cpu", "--dtype", "bfloat16"])
    assert result.exit_code == 2, result.output
    assert "--dtype bfloat16 needs a CUDA device" in result.output and not out.exists()
