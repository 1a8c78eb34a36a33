"""Quantizers: shapes, k-means init on all items, determinism, per-level sizes, save/load round trip."""

from __future__ import annotations

import pytest
import torch
from semid import QuantizerConfig, SemidError, build_quantizer, load_quantizer, relative_error
from semid.quantize import QUANTIZER_CLASSES, Quantizer

# Small and fast: a few rqvae epochs are enough to exercise training on 300 x 48 inputs.
FAST = dict(levels=3, codebook_size=8, epochs=3, batch_size=64, hidden_dims=(32, 16), latent_dim=8, refine_iters=3)
KINDS = sorted(QUANTIZER_CLASSES)


def fitted(kind: str, x: torch.Tensor, **overrides):
    return build_quantizer(QuantizerConfig(kind=kind, **{**FAST, **overrides})).fit(x)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_ranges_and_protocol(kind, clustered):
    q = fitted(kind, clustered)
    assert isinstance(q, Quantizer)
    codes = q.encode(clustered)
    assert codes.dtype == torch.long and codes.shape == (300, 3)
    assert int(codes.min()) >= 0 and int(codes.max()) < 8
    assert q.decode(codes).shape == clustered.shape
    books = q.codebooks
    assert len(books) == 3 and all(b.shape[0] == 8 and b.dtype == torch.float32 for b in books)
    expected_dim = {"rqvae": 8, "rq": 48, "pq": 16, "vq": 48, "rqkmeans": 48}[kind]
    assert all(b.shape[1] == expected_dim for b in books)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_codes_other_seed_other_codes(kind, clustered):
    a = fitted(kind, clustered).encode(clustered)
    b = fitted(kind, clustered).encode(clustered)
    c = fitted(kind, clustered, seed=7).encode(clustered)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fit_leaves_the_global_rng_alone(clustered):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fitted("rq", clustered)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_codes_and_reconstructions(kind, clustered, tmp_path):
    q = fitted(kind, clustered)
    q.save(tmp_path)
    loaded = load_quantizer(tmp_path)
    assert type(loaded) is type(q) and loaded.config == q.config
    codes = q.encode(clustered)
    assert torch.equal(loaded.encode(clustered), codes)
    assert torch.equal(loaded.decode(codes), q.decode(codes))
    assert all(torch.equal(a, b) for a, b in zip(loaded.codebooks, q.codebooks))


@pytest.mark.parametrize("kind", ["rqvae", "rq", "pq", "rqkmeans"])
def test_per_level_codebook_sizes_may_differ(kind, clustered):
    q = fitted(kind, clustered, codebook_size=(16, 8, 4))
    codes = q.encode(clustered)
    assert [b.shape[0] for b in q.codebooks] == [16, 8, 4]
    assert (codes.max(0).values < torch.tensor([16, 8, 4])).all()
    assert q.decode(codes).shape == clustered.shape


@pytest.mark.parametrize("kind", ["rq", "vq", "rqkmeans"])
def test_kmeans_initialisation_sees_all_items(kind):
    # Rows 0..149 sit around +e1, rows 150..299 around -e1. With k-means on ALL items and K = 2, the
    # two groups get the two codes; a first-batch-only init (all +e1) would split the first group.
    generator = torch.Generator().manual_seed(0)
    centre = torch.zeros(16)
    centre[0] = 5.0
    x = torch.cat([centre + 0.1 * torch.randn(150, 16, generator=generator),
                   -centre + 0.1 * torch.randn(150, 16, generator=generator)])
    q = build_quantizer(QuantizerConfig(kind=kind, levels=1, codebook_size=2, refine_iters=0)).fit(x)
    codes = q.encode(x)[:, 0]
    assert codes[:150].unique().numel() == 1 and codes[150:].unique().numel() == 1
    assert codes[0] != codes[150]


def test_rq_levels_refine_the_residual(clustered):
    one = fitted("rq", clustered, levels=1, codebook_size=8)
    three = fitted("rq", clustered)
    err_one = relative_error(clustered, one.decode(one.encode(clustered)))
    err_three = relative_error(clustered, three.decode(three.encode(clustered)))
    assert err_three < err_one


def test_vq_levels_are_independent_codebooks_over_the_whole_vector(clustered):
    q = fitted("vq", clustered, levels=2)
    first, second = q.codebooks
    assert first.shape == second.shape == (8, 48)
    assert not torch.allclose(first, second)  # own k-means start per level
    codes = q.encode(clustered)
    # decode = mean of the levels' code vectors
    assert torch.allclose(q.decode(codes), (first[codes[:, 0]] + second[codes[:, 1]]) / 2)


def test_pq_splits_dimensions_into_contiguous_subspaces():
    x = torch.randn(100, 10)
    q = build_quantizer(QuantizerConfig(kind="pq", levels=3, codebook_size=4, refine_iters=1)).fit(x)
    assert [b.shape[1] for b in q.codebooks] == [4, 3, 3]
    codes = q.encode(x)
    books = q.codebooks
    expected = torch.cat([books[level][codes[:, level]] for level in range(3)], dim=1)
    assert torch.equal(q.decode(codes), expected)
    with pytest.raises(SemidError, match="field 'levels' is 12, more than the 10 embedding dimensions"):
        build_quantizer(QuantizerConfig(kind="pq", levels=12, codebook_size=2)).fit(x)


def test_codebook_larger_than_items_is_a_user_error(clustered):
    with pytest.raises(SemidError, match=r"items\.jsonl: field 'codebook_size' is 512, more codes than the 300 items"):
        build_quantizer(QuantizerConfig(kind="rq", codebook_size=512)).fit(clustered, source="items.jsonl")


def test_non_finite_embeddings_name_the_row(clustered):
    bad = clustered.clone()
    bad[17, 3] = float("nan")
    with pytest.raises(SemidError, match=r"emb\.npy:18: field 'embeddings' row 18 holds NaN"):
        build_quantizer(QuantizerConfig(kind="rq", codebook_size=4)).fit(bad, source="emb.npy")


def test_encode_before_fit_and_wrong_dimension(clustered):
    q = build_quantizer(QuantizerConfig(kind="rq", levels=1, codebook_size=4))
    with pytest.raises(SemidError, match="not fitted"):
        q.encode(clustered)
    q.fit(clustered, progress=False)
    with pytest.raises(SemidError, match="dimension 10"):
        q.encode(torch.randn(5, 10))
    with pytest.raises(SemidError, match="field 'codes'"):
        q.decode(torch.tensor([[4]]))


def test_relative_error_definition():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    x_hat = torch.tensor([[3.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    assert relative_error(x, x_hat) == pytest.approx((4 / 5 + 0) / 2)  # zero rows are left out


def test_config_validation_and_json_round_trip():
    from semid.config import config_from_dict, config_to_dict

    config = QuantizerConfig(kind="pq", levels=2, codebook_size=(4, 8), hidden_dims=(8,))
    assert config_from_dict(QuantizerConfig, config_to_dict(config)) == config
    with pytest.raises(SemidError, match="unknown QuantizerConfig key"):
        config_from_dict(QuantizerConfig, {"levles": 3})
    with pytest.raises(SemidError, match="field 'codebook_size' gives 2 sizes for 3 levels"):
        QuantizerConfig(levels=3, codebook_size=(4, 4))
    with pytest.raises(SemidError, match="field 'kind'"):
        QuantizerConfig(kind="lfq")
