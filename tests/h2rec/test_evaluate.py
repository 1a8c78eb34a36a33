"""Ranks and metrics against a model whose scores are set by hand: ties, exclusion, both protocols."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from h2rec.config import EvalConfig
from h2rec.data import EvalSplit
from h2rec.evaluate import count_at_or_above, metrics_from_ranks, rank_targets, top_items
from torch import nn

NEG_INF = float("-inf")


@dataclass
class LastItem:
    """The user state of LastItemScores: each user's last item (a dataclass, as h2rec's UserState)."""

    item: torch.Tensor


class LastItemScores(nn.Module):
    """Scores item j for a user whose last item is i as ``table[i, j]``: every rank is known."""

    causal = True
    device = torch.device("cpu")

    def __init__(self, table: list[list[float]]):
        super().__init__()
        self.table = torch.tensor(table)

    def forward(self, items):
        last = items.gather(1, ((items != 0).sum(1) - 1)[:, None])[:, 0]
        return SimpleNamespace(last=lambda: LastItem(last)), None

    @property
    def n_items(self) -> int:
        return self.table.shape[1] - 1

    def score_all(self, last):
        scores = self.score_range(last, 0, self.n_items + 1)
        scores[:, 0] = NEG_INF
        return scores

    def score_range(self, state, start, end):
        return self.table[state.item, start:end].clone()

    def score(self, state, items):
        return self.table[state.item[:, None], items]


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


def ranks(cfg: EvalConfig, candidates=None, model=MODEL, split=SPLIT) -> list[int]:
    return rank_targets(model, None, split, cfg, max_len=50, candidates=candidates).tolist()


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


# ties on purpose (scores rounded to tenths), so chunk borders between tying items are exercised
RANDOM = LastItemScores(torch.randint(0, 10, (41, 41), generator=torch.Generator().manual_seed(1)).div(10).tolist())
RANDOM_SPLIT = EvalSplit(users=np.arange(30),
                         histories=[np.random.default_rng(u).integers(1, 41, size=1 + u % 7) for u in range(30)],
                         targets=np.random.default_rng(99).integers(1, 41, size=30))


@pytest.mark.parametrize("item_chunk", [1, 3, 16, 40])
def test_ranking_in_chunks_of_items_gives_the_ranks_of_one_pass(item_chunk):
    # 40 items + padding: every chunk size below 41 takes the chunked path, 41+ the one-pass path
    for exclude_history in (False, True):
        one_pass = EvalConfig(batch_size=8, exclude_history=exclude_history, item_chunk=41)
        chunked = EvalConfig(batch_size=8, exclude_history=exclude_history, item_chunk=item_chunk)
        assert ranks(chunked, model=RANDOM, split=RANDOM_SPLIT) == ranks(one_pass, model=RANDOM, split=RANDOM_SPLIT)
    candidates = np.random.default_rng(5).integers(1, 41, size=(30, 6))
    assert ranks(EvalConfig(batch_size=8, item_chunk=item_chunk), candidates, RANDOM, RANDOM_SPLIT) == \
        ranks(EvalConfig(batch_size=8, item_chunk=41), candidates, RANDOM, RANDOM_SPLIT)


@pytest.mark.parametrize("item_chunk,tile_elements", [(1, None), (3, None), (16, None), (16, 32), (41, 41 * 4)])
def test_top_items_merged_over_chunks_equal_one_pass(item_chunk, tile_elements):
    # tile_elements 32 with 16 items: tiles of 2 rows; 41 * 4 with the whole catalogue: tiles of 4 rows
    histories = RANDOM_SPLIT.histories
    for exclude_history in (False, True):
        values, indices = top_items(RANDOM, histories, 50, 12, exclude_history, item_chunk=item_chunk,
                                    tile_elements=tile_elements)
        expected_values, _ = top_items(RANDOM, histories, 50, 12, exclude_history, item_chunk=41)
        assert torch.equal(values, expected_values)  # ties may come in another order: compare by score
        scores = RANDOM.score_all(LastItem(torch.tensor([h[-1] for h in histories])))
        assert torch.equal(scores.gather(1, indices), values)  # each index carries its own score
        if exclude_history:
            assert not any(set(i.tolist()) & set(h.tolist()) for i, h in zip(indices, histories)
                           if len(set(h.tolist())) <= 40 - 12)


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


@pytest.mark.parametrize("kind", ["hid", "sid", "h2rec"])
def test_a_real_model_ranks_the_same_in_chunks(tiny_config, kind):
    # the chunked path reads the target's score through Eq. 9 for given candidates (model.score),
    # the one-pass path from the catalogue's factorised scores: the ranks must not notice
    from h2rec.assemble import build_model, prepare

    config, sids, ds = prepare(tiny_config(**{"model.kind": kind}))
    torch.manual_seed(0)
    model = build_model(config, sids).eval()
    for exclude_history in (False, True):
        one_pass = EvalConfig(exclude_history=exclude_history)
        chunked = EvalConfig(exclude_history=exclude_history, item_chunk=23)
        assert np.array_equal(rank_targets(model, ds, ds.test, chunked, config.data.max_len),
                              rank_targets(model, ds, ds.test, one_pass, config.data.max_len))


@pytest.mark.parametrize("kind", ["hid", "sid", "h2rec"])
def test_tiles_of_rows_and_items_count_as_one_matrix(tiny_config, kind):
    # the CPU's tiles (rows x items, h2rec.softmax.tile_shape) against every row in one tile: tiles of
    # 3 rows with the whole catalogue (each tile one pass) and with 23 items (targets scored apart)
    from h2rec.assemble import build_model, prepare
    from h2rec.evaluate import count_in_catalogue, next_item_states

    config, sids, ds = prepare(tiny_config(**{"model.kind": kind}))
    torch.manual_seed(0)
    model = build_model(config, sids).eval()
    histories, targets = ds.test.histories, torch.as_tensor(ds.test.targets)[:, None]
    with torch.no_grad():
        state = next_item_states(model, histories, config.data.max_len)
        for exclude in (None, histories):
            whole = count_in_catalogue(model, state, targets, exclude, 65536, tile_elements=10**15)
            assert len(targets) > 6  # several tiles of 3 rows
            for item_chunk in (65536, 23):
                tiled = count_in_catalogue(model, state, targets, exclude, item_chunk, tile_elements=3 * min(
                    item_chunk, model.n_items + 1))
                assert torch.equal(tiled, whole), (kind, item_chunk)


def test_has_repeats_looks_within_each_row_only():
    from h2rec.assemble import has_repeats
    from h2rec.ragged import Ragged

    values = np.array([1, 2, 3, 2, 4, 5, 5])
    assert not has_repeats(Ragged(values, [0, 3], [3, 5]))  # [1 2 3], [2 4]: 2 twice, but in two rows
    assert has_repeats(Ragged(values, [0, 5], [3, 7]))  # [5 5]
    assert has_repeats(Ragged(values, [2, 1], [2, 4]))  # an empty row, then [2 3 2]
    assert not has_repeats(Ragged(values, [0], [0]))


def test_selection_leaves_seen_items_out_unless_a_training_sequence_repeats_an_item(tiny, tiny_config, tmp_path):
    from h2rec.assemble import prepare
    from h2rec.config import build_config

    def with_rows(change) -> str:
        lines = tiny["interactions"].read_text().splitlines()
        rows = [line.split(",") for line in lines[1:]]
        change(rows)
        path = tmp_path / f"interactions-{len(list(tmp_path.iterdir()))}.csv"
        path.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
        return str(path)

    def repeat_in_training(rows):  # the first user's first item again, before its last two (validation, test)
        mine = sorted((r for r in rows if r[0] == rows[0][0]), key=lambda r: int(r[2]))
        assert len(mine) >= 5 and len({int(r[2]) for r in mine}) == len(mine)
        rows.append([mine[0][0], mine[0][1], mine[1][2]])

    def repeat_as_test_target(rows):  # every user's test item is its first item: evaluation items are not read
        first, last = {}, {}
        for row in sorted(rows, key=lambda r: int(r[2])):
            first.setdefault(row[0], row[1])
            last[row[0]] = row
        for user, row in last.items():
            row[1] = first[user]

    def resolved(path=None, **overrides):
        data = {"data.interactions": path} if path else {}
        return prepare(tiny_config(**data, **overrides))[0].eval.exclude_history

    assert resolved() is True  # the tiny set repeats nothing
    assert resolved(with_rows(repeat_in_training)) is False
    assert resolved(with_rows(repeat_as_test_target)) is True
    assert resolved(with_rows(repeat_in_training), **{"eval.exclude_history": True}) is True  # as set
    assert resolved(**{"eval.exclude_history": False}) is False
    paper = build_config(overrides={"data.interactions": "x.csv", "data.semid": "s"}, preset="paper")
    assert paper.eval.exclude_history is False  # the paper preset ranks seen items, as the first study did
