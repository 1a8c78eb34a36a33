"""encode_catalogue end to end: OUT_DIR contents, semid.load, atomic output, the embedding cache."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import semid
import torch
from safetensors.torch import load_file
from semid import EmbedConfig, QuantizerConfig, ReadConfig, SemidError, encode_catalogue, load, load_quantizer

FAST = QuantizerConfig(kind="rqvae", levels=3, codebook_size=8, epochs=2, batch_size=64,
                       hidden_dims=(32, 16), latent_dim=8)


@pytest.fixture()
def embedded(tmp_path, clustered):
    """clustered.npy + ids.txt (300 rows, ids r0..r299)."""
    np.save(tmp_path / "emb.npy", clustered.numpy())
    (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
    return tmp_path / "emb.npy", tmp_path / "ids.txt"


def test_outputs_and_load_from_precomputed_embeddings(tmp_path, embedded, clustered):
    emb, ids = embedded
    out = tmp_path / "out"
    result = encode_catalogue(None, out, quantizer=FAST, embeddings=emb, ids=ids, dedup=True, export=["recbole"])
    names = sorted(p.name for p in out.iterdir())
    assert names == [".lock", "embeddings.safetensors", "quantizer.json", "quantizer.safetensors", "semantic_ids.jsonl",
                     "semid.item", "semid.safetensors", "stats.json"]  # no texts.jsonl: none were embedded
    s = load(out)
    assert s.ids == [f"r{i}" for i in range(300)] and s.ids == result.ids
    assert s.codes.shape == (300, 4) and s.codes.dtype == torch.long and s.dedup
    assert s.codebook_sizes[:3] == [8, 8, 8] and s.codebook_sizes[3] == int(s.codes[:, 3].max()) + 1
    assert [None if c is None else tuple(c.shape) for c in s.codebooks] == [(8, 8), (8, 8), (8, 8), None]
    assert torch.equal(s.embeddings, clustered) and s.texts is None
    assert torch.unique(s.codes, dim=0).shape[0] == 300
    assert s.index("r5") == 5 and s.sid("r5") == s.codes[5].tolist()
    with pytest.raises(KeyError, match="item id 'nope' is not in"):
        s.index("nope")
    lines = (out / "semantic_ids.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[5]) == {"id": "r5", "sid": s.codes[5].tolist()}
    recbole = (out / "semid.item").read_text(encoding="utf-8").splitlines()
    assert recbole[0] == "item_id:token\tsid:token_seq"
    c = s.codes[0].tolist()
    assert recbole[1] == f"r0\t1_{c[0]} 2_{c[1]} 3_{c[2]} 4_{c[3]}"
    stats = s.stats
    assert stats["items"] == 300 and stats["quantizer"]["kind"] == "rqvae"
    assert stats["collisions"]["levels"] == 3 and stats["collisions_after_dedup"]["collision_rate"] == 0.0
    assert 0 < stats["reconstruction_error"] == stats["collisions"]["reconstruction_error"]
    assert set(stats["timings_s"]) == {"read", "fit", "encode"}
    # the saved quantizer reproduces the codes (without the dedup column)
    assert torch.equal(load_quantizer(out).encode(clustered), s.codes[:, :3])
    module = s.embedding(dim=6, padding_idx0=True)
    assert module(torch.tensor([[0, 1, 300]])).shape == (1, 3, 6)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_same_seed_same_files(tmp_path, embedded, device):
    emb, ids = embedded
    config = dataclasses.replace(FAST, device=device)
    a = encode_catalogue(None, tmp_path / "a", quantizer=config, embeddings=emb, ids=ids)
    b = encode_catalogue(None, tmp_path / "b", quantizer=config, embeddings=emb, ids=ids)
    assert torch.equal(a.codes, b.codes)
    assert (tmp_path / "a/semantic_ids.jsonl").read_bytes() == (tmp_path / "b/semantic_ids.jsonl").read_bytes()
    if device == "cpu":
        assert (tmp_path / "a/quantizer.safetensors").read_bytes() == \
            (tmp_path / "b/quantizer.safetensors").read_bytes()
    else:  # CUDA's atomic-add reductions may sum in another order: the weights agree to rounding only
        weights_a = load_file(tmp_path / "a/quantizer.safetensors")
        weights_b = load_file(tmp_path / "b/quantizer.safetensors")
        assert weights_a.keys() == weights_b.keys()
        for name in weights_a:
            torch.testing.assert_close(weights_a[name], weights_b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_embeddings_are_aligned_to_the_item_file_order(tmp_path, clustered, write_jsonl):
    path = tmp_path / "emb.safetensors"
    path.write_bytes(semid.vectors.embeddings_bytes([f"r{i}" for i in range(300)], clustered))
    items = write_jsonl([{"id": f"r{i}", "title": "t"} for i in reversed(range(300))])
    s = encode_catalogue(items, tmp_path / "out", quantizer=FAST, embeddings=path)
    assert s.ids[0] == "r299" and torch.equal(s.embeddings[0], clustered[299])
    missing = write_jsonl([{"id": "r1"}, {"id": "zz"}], name="more.jsonl")
    with pytest.raises(SemidError) as info:
        encode_catalogue(missing, tmp_path / "out2", quantizer=FAST, embeddings=path)
    assert str(info.value).startswith(f"{missing}:2: field 'id' names item 'zz', which has no row in")


def test_rows_without_ids_need_a_matching_item_file(tmp_path, embedded, write_jsonl):
    emb, _ = embedded
    with pytest.raises(SemidError, match="field 'ids' are absent: pass --ids"):
        encode_catalogue(None, tmp_path / "out", quantizer=FAST, embeddings=emb)
    short = write_jsonl([{"id": "a"}, {"id": "b"}])
    with pytest.raises(SemidError, match="its 300 rows do not match the 2 items"):
        encode_catalogue(short, tmp_path / "out", quantizer=FAST, embeddings=emb)


def test_failure_leaves_nothing_new_in_out_dir(tmp_path, embedded):
    emb, ids = embedded
    big = QuantizerConfig(kind="rq", levels=2, codebook_size=512)
    out = tmp_path / "fresh"
    with pytest.raises(SemidError, match="more codes than the 300 items"):
        encode_catalogue(None, out, quantizer=big, embeddings=emb, ids=ids)
    assert not out.exists()
    existing = tmp_path / "existing"
    encode_catalogue(None, existing, quantizer=FAST, embeddings=emb, ids=ids)
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    with pytest.raises(SemidError):
        encode_catalogue(None, existing, quantizer=big, embeddings=emb, ids=ids)
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before  # no temp files, nothing changed


def test_failure_while_writing_removes_staged_files(tmp_path, embedded, monkeypatch):
    emb, ids = embedded
    out = tmp_path / "out"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(semid.pipeline, "recbole_item", broken)
    with pytest.raises(OSError, match="disk full"):
        encode_catalogue(None, out, quantizer=FAST, embeddings=emb, ids=ids, export=["recbole"])
    assert not out.exists()


def test_text_path_with_a_local_model_writes_texts_and_reuses_the_cache(tmp_path, item_records, write_jsonl,
                                                                         tiny_bert, monkeypatch):
    items = write_jsonl(item_records[:60])
    embed = EmbedConfig(model=str(tiny_bert), batch_size=16)
    small = QuantizerConfig(kind="rq", levels=2, codebook_size=4, refine_iters=2)
    cache = tmp_path / "cache"
    first = encode_catalogue(items, tmp_path / "out", read=ReadConfig(template="{title}"), embed=embed,
                             quantizer=small, cache_dir=cache)
    assert first.texts[0] == " ".join(item_records[0]["title"].replace("&amp;", "&").split())
    assert first.embeddings.shape == (60, 32)
    assert torch.allclose(first.embeddings.norm(dim=1), torch.ones(60), atol=1e-5)
    assert first.stats["source"]["embedding_cache_hit"] is False and len(list(cache.iterdir())) == 1

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder ran although the cache holds these texts")

    monkeypatch.setattr(semid.embed, "Embedder", no_encoder)
    second = encode_catalogue(items, tmp_path / "out", read=ReadConfig(template="{title}"), embed=embed,
                              quantizer=small, cache_dir=cache)
    assert second.stats["source"]["embedding_cache_hit"] is True
    assert torch.equal(second.embeddings, first.embeddings) and torch.equal(second.codes, first.codes)


def test_a_new_run_removes_stale_files(tmp_path, item_records, write_jsonl, tiny_bert, embedded):
    items = write_jsonl(item_records[:30])
    out = tmp_path / "out"
    small = QuantizerConfig(kind="vq", levels=1, codebook_size=4, refine_iters=1)
    encode_catalogue(items, out, embed=EmbedConfig(model=str(tiny_bert)), quantizer=small, cache_dir=None,
                     export=["recbole"])
    assert (out / "texts.jsonl").is_file() and (out / "semid.item").is_file()
    emb, ids = embedded
    s = encode_catalogue(None, out, quantizer=small, embeddings=emb, ids=ids)
    assert not (out / "texts.jsonl").exists() and not (out / "semid.item").exists()
    assert s.texts is None and len(s) == 300


def test_load_rejects_what_is_not_an_out_dir(tmp_path):
    with pytest.raises(SemidError, match="is this an OUT_DIR"):
        load(tmp_path)


def test_a_half_precision_checkpoint_is_embedded_with_fp32_weights(tmp_path, tiny_bert):
    # transformers 5 loads a checkpoint in the dtype it was saved in; semid's `precision` must still rule
    import shutil

    from semid.embed import Embedder
    from transformers import BertModel

    half = tmp_path / "half-bert"
    shutil.copytree(tiny_bert, half)
    upcast = BertModel.from_pretrained(tiny_bert).half().float()  # the fp32 values the fp16 file holds
    BertModel.from_pretrained(tiny_bert).half().save_pretrained(half)
    embedder = Embedder(EmbedConfig(model=str(half), device="cpu"))
    assert {p.dtype for p in embedder.model.parameters()} == {torch.float32}
    texts = ["velvet matte lipstick", "rose"]
    reference = Embedder(EmbedConfig(model=str(half), device="cpu"))
    reference.model = upcast.eval()
    assert torch.equal(embedder.embed(texts), reference.embed(texts))
