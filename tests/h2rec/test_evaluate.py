"""Ranks and metrics against a model whose scores are set by hand: ties, exclusion, both protocols."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from h2rec.config import EvalConfig
from h2rec.data import EvalSplit
from h2rec.evaluate import count_at_or_above, metrics_from_ranks, rank_targets
from torch import nn

NEG_INF = float("-inf")


class LastItemScores(nn.Module):
    """Scores item j for a user whose last item is i as ``table[i, j]``: every rank is known."""

    causal = True
    device = torch.device("cpu")

    def __init__(self, table: list[list[float]]):
        super().__init__()
        self.table = torch.tensor(table)

    def forward(self, items):
        last = items.gather(1, ((items != 0).sum(1) - 1)[:, None])[:, 0]
        return SimpleNamespace(last=lambda: last), None

    def score_all(self, last):
        scores = self.table[last].clone()
        scores[:, 0] = NEG_INF
        return scores


# items 1..5; row i = the scores after last item i (column 0 is padding)
MODEL = LastItemScores([
    [0.0] * 6,
    [0, 0.5, 0.9, 0.9, 0.1, 0.2],  # after 1: items 2 and 3 tie at the top
    [0.0] * 6,
    [0, 1.0, 0.0, 0.3, 0.8, 0.1],  # after 3: item 1 beats item 4
    [0.0] * 6,
    [0, 0.1, 0.9, 0.3, 0.7, 0.6],  # after 5: item 2 beats item 4
])
# histories of different lengths, so batches of 2 (sorted by length) mix the users' order
SPLIT = EvalSplit(users=np.arange(3),
                  histories=[np.array([2, 5, 1]), np.array([1, 3]), np.array([4, 5, 2, 4, 5])],
                  targets=np.array([2, 4, 4]))


def ranks(cfg: EvalConfig, candidates=None) -> list[int]:
    return rank_targets(MODEL, None, SPLIT, cfg, max_len=50, candidates=candidates).tolist()


def test_full_ranking_counts_ties_against_the_target():
    # user 0: item 3 ties with the target 2 -> rank 1; user 1: item 1 above; user 2: item 2 above
    assert ranks(EvalConfig(batch_size=2)) == [1, 1, 1]
    assert ranks(EvalConfig(batch_size=512)) == [1, 1, 1]


def test_excluding_the_history_keeps_a_repeated_target():
    # user 1 has seen item 1, which no longer counts; user 2's target 4 is also in its history
    # and must keep its score (else it would rank last); user 0 has not seen item 3
    assert ranks(EvalConfig(batch_size=2, exclude_history=True)) == [1, 0, 0]


def test_sampled_protocol_ranks_among_the_candidates_only():
    candidates = np.array([[4, 5], [2, 3], [1, 3]])
    assert ranks(EvalConfig(batch_size=2), candidates) == [0, 0, 0]
    candidates = np.array([[3, 5], [1, 3], [2, 1]])
    assert ranks(EvalConfig(batch_size=2), candidates) == [1, 1, 1]


def test_count_at_or_above_matches_the_boolean_count():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (7, 300), generator=g).float()
    scores[:, 0] = NEG_INF
    threshold = scores[:, 3:4].clone()
    expected = (scores >= threshold).sum(1)
    assert torch.equal(count_at_or_above(scores.clone(), threshold), expected)


def test_metrics_follow_their_definitions():
    out = metrics_from_ranks(np.array([0, 1, 10]), ks=(1, 10))
    assert out["n"] == 3
    assert out["HR@1"] == pytest.approx(1 / 3) and out["NDCG@1"] == pytest.approx(1 / 3)
    assert out["HR@10"] == pytest.approx(2 / 3)
    assert out["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert out["MRR@10"] == pytest.approx((1 + 1 / 2) / 3)
    assert metrics_from_ranks(np.array([], dtype=int), ks=(10,)) == {"n": 0}
