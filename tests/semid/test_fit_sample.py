"""fit_sample: every kind fits on a seeded random sample, encodes all items; a sample covering every item is
exactly the full fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from semid import QuantizerConfig, SemidError, build_quantizer, encode_catalogue
from semid.cli import main
from semid.quantize import QUANTIZER_CLASSES
from semid.quantize.base import sample_rows

FAST = dict(levels=3, codebook_size=8, epochs=3, batch_size=64, hidden_dims=(32, 16), latent_dim=8, refine_iters=3)


def fitted(kind: str, x: torch.Tensor, **overrides):
    return build_quantizer(QuantizerConfig(kind=kind, **{**FAST, **overrides})).fit(x)


@pytest.mark.parametrize("kind", sorted(QUANTIZER_CLASSES))
def test_a_sample_of_at_least_n_items_is_the_full_fit(kind, clustered):
    full = fitted(kind, clustered, fit_sample=0)
    codes = full.encode(clustered)
    for sample in (300, 301, 10**6):
        q = fitted(kind, clustered, fit_sample=sample)
        assert torch.equal(q.encode(clustered), codes), sample
        assert all(torch.equal(a, b) for a, b in zip(q.codebooks, full.codebooks)), sample
        assert q.fit_info["items"] == 300 and not q.fit_info["sampled"]


def test_sample_rows_are_seeded_sorted_and_distinct():
    a = sample_rows(1000, 100, seed=1)
    assert torch.equal(a, sample_rows(1000, 100, seed=1))
    assert not torch.equal(a, sample_rows(1000, 100, seed=2))
    assert a.numel() == 100 and a.unique().numel() == 100 and torch.equal(a, a.sort().values)
    assert 0 <= int(a.min()) and int(a.max()) < 1000
    assert sample_rows(1000, 0, seed=1) is None and sample_rows(1000, 1000, seed=1) is None


@pytest.mark.parametrize("kind", ["rq", "rqkmeans"])
def test_the_fit_sees_only_the_sample_and_encode_sees_every_item(kind, clustered):
    q = fitted(kind, clustered, fit_sample=100)
    assert q.fit_info["items"] == 100 and q.fit_info["sampled"]
    on_sample = fitted(kind, clustered[sample_rows(300, 100, seed=42)], fit_sample=0)
    assert all(torch.equal(a, b) for a, b in zip(q.codebooks, on_sample.codebooks))
    assert q.encode(clustered).shape == (300, 3)
    again = fitted(kind, clustered, fit_sample=100)
    other_seed = fitted(kind, clustered, fit_sample=100, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(q.codebooks, again.codebooks))
    assert not all(torch.equal(a, b) for a, b in zip(q.codebooks, other_seed.codebooks))


def test_config_checks_the_sample_against_the_codebook():
    assert QuantizerConfig().fit_sample == 100_000
    with pytest.raises(SemidError, match="field 'fit_sample' is 5, fewer items than the largest codebook size 8; "
                                         "use --fit-sample 0"):
        QuantizerConfig(codebook_size=(8, 4, 4, 4), fit_sample=5)
    with pytest.raises(SemidError, match="field 'fit_sample' must be 0 \\(all items\\) or a positive integer"):
        QuantizerConfig(fit_sample=-1)


def test_stats_record_the_fit_and_the_cli_flag(tmp_path, clustered):
    np.save(tmp_path / "emb.npy", clustered.numpy())
    (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
    s = encode_catalogue(None, tmp_path / "api", quantizer=QuantizerConfig(kind="rq", fit_sample=50, **{
        k: FAST[k] for k in ("levels", "codebook_size", "refine_iters")}), embeddings=tmp_path / "emb.npy",
        ids=tmp_path / "ids.txt")
    assert s.stats["fit"] == {"items": 50, "sampled": True} and s.codes.shape == (300, 3)

    runner = CliRunner()
    base = ["encode", "--embeddings", str(tmp_path / "emb.npy"), "--ids", str(tmp_path / "ids.txt"),
            "--quantizer", "rqkmeans", "--levels", "2", "--codebook-size", "8", "--quiet"]
    ok = runner.invoke(main, [*base, "-o", str(tmp_path / "cli"), "--fit-sample", "120",
                              "--kmeans-backend", "torch"])
    assert ok.exit_code == 0, ok.output
    stats = json.loads((tmp_path / "cli/stats.json").read_text(encoding="utf-8"))
    assert stats["quantizer"]["fit_sample"] == 120 and stats["quantizer"]["kind"] == "rqkmeans"
    assert stats["fit"] == {"items": 120, "sampled": True, "kmeans_backend": "torch"}
    small = runner.invoke(main, [*base, "-o", str(tmp_path / "bad"), "--fit-sample", "3"])
    assert small.exit_code == 2 and "--fit-sample" in small.output and "fit_sample" in small.output
    negative = runner.invoke(main, [*base, "-o", str(tmp_path / "bad"), "--fit-sample", "-1"])
    assert negative.exit_code == 2 and "--fit-sample" in negative.output
