"""Collision statistics on a hand-computed example, and the dedup level."""

from __future__ import annotations

import math

import pytest
import torch
from semid import SemidError, collision_stats, dedup_codes, format_stats

# 6 items, 2 levels of K = (2, 3):
#   (0,0) x3, (0,1) x1, (1,2) x2  -> 3 unique tuples
CODES = torch.tensor([[0, 0], [0, 1], [0, 0], [1, 2], [0, 0], [1, 2]])


def test_hand_computed_statistics():
    stats = collision_stats(CODES, [2, 3], reconstruction_error=0.25)
    assert stats["items"] == 6 and stats["levels"] == 2 and stats["codebook_sizes"] == [2, 3]
    assert stats["unique_tuples"] == 3
    assert stats["collision_rate"] == pytest.approx(1 - 3 / 6)
    assert stats["colliding_items_share"] == pytest.approx(5 / 6)  # groups of 3 and 2 collide
    assert stats["largest_group"] == 3
    assert stats["utilisation"] == pytest.approx(3 / (2 * 3))
    assert stats["distinct_prefixes"] == [2, 3]
    level1, level2 = stats["per_level"]
    # level 1: code 0 x4, code 1 x2
    assert (level1["used"], level1["usage"]) == (2, 1.0)
    assert level1["perplexity"] == pytest.approx(math.exp(-(4 / 6 * math.log(4 / 6) + 2 / 6 * math.log(2 / 6))))
    # level 2: code 0 x3, code 1 x1, code 2 x2
    assert (level2["used"], level2["usage"]) == (3, 1.0)
    p = [3 / 6, 1 / 6, 2 / 6]
    assert level2["perplexity"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))
    assert stats["reconstruction_error"] == 0.25


def test_collapsed_level_shows_in_perplexity_not_usage():
    # Every code is used once, but one code takes 97 of 100 items: usage 100%, perplexity ~1.2.
    column = torch.cat([torch.zeros(97, dtype=torch.long), torch.tensor([1, 2, 3])]).unsqueeze(1)
    level = collision_stats(column, [4])["per_level"][0]
    assert level["usage"] == 1.0
    assert level["perplexity"] < 1.3


def test_utilisation_of_huge_codebooks_does_not_overflow():
    stats = collision_stats(torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]), [512] * 4)
    assert stats["utilisation"] == pytest.approx(2 / 512**4)


def test_dedup_numbers_items_within_a_tuple_in_row_order():
    deduped = dedup_codes(CODES)
    assert deduped[:, :2].tolist() == CODES.tolist()
    assert deduped[:, 2].tolist() == [0, 0, 1, 0, 2, 1]
    after = collision_stats(deduped, [2, 3, 3])
    assert after["collision_rate"] == 0.0 and after["largest_group"] == 1


def test_dedup_makes_every_tuple_unique_on_many_collisions():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 3, (2000, 2), generator=generator)  # 9 tuples for 2000 items
    deduped = dedup_codes(codes)
    assert torch.unique(deduped, dim=0).shape[0] == 2000
    # the extra column counts up from 0 inside each group
    _, counts = torch.unique(codes, dim=0, return_counts=True)
    assert int(deduped[:, -1].max()) + 1 == int(counts.max())


def test_bad_codes_are_rejected():
    with pytest.raises(SemidError, match="field 'codes'"):
        collision_stats(torch.tensor([[0, 3]]), [2, 3])
    with pytest.raises(SemidError, match="field 'codebook_sizes'"):
        collision_stats(CODES, [2])


def test_format_stats_mentions_every_figure():
    text = format_stats(collision_stats(CODES, [2, 3], reconstruction_error=0.25))
    for expected in ("collision rate         50.00 %", "largest group          3", "utilisation            50 %",
                     "distinct prefixes      2 / 3", "relative recon. error  0.2500"):
        assert expected in text


def dedup_reference_loop(codes: torch.Tensor) -> torch.Tensor:
    """The dedup column by its definition: one pass over the rows, counting each tuple seen so far."""
    seen: dict[tuple[int, ...], int] = {}
    column = []
    for row in codes.tolist():
        key = tuple(row)
        column.append(seen.get(key, 0))
        seen[key] = column[-1] + 1
    return torch.cat([codes, torch.tensor(column).unsqueeze(1)], dim=1)


def dedup_previous_torch(codes: torch.Tensor) -> torch.Tensor:
    """semid's dedup before it moved to numpy (torch.unique over rows, then a stable argsort)."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    n = codes.shape[0]
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - starts[inverse[order]]
    return torch.cat([codes, rank.unsqueeze(1)], dim=1)


@pytest.mark.parametrize("shape, high", [((5000, 3), (3, 2, 4)), ((3000, 4), (256, 256, 256, 256)),
                                         ((1, 2), (5, 5)), ((400, 1), (7,))])
def test_dedup_equals_the_reference_loop_and_the_previous_implementation(shape, high):
    generator = torch.Generator().manual_seed(sum(shape))
    codes = torch.stack([torch.randint(0, h, (shape[0],), generator=generator) for h in high], dim=1)
    if shape[0] > 10:
        codes[shape[0] // 2:] = codes[: shape[0] - shape[0] // 2]  # repeat the first half: collisions at any K
    deduped = dedup_codes(codes)
    assert torch.equal(deduped, dedup_reference_loop(codes))
    assert torch.equal(deduped, dedup_previous_torch(codes))


def test_statistics_agree_with_torch_unique_on_random_codes():
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 4, (3000, 3), generator=generator)
    stats = collision_stats(codes, [4, 4, 4])
    _, counts = torch.unique(codes, dim=0, return_counts=True)
    assert stats["unique_tuples"] == counts.numel() and stats["largest_group"] == int(counts.max())
    assert stats["colliding_items_share"] == int(counts[counts > 1].sum()) / 3000
    assert stats["distinct_prefixes"] == [torch.unique(codes[:, :d], dim=0).shape[0] for d in (1, 2, 3)]
