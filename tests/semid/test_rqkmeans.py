"""rqkmeans: residual k-means against hand-built references, its k-means backends, and an OUT_DIR that
loads, re-encodes and feeds CodeEmbedding. (Shapes, seeds and save/load of every kind: test_quantize.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import semid
import torch
from semid import QuantizerConfig, SemidError, build_quantizer, load_quantizer
from semid.principal import fixed_signs, principal_axes
from semid.quantize import kmeans
from semid.quantize.kmeans import faiss_available

BACKENDS = ["torch"] + (["faiss"] if faiss_available() else [])


def fit(x: torch.Tensor, **config) -> semid.Quantizer:
    return build_quantizer(QuantizerConfig(kind="rqkmeans", **config)).fit(x)


def two_by_two(m: int = 25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, sign1, sign2): 4m points at ±10 e1 ± 1 e2 + small noise on e3..e8, so level 1 must split on the sign
    of e1 and level 2, on the residual, on the sign of e2."""
    generator = torch.Generator().manual_seed(seed)
    sign1 = torch.tensor([1.0, 1.0, -1.0, -1.0]).repeat_interleave(m)
    sign2 = torch.tensor([1.0, -1.0, 1.0, -1.0]).repeat_interleave(m)
    x = torch.zeros(4 * m, 8)
    x[:, 0], x[:, 1] = 10 * sign1, sign2
    x[:, 2:] = 0.01 * torch.randn(4 * m, 6, generator=generator)
    return x, sign1, sign2


def group_means(values: torch.Tensor, labels: torch.Tensor) -> dict[float, torch.Tensor]:
    return {float(label): values[labels == label].mean(0) for label in labels.unique()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_clusters_per_level_match_the_hand_built_residual_decomposition(backend):
    x, sign1, sign2 = two_by_two()
    q = fit(x, levels=2, codebook_size=2, kmeans_backend=backend)
    codes = q.encode(x)
    book1, book2 = q.codebooks
    # level 1: one code per sign of e1, its centroid the mean of that half
    assert codes[sign1 > 0, 0].unique().numel() == 1 and codes[sign1 < 0, 0].unique().numel() == 1
    assert codes[0, 0] != codes[-1, 0]
    means1 = group_means(x, sign1)
    for sign, mean in means1.items():
        torch.testing.assert_close(book1[codes[sign1 == sign][0, 0]], mean, rtol=0, atol=1e-5)
    # level 2 quantizes the level-1 residuals: one code per sign of e2, centroids their means
    residual = x - book1[codes[:, 0]]
    assert codes[sign2 > 0, 1].unique().numel() == 1 and codes[sign2 < 0, 1].unique().numel() == 1
    for sign, mean in group_means(residual, sign2).items():
        torch.testing.assert_close(book2[codes[sign2 == sign][0, 1]], mean, rtol=0, atol=1e-5)
    # the decomposition sums back to the centroid path, and what is left is the noise
    assert torch.equal(q.decode(codes), book1[codes[:, 0]] + book2[codes[:, 1]])
    assert float((x - q.decode(codes)).abs().max()) < 0.1


def reference_encode(x: torch.Tensor, books: list[torch.Tensor]) -> torch.Tensor:
    """Residual encoding one item and one level at a time, by the definition."""
    rows = []
    for item in x:
        residual, row = item.double().clone(), []
        for book in books:
            code = int(((book.double() - residual) ** 2).sum(1).argmin())
            row.append(code)
            residual -= book[code].double()
        rows.append(row)
    return torch.tensor(rows)


def test_chunked_encode_equals_the_item_by_item_definition(clustered, monkeypatch):
    q = fit(clustered, levels=3, codebook_size=8)
    monkeypatch.setattr(kmeans, "DISTANCE_CHUNK", 7)  # several chunks, and a ragged last one
    assert torch.equal(q.encode(clustered), reference_encode(clustered, q.codebooks))


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_codebooks(clustered, backend):
    a = fit(clustered, levels=3, codebook_size=8, kmeans_backend=backend)
    b = fit(clustered, levels=3, codebook_size=8, kmeans_backend=backend)
    c = fit(clustered, levels=3, codebook_size=8, kmeans_backend=backend, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.codebooks, b.codebooks))
    assert not all(torch.equal(p, q) for p, q in zip(a.codebooks, c.codebooks))
    assert a.fit_info == {"items": 300, "sampled": False, "kmeans_backend": backend}


def test_kmeans_plus_plus_and_lloyd_survive_fewer_distinct_points_than_codes():
    # 3 distinct points, 5 codes: k-means++ runs out of spread, Lloyd empties clusters; nothing is NaN and
    # every point is its own centroid.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).repeat(4, 1)
    q = fit(x, levels=1, codebook_size=5, kmeans_backend="torch")
    assert torch.isfinite(q.codebooks[0]).all()
    assert torch.equal(q.decode(q.encode(x)), x)


def test_an_emptied_cluster_takes_the_farthest_item_and_lloyd_recovers():
    x, sign1, _ = two_by_two()
    start = torch.stack([x[0], x[0]])  # twice the same start: the second cluster is empty after one step
    centroids = kmeans.lloyd(x, start, iters=10)
    means = group_means(x, sign1)
    assert {round(float(c[0])) for c in centroids} == {10, -10}
    for c in centroids:
        torch.testing.assert_close(c, means[1.0 if c[0] > 0 else -1.0], rtol=0, atol=1e-5)


def test_faiss_backend_without_faiss_is_a_user_error(clustered, monkeypatch, tmp_path):
    monkeypatch.setattr(kmeans, "faiss_available", lambda: False)
    expected = r"field 'kmeans_backend' is 'faiss' but faiss is not installed.*semid\[faiss\]"
    with pytest.raises(SemidError, match=expected):
        fit(clustered, levels=1, codebook_size=4, kmeans_backend="faiss")
    assert kmeans.resolve_backend("auto") == "torch"
    # encode_catalogue says so before it reads or embeds anything
    with pytest.raises(SemidError, match=expected):
        semid.encode_catalogue(tmp_path / "missing.jsonl", tmp_path / "out",
                               quantizer=QuantizerConfig(kind="rqkmeans", kmeans_backend="faiss"))
    assert not (tmp_path / "out").exists()


def test_config_rejects_unknown_backend_and_bad_iterations():
    with pytest.raises(SemidError, match="field 'kmeans_backend' is 'sklearn'; choose one of auto, faiss, torch"):
        QuantizerConfig(kind="rqkmeans", kmeans_backend="sklearn")
    with pytest.raises(SemidError, match="field 'lloyd_iters' must be a positive integer"):
        QuantizerConfig(kind="rqkmeans", lloyd_iters=0)


def test_out_dir_loads_reencodes_and_feeds_code_embedding(tmp_path, clustered):
    np.save(tmp_path / "emb.npy", clustered.numpy())
    (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
    out = tmp_path / "out"
    config = QuantizerConfig(kind="rqkmeans", levels=3, codebook_size=8)
    s = semid.encode_catalogue(None, out, quantizer=config, embeddings=tmp_path / "emb.npy",
                               ids=tmp_path / "ids.txt", dedup=True)
    assert s.stats["quantizer"]["kind"] == "rqkmeans" and s.stats["fit"]["kmeans_backend"] in ("torch", "faiss")
    assert [tuple(c.shape) for c in s.codebooks[:3]] == [(8, 48)] * 3 and s.codebooks[3] is None
    loaded = load_quantizer(out)
    assert torch.equal(loaded.encode(clustered), s.codes[:, :3])
    assert torch.equal(loaded.codebooks[0], s.codebooks[0])
    table = s.embedding(dim=48, padding_idx0=True)  # d_l == dim: tables start as copies of the codebooks
    assert torch.equal(table.levels[0].weight.detach(), s.codebooks[0])
    assert table(torch.tensor([[0, 1, 300]])).shape == (1, 3, 48)


def test_principal_axes_match_an_svd_whatever_the_chunking(clustered):
    mean, axes, kept = principal_axes(clustered, 5, chunk=7)  # ragged chunks: the sums must not care
    centred = clustered.double() - clustered.double().mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    reference = fixed_signs(vh[:5].T)
    torch.testing.assert_close(mean, clustered.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(axes.double(), reference, rtol=0, atol=1e-5)
    assert kept == pytest.approx(float((singular[:5] ** 2).sum() / (singular**2).sum()), rel=1e-6)
    # fixed signs: each axis' largest entry is positive, so a flipped solver answer gives the same axes
    assert bool((axes[axes.abs().argmax(0), torch.arange(5)] > 0).all())
    torch.testing.assert_close(fixed_signs(-reference), reference)


def test_pca_dim_clusters_the_principal_coordinates_and_decodes_back(clustered, tmp_path):
    # the same k-means on coordinates projected by hand gives the same codes; decode maps back to [n, d]
    q = fit(clustered, levels=3, codebook_size=8, pca_dim=6)
    centred = clustered.double() - clustered.double().mean(0)
    axes = fixed_signs(torch.linalg.svd(centred, full_matrices=False)[2][:6].T)
    coordinates = (centred @ axes).float()
    by_hand = fit(coordinates, levels=3, codebook_size=8)
    codes = q.encode(clustered)
    assert torch.equal(codes, by_hand.encode(coordinates))
    assert [tuple(book.shape) for book in q.codebooks] == [(8, 6)] * 3
    expected = by_hand.decode(codes).double() @ axes.T + clustered.double().mean(0)
    torch.testing.assert_close(q.decode(codes).double(), expected, rtol=0, atol=1e-4)
    assert 0 < q.fit_info["pca_variance_kept"] < 1
    q.save(tmp_path)
    loaded = load_quantizer(tmp_path)
    assert loaded.config.pca_dim == 6 and torch.equal(loaded.encode(clustered), codes)


def test_pca_dim_is_checked():
    with pytest.raises(SemidError, match="field 'pca_dim' applies to rqkmeans only, not rq"):
        QuantizerConfig(kind="rq", pca_dim=4)
    with pytest.raises(SemidError, match="field 'pca_dim' must be 0"):
        QuantizerConfig(kind="rqkmeans", pca_dim=-1)
    with pytest.raises(SemidError, match="field 'pca_dim' is 9, more than the embeddings' 8 dimensions"):
        fit(torch.randn(40, 8), levels=1, codebook_size=4, pca_dim=9)
