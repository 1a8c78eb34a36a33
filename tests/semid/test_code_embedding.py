"""CodeEmbedding: output shapes, initialisation from codebooks, padding index 0."""

from __future__ import annotations

import pytest
import torch
from semid import CodeEmbedding, SemidError
from semid.code_embedding import project_codebook

CODES = torch.tensor([[0, 1, 0], [2, 0, 1], [1, 1, 0]])  # 3 items, 2 levels + a dedup column
SIZES = [3, 2, 2]


def books(dim: int = 4) -> list:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(3, dim, generator=generator), torch.randn(2, dim, generator=generator), None]


@pytest.mark.parametrize("combine, shape", [("sum", (2, 5, 4)), ("concat", (2, 5, 12)), ("levels", (2, 5, 3, 4))])
def test_output_shapes(combine, shape):
    module = CodeEmbedding(CODES, SIZES, books(), combine=combine)
    index = torch.tensor([[0, 1, 2, 1, 0], [2, 2, 1, 0, 0]])
    assert module(index).shape == shape
    assert module.item_codes(index).shape == (2, 5, 3)


def test_tables_copy_codebooks_when_dims_match_and_sum_is_the_lookup_sum():
    cb = books()
    torch.manual_seed(0)  # the dedup column's random init
    module = CodeEmbedding(CODES, SIZES, cb, combine="levels")
    assert torch.equal(module.levels[0].weight, cb[0]) and torch.equal(module.levels[1].weight, cb[1])
    out = module(torch.tensor([1]))[0]  # item 1: codes (2, 0, 1)
    assert torch.equal(out[0], cb[0][2]) and torch.equal(out[1], cb[1][0])
    torch.manual_seed(0)
    summed = CodeEmbedding(CODES, SIZES, cb)(torch.tensor([1]))[0]
    assert torch.allclose(summed, out.sum(0))


def test_dedup_column_gets_small_normal_init():
    torch.manual_seed(0)
    module = CodeEmbedding(torch.zeros(5, 1, dtype=torch.long), [4000], [None], dim=16)
    assert abs(module.levels[0].weight.std().item() - 0.02) < 0.002


def test_projection_onto_principal_directions_is_deterministic_and_keeps_variance():
    generator = torch.Generator().manual_seed(1)
    # variance concentrated on 2 of 6 directions
    codebook = torch.randn(50, 6, generator=generator) * torch.tensor([5.0, 3.0, 0.1, 0.1, 0.1, 0.1])
    projected = project_codebook(codebook, 2)
    assert projected.shape == (50, 2)
    assert torch.equal(projected, project_codebook(codebook, 2))
    centred = codebook - codebook.mean(0)
    kept = (projected - projected.mean(0)).pow(2).sum() / centred.pow(2).sum()
    assert kept > 0.99
    # the same codebook with flipped axes gives the same table (signs are fixed, not left to the SVD)
    assert torch.allclose(project_codebook(-codebook, 2).abs(), projected.abs(), atol=1e-5)
    padded = project_codebook(codebook, 9)
    assert torch.equal(padded[:, :6], codebook) and torch.equal(padded[:, 6:], torch.zeros(50, 3))


def test_init_std_rescales_each_table():
    module = CodeEmbedding(CODES, SIZES, books(), dim=4, init_std=0.5)
    for table in module.levels:
        assert table.weight.std().item() == pytest.approx(0.5, rel=1e-5)


def test_padding_index_zero_is_exactly_zero_also_after_training():
    module = CodeEmbedding(CODES, SIZES, books(), padding_idx0=True, combine="concat")
    index = torch.tensor([[0, 1, 2, 3, 0]])
    assert module.item_codes(torch.tensor([0, 1])).tolist() == [[-1, -1, -1], CODES[0].tolist()]
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    for _ in range(3):
        optimizer.zero_grad()
        module(index).pow(2).sum().neg().backward()  # push every output away from zero
        optimizer.step()
    out = module(index)
    assert torch.equal(out[0, 0], torch.zeros(12)) and torch.equal(out[0, 4], torch.zeros(12))
    assert out[0, 1].abs().sum() > 0
    # index i >= 1 is item row i - 1
    plain = CodeEmbedding(CODES, SIZES, books(), combine="concat")
    for p_table, table in zip(plain.levels, module.levels):
        p_table.weight.data.copy_(table.weight.data)
    assert torch.equal(module(torch.tensor([3])), plain(torch.tensor([2])))


def test_bad_arguments():
    with pytest.raises(SemidError, match="field 'combine'"):
        CodeEmbedding(CODES, SIZES, books(), combine="mean")
    with pytest.raises(SemidError, match="field 'dim'"):
        CodeEmbedding(CODES[:, 2:], [2], [None])
    with pytest.raises(SemidError, match="field 'codebooks' level 1 has 3 rows"):
        CodeEmbedding(CODES[:, :1], [4], [torch.zeros(3, 4)])


def test_stacked_codes_index_the_level_tables_end_to_end():
    codes = torch.tensor([[0, 2, 1], [3, 0, 4]])
    emb = CodeEmbedding(codes, [4, 3, 5], [None, None, None], dim=6, combine="levels")
    assert emb.n_codes == 12
    stacked = emb.stacked_codes(torch.tensor([0, 1]))
    assert stacked.tolist() == [[0, 4 + 2, 7 + 1], [3, 4 + 0, 7 + 4]]
    tables = torch.cat([table.weight for table in emb.levels])  # (12, 6): the same index space
    torch.testing.assert_close(tables[stacked], emb(torch.tensor([0, 1])))
