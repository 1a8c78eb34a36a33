"""Ranking losses against hand-written references: explicit loops over small random tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from h2rec.losses import (
    bce,
    bpr,
    gbce,
    proposal_log_probs,
    sample_shared,
    sampled_softmax_shared,
)
from h2rec.softmax import ScoreFactor, softmax_cross_entropy

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def random_scores(p=5, k=6, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(p, generator=g, dtype=dtype) * 3
    neg = torch.randn(p, k, generator=g, dtype=dtype) * 3
    hits = torch.rand(p, k, generator=g) < 0.3
    hits[0] = True  # one row of hits only
    hits[1] = False  # one row without any
    return pos.to(device), neg.to(device), hits.to(device)


# ---------------------------------------------------------------- full softmax, tile by tile


def catalogue(p=4, n=13, d=5, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(p, d, generator=g, dtype=dtype).to(device).requires_grad_()
    e = torch.randn(n + 1, d, generator=g, dtype=dtype).to(device).requires_grad_()  # row 0 = padding
    targets = torch.randint(1, n + 1, (p,), generator=g).to(device)
    return u, e, targets


def tiled(u, e, targets, item_chunk, label_smoothing=0.0, tile_elements=None, seen=None):
    return softmax_cross_entropy([ScoreFactor(u, e[1:])], len(e) - 1, (u * e[targets]).sum(1), label_smoothing,
                                 seen, item_chunk=item_chunk, tile_elements=tile_elements)


def untiled(u, e, targets):
    scores = u @ e.T
    scores = torch.cat([torch.full_like(scores[:, :1], float("-inf")), scores[:, 1:]], 1)  # padding: no class
    return F.cross_entropy(scores, targets, reduction="none")


def smoothed_reference(u, e, targets, eps):
    """(1 - ε)(lse - s_t) + ε(lse - mean_j s_j), one position and one item at a time."""
    losses = []
    for i in range(len(u)):
        s = [float(u[i] @ e[j]) for j in range(1, len(e))]
        top = max(s)
        lse = top + math.log(sum(math.exp(x - top) for x in s))
        s_t = s[int(targets[i]) - 1]
        losses.append((1 - eps) * (lse - s_t) + eps * (lse - sum(s) / len(s)))
    return torch.tensor(losses, dtype=torch.float64)


# (item_chunk, tile_elements): 13 = n, one chunk; 4 and 5 do not divide 13; tile_elements 4 with chunks
# of 4 gives tiles of one row, 8 of two rows (4 positions: 2 tiles), 10**6 one tile of every row
TILINGS = [(1, None), (4, None), (13, None), (5, None), (100, None), (4, 4), (4, 8), (13, 26), (5, 10**6)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("item_chunk,tile_elements", TILINGS)
def test_tiled_cross_entropy_equals_full_cross_entropy(item_chunk, tile_elements, device):
    u, e, targets = catalogue(device=device)
    torch.testing.assert_close(tiled(u, e, targets, item_chunk, tile_elements=tile_elements), untiled(u, e, targets))
    u32, e32 = u.detach().float(), e.detach().float()
    torch.testing.assert_close(tiled(u32, e32, targets, item_chunk, tile_elements=tile_elements),
                               untiled(u32, e32, targets))


@pytest.mark.parametrize("item_chunk,tile_elements", [(1, None), (4, 4), (13, 26)])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_tiled_cross_entropy_label_smoothing_spreads_over_real_items(item_chunk, tile_elements, eps):
    u, e, targets = catalogue(seed=1)
    expected = smoothed_reference(u.detach(), e.detach(), targets, eps)
    torch.testing.assert_close(tiled(u, e, targets, item_chunk, eps, tile_elements), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("item_chunk,tile_elements", [(3, None), (4, 4), (13, 26), (5, 10)])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_tiled_cross_entropy_gradients_match_plain_autograd(item_chunk, tile_elements, eps, device):
    u, e, targets = catalogue(seed=2, device=device)
    weights = torch.linspace(0.5, 2.0, len(u), dtype=torch.float64, device=device)  # not just a plain sum
    (tiled(u, e, targets, item_chunk, eps, tile_elements) * weights).sum().backward()
    grad_u, grad_e = u.grad.clone(), e.grad.clone()
    u.grad = e.grad = None
    scores = (u @ e[1:].T)
    plain = torch.logsumexp(scores, 1) - (u * e[targets]).sum(1)
    plain = (1 - eps) * plain + eps * (torch.logsumexp(scores, 1) - scores.mean(1))
    (plain * weights).sum().backward()
    torch.testing.assert_close(grad_u, u.grad)
    torch.testing.assert_close(grad_e, e.grad)
    assert torch.all(grad_e[0] == 0)  # the padding row is never scored


def test_tiled_cross_entropy_with_a_sparse_factor_equals_the_dense_score():
    """H2Rec's form: an ID factor plus per-code scores summed into items by a sparse item x code
    matrix (no gradient); losses and gradients equal the plain expression of the same score."""
    g = torch.Generator().manual_seed(4)
    p, n, d, levels, k = 5, 11, 3, 2, 4
    u = torch.randn(p, d, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    per_code = torch.randn(p, levels * k, generator=g, dtype=torch.float64, requires_grad=True)
    codes = torch.randint(0, k, (n, levels), generator=g) + torch.arange(levels) * k
    incidence = torch.zeros(n, levels * k, dtype=torch.float64).scatter_(1, codes, 1.0)
    targets = torch.randint(1, n + 1, (p,), generator=g)
    dense = u @ e.T + per_code @ incidence.T  # (P, n), item j + 1 in column j
    target_scores = dense.gather(1, targets[:, None] - 1)[:, 0]
    weights = torch.linspace(0.5, 2.0, p, dtype=torch.float64)
    expected = torch.logsumexp(dense, 1) - target_scores
    (expected * weights).sum().backward()
    grads = [t.grad.clone() for t in (u, e, per_code)]
    for t in (u, e, per_code):
        t.grad = None
    for item_chunk, tile_elements in [(11, None), (4, 4), (3, 9)]:
        factors = [ScoreFactor(per_code, incidence.to_sparse_csr()), ScoreFactor(u, e)]
        target_scores = (u @ e.T + per_code @ incidence.T).gather(1, targets[:, None] - 1)[:, 0]
        loss = softmax_cross_entropy(factors, n, target_scores, item_chunk=item_chunk, tile_elements=tile_elements)
        torch.testing.assert_close(loss, expected.detach())
        (loss * weights).sum().backward()
        for t, want in zip((u, e, per_code), grads):
            torch.testing.assert_close(t.grad, want)
            t.grad = None


def test_tiled_cross_entropy_keeps_no_score_matrix_for_backward():
    """What autograd keeps between forward and backward is the inputs and one value per position,
    never a (P, n) block of scores, whatever the tiling."""
    u, e, targets = catalogue(p=3, n=13, d=2)
    scores_kept = (u @ e.T).detach()  # the plain expression keeps its (P, n + 1) scores: the check can fail
    for item_chunk, tile_elements in [(13, None), (4, 4), (13, 10**6), (None, None)]:
        shapes = []

        def keep(t, shapes=shapes):
            shapes.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            if item_chunk is None:
                untiled(u, e, targets)
            else:
                tiled(u, e, targets, item_chunk, 0.1, tile_elements)
        kept = [shape for shape in shapes if len(shape) == 2 and 3 in shape and (13 in shape or 14 in shape)]
        assert bool(kept) == (item_chunk is None), (item_chunk, shapes)
    assert scores_kept.shape == (3, 14)


def test_tile_shape_keeps_a_cpu_tile_in_the_cache_and_one_tile_elsewhere():
    from h2rec.softmax import CPU_TILE_ELEMENTS, CPU_TILE_ITEMS, tile_shape

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert tile_shape(cpu, 10**5, 3000, 65536) == (CPU_TILE_ELEMENTS // CPU_TILE_ITEMS, CPU_TILE_ITEMS)
    assert tile_shape(cpu, 5000, 3000, 65536) == (CPU_TILE_ELEMENTS // 5000, 5000)  # a small catalogue whole
    assert tile_shape(cpu, 10, 3, 65536) == (3, 10)  # at most every row
    assert tile_shape(cpu, 100, 3000, 65536, tile_elements=7) == (1, 100)  # at least one row
    assert tile_shape(cuda, 12101, 3000, 65536) == (3000, 12101)
    assert tile_shape(cuda, 10**6, 3000, 65536) == (3000, 65536)
    assert tile_shape(cuda, 12101, 3000, 65536, tile_elements=12101 * 7) == (7, 12101)


def test_tiled_cross_entropy_rejects_bad_arguments():
    u, e, targets = catalogue()
    with pytest.raises(ValueError, match="item_chunk"):
        tiled(u, e, targets, item_chunk=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        tiled(u, e, targets, item_chunk=4, label_smoothing=1.5)
    with pytest.raises(ValueError, match="label smoothing"):
        tiled(u, e, targets, item_chunk=4, label_smoothing=0.1, seen=(torch.tensor([0]), torch.tensor([1])))


# ---------------------------------------------------------------- sampled softmax, shared negatives


def shared_reference(pos, neg, log_q_pos, log_q_neg, hits):
    losses = []
    for i in range(len(pos)):
        a0 = float(pos[i]) - (float(log_q_pos[i]) if log_q_pos is not None else 0.0)
        others = [float(neg[i, k]) - (float(log_q_neg[k]) if log_q_neg is not None else 0.0)
                  for k in range(neg.shape[1]) if hits is None or not hits[i, k]]
        losses.append(-math.log(math.exp(a0) / (math.exp(a0) + sum(math.exp(a) for a in others))))
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("correct", [False, True])
@pytest.mark.parametrize("with_hits", [False, True])
def test_sampled_softmax_shared_matches_loop(correct, with_hits, device):
    pos, neg, hits = random_scores(device=device)
    g = torch.Generator().manual_seed(3)
    log_q_pos = torch.rand(len(pos), generator=g, dtype=torch.float64).log().to(device) if correct else None
    log_q_neg = torch.rand(neg.shape[1], generator=g, dtype=torch.float64).log().to(device) if correct else None
    hits = hits if with_hits else None
    expected = shared_reference(pos.cpu(), neg.cpu(), log_q_pos, log_q_neg, hits)
    got = sampled_softmax_shared(pos, neg, log_q_pos, log_q_neg, hits)
    torch.testing.assert_close(got.cpu(), expected)
    got32 = sampled_softmax_shared(pos.float(), neg.float(), None if log_q_pos is None else log_q_pos.float(),
                                   None if log_q_neg is None else log_q_neg.float(), hits)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.cpu(), expected.float())


def test_sampled_softmax_shared_gradients_and_agreement_with_sampled_softmax():
    pos, neg, hits = random_scores(seed=4)
    pos.requires_grad_()
    neg.requires_grad_()
    log_q_neg = torch.linspace(-3, -1, neg.shape[1], dtype=torch.float64)
    loss = sampled_softmax_shared(pos, neg, torch.full_like(pos, -2.0), log_q_neg, hits)
    loss.sum().backward()
    # d loss_i / d s+_i = p_0 - 1, d loss_i / d s-_ik = p_k (0 for hits), p = softmax of the corrected logits
    pos_value, neg_value = pos.detach(), neg.detach()
    for i in range(len(pos)):
        logits = [float(pos_value[i]) + 2.0] + [float(neg_value[i, k] - log_q_neg[k]) for k in range(neg.shape[1])]
        weights = [math.exp(a) for a in logits]
        weights[1:] = [0.0 if hits[i, k] else w for k, w in enumerate(weights[1:])]
        total = sum(weights)
        assert math.isclose(float(pos.grad[i]), weights[0] / total - 1, abs_tol=1e-12)
        for k in range(neg.shape[1]):
            assert math.isclose(float(neg.grad[i, k]), weights[k + 1] / total, abs_tol=1e-12)
    # without correction it is plain cross-entropy over [positive, non-hit negatives]
    logits = torch.cat([pos[:, None], neg.masked_fill(hits, float("-inf"))], 1).detach()
    expected = F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long), reduction="none")
    torch.testing.assert_close(sampled_softmax_shared(pos, neg, hits=hits).detach(), expected)


# ---------------------------------------------------------------- proposal and shared sampling


def test_proposal_log_probs_uniform_and_popularity():
    popularity = torch.tensor([7, 0, 1, 3, 6])  # index 0 is padding; item 1 never seen
    uniform = proposal_log_probs(popularity, 0.0)
    assert uniform[0] == float("-inf")
    torch.testing.assert_close(uniform[1:], torch.full((4,), math.log(1 / 4)))
    q = proposal_log_probs(popularity, 1.0).exp()
    torch.testing.assert_close(q, torch.tensor([0.0, 0.0, 1 / 10, 3 / 10, 6 / 10]))
    q_half = proposal_log_probs(popularity.double(), 0.5).exp()
    assert q_half.dtype == torch.float64
    roots = [0.0, 1.0, math.sqrt(3), math.sqrt(6)]
    torch.testing.assert_close(q_half, torch.tensor([0.0] + [r / sum(roots) for r in roots], dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        proposal_log_probs(popularity, -1.0)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_sample_shared_frequencies_follow_the_proposal(alpha):
    popularity = torch.tensor([1000.0, 1, 2, 3, 4, 0, 10])  # padding hugely "popular": must still never be drawn
    log_q = proposal_log_probs(popularity, alpha)
    draws = sample_shared(log_q, 20000, torch.Generator().manual_seed(0))
    assert draws.shape == (20000,) and draws.dtype == torch.long
    assert draws.min() >= 1 and draws.max() <= 6
    freq = torch.bincount(draws, minlength=7).double() / len(draws)
    expected = log_q.exp().double()
    assert freq[0] == 0
    assert (freq - expected).abs().max() < 0.015  # ~4 standard deviations at 20000 draws
    if alpha > 0:
        assert freq[5] == 0  # zero popularity: q = 0
    again = sample_shared(log_q, 20000, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)  # the generator alone fixes the draw


# ---------------------------------------------------------------- gBCE, BCE and BPR with accidental hits


def gbce_reference(pos, neg, alpha, t, hits):
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    return torch.tensor([-beta * log_sigmoid(float(pos[i]))
                         - sum(log_sigmoid(-float(neg[i, k])) for k in range(neg.shape[1])
                               if hits is None or not hits[i, k])
                         for i in range(len(pos))], dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("t", [0.0, 0.75, 1.0])
@pytest.mark.parametrize("with_hits", [False, True])
def test_gbce_matches_reference(t, with_hits, device):
    pos, neg, hits = random_scores(device=device)
    hits = hits if with_hits else None
    alpha = neg.shape[1] / (50 - 1)
    expected = gbce_reference(pos.cpu(), neg.cpu(), alpha, t, None if hits is None else hits.cpu())
    torch.testing.assert_close(gbce(pos, neg, alpha, t, hits).cpu(), expected)
    torch.testing.assert_close(gbce(pos.float(), neg.float(), alpha, t, hits).cpu(), expected.float())
    pos = pos.clone().requires_grad_()
    gbce(pos, neg, alpha, t, hits).sum().backward()
    beta = 1 + t * (alpha - 1)
    torch.testing.assert_close(pos.grad, -beta * torch.sigmoid(-pos.detach()))  # d(-β log σ(x))/dx = -β σ(-x)


def test_gbce_limits_and_validation():
    pos, neg, hits = random_scores()
    torch.testing.assert_close(gbce(pos, neg, 0.1, t=0.0), bce(pos, neg))
    torch.testing.assert_close(gbce(pos, neg, 0.1, t=0.0, hits=hits), bce(pos, neg, hits))
    torch.testing.assert_close(gbce(pos, neg, 0.1, t=1.0), -(0.1 * F.logsigmoid(pos) + F.logsigmoid(-neg).sum(1)))
    torch.testing.assert_close(gbce(pos, neg, 1.0, t=0.6), bce(pos, neg))  # α = 1: β = 1 for any t
    assert torch.isfinite(gbce(torch.tensor([-200.0]), torch.tensor([[200.0]]), 0.01)).all()  # float32 extremes
    for bad in [0.0, -0.5, 1.5]:
        with pytest.raises(ValueError, match="sampling_rate"):
            gbce(pos, neg, bad)
    for bad in [-0.1, 1.1]:
        with pytest.raises(ValueError, match="t must"):
            gbce(pos, neg, 0.5, t=bad)


@pytest.mark.parametrize("device", DEVICES)
def test_bce_and_bpr_leave_hits_out(device):
    pos, neg, hits = random_scores(seed=5, device=device)
    p, k = neg.shape
    bce_expected, bpr_expected = [], []
    for i in range(p):
        kept = [kk for kk in range(k) if not hits[i, kk]]
        bce_expected.append(-log_sigmoid(float(pos[i])) - sum(log_sigmoid(-float(neg[i, kk])) for kk in kept))
        bpr_terms = [-log_sigmoid(float(pos[i] - neg[i, kk])) for kk in kept]
        bpr_expected.append(sum(bpr_terms) / len(bpr_terms) if bpr_terms else 0.0)
    torch.testing.assert_close(bce(pos, neg, hits).cpu(), torch.tensor(bce_expected, dtype=torch.float64))
    torch.testing.assert_close(bpr(pos, neg, hits).cpu(), torch.tensor(bpr_expected, dtype=torch.float64))
    assert bpr(pos, neg, hits)[0] == 0  # the all-hit row
    # hit negatives get no gradient, and an all-hit row none at all
    neg = neg.clone().requires_grad_()
    (bpr(pos, neg, hits).sum() + bce(pos, neg, hits).sum()).backward()
    assert torch.all(neg.grad[hits] == 0) and torch.all(neg.grad[~hits] != 0)
    # without hits (or with none set) nothing changes
    torch.testing.assert_close(bce(pos, neg, torch.zeros_like(hits)), bce(pos, neg))
    torch.testing.assert_close(bpr(pos, neg, torch.zeros_like(hits)), bpr(pos, neg))
    torch.testing.assert_close(bpr(pos, neg), -F.logsigmoid(pos[:, None] - neg).mean(1))
    torch.testing.assert_close(bce(pos, neg), -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(1)))


# ---------------------------------------------------------------- seen items out of the softmax
@pytest.mark.parametrize("item_chunk,tile_elements", [(1, None), (4, None), (13, None), (4, 4), (5, 10)])
def test_seen_items_leave_the_tiled_softmax(item_chunk, tile_elements):
    u, e, targets = catalogue(seed=3)
    seen = (torch.tensor([0, 0, 2, 3, 3, 3]), torch.tensor([1, 13, 5, 2, 7, 8]))
    seen_items = {int(p): set() for p in range(len(u))}
    for p, i in zip(*seen):
        seen_items[int(p)].add(int(i))
    seen = tuple(t[[int(targets[p]) != int(i) for p, i in zip(*seen)]] for t in seen)  # targets stay classes
    loss = tiled(u, e, targets, item_chunk, tile_elements=tile_elements, seen=seen)
    # reference: one position at a time, a plain softmax over the items it has not seen
    for p in range(len(u)):
        classes = [j for j in range(1, len(e)) if j not in seen_items[p] or j == int(targets[p])]
        logits = (u[p] @ e[classes].T)[None]
        expected = F.cross_entropy(logits, torch.tensor([classes.index(int(targets[p]))]))
        torch.testing.assert_close(loss[p], expected)
    loss[0].backward()  # position 0 has seen items 1 and 13: its loss does not move them
    assert torch.all(e.grad[1] == 0) and torch.all(e.grad[13] == 0)
    assert not torch.all(e.grad[2] == 0)  # an item it has not seen is pushed down


def test_seen_pairs_read_only_the_past():
    """Each target position's seen items are its row's inputs up to its own column; moving a future
    item changes nothing before it (the causal contract of the loss)."""
    from h2rec.step import next_item_targets, seen_pairs

    rows = torch.tensor([[5, 3, 9, 3, 7, 0], [4, 6, 2, 0, 0, 0]])
    items, targets = next_item_targets(rows)
    where = targets > 0
    position, item = seen_pairs(items, targets, where)
    flat = [(int(r), int(c)) for r, c in zip(*where.nonzero(as_tuple=True))]
    by_position = {flat[p]: sorted(int(i) for q, i in zip(position, item) if q == p) for p in range(len(flat))}
    assert by_position[(0, 0)] == [5]  # input 5, target 3
    assert by_position[(0, 1)] == [3, 5]  # inputs 5, 3; target 9
    assert by_position[(0, 2)] == [5, 9]  # inputs 5, 3, 9; target 3 is a repeat: it stays a class
    assert by_position[(0, 3)] == [3, 3, 5, 9]
    assert by_position[(1, 1)] == [4, 6]
    moved = rows.clone()
    moved[0, 4], moved[0, 3] = rows[0, 3], rows[0, 4]  # swap two future items of position (0, 1)
    items2, targets2 = next_item_targets(moved)
    position2, item2 = seen_pairs(items2, targets2, targets2 > 0)
    for p in (0, 1):  # positions (0, 0) and (0, 1) see exactly the same
        assert sorted(item[position == p].tolist()) == sorted(item2[position2 == p].tolist())
