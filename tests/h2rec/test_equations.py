"""Each equation of the paper against a direct, hand-written computation on tiny tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from h2rec.losses import (
    alignment_positives,
    bce,
    bpr,
    code_guided_alignment,
    contrastive,
    masked_granularity,
    reduce_positions,
    sampled_softmax_shared,
)
from h2rec.model import GranularityFusion, MultiGranularityCrossAttention


def align_one_to_one(e_sid: torch.Tensor, e_hid: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 6, the paper's 1-to-1 alignment (one direction). Training uses Eq. 7, which extends it;
    kept here as the reference that losses.contrastive reduces to with positives = the identity."""
    eye = torch.eye(len(e_sid), dtype=torch.bool)
    return contrastive(e_sid, e_hid, eye, tau, exclude_positives=True)

torch.manual_seed(0)


def test_eq2_eq3_fusion_weights_match_the_formula_and_sum_to_one():
    fusion = GranularityFusion(dim=8, levels=4, hidden=6, prior_decay=0.5)
    e = torch.randn(3, 5, 8)
    alpha = fusion(e)
    b = fusion.prior
    for i in range(3):
        for t in range(5):
            x = torch.cat([e[i, t], b])
            s = fusion.w2.weight @ torch.relu(fusion.w1.weight @ x + fusion.w1.bias) + fusion.w2.bias + b  # Eq. 2
            expected = torch.exp(s) / torch.exp(s).sum()  # Eq. 3
            torch.testing.assert_close(alpha[i, t], expected)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3, 5))
    assert torch.allclose(b, torch.tensor([0.0, -0.5, -1.0, -1.5]))  # coarse levels start ahead


def reference_mca(mca, e_hid, levels, alpha, causal):
    """Eq. 4-5 written out level by level with an explicit softmax."""
    d = e_hid.shape[-1]
    q = e_hid @ mca.w_q.weight.T
    out = e_hid.clone()
    n = e_hid.shape[1]
    for level in range(levels.shape[2]):
        k = levels[:, :, level] @ mca.w_k.weight.T
        v = levels[:, :, level] @ mca.w_v.weight.T
        scores = q @ k.transpose(1, 2) / math.sqrt(d)
        if causal:
            scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        out = out + alpha[:, :, level : level + 1] * (torch.softmax(scores, -1) @ v)
    return out


def test_eq4_eq5_cross_attention_matches_the_formula():
    mca = MultiGranularityCrossAttention(8)
    e_hid, levels = torch.randn(2, 6, 8), torch.randn(2, 6, 3, 8)
    alpha = torch.softmax(torch.randn(2, 6, 3), -1)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    for causal in (True, False):
        expected = reference_mca(mca, e_hid, levels, alpha, causal)
        torch.testing.assert_close(mca(e_hid, levels, alpha, pad, causal), expected)


def test_eq5_with_zero_values_returns_the_hid_input():
    mca = MultiGranularityCrossAttention(8)
    torch.nn.init.zeros_(mca.w_v.weight)
    e_hid = torch.randn(2, 6, 8)
    out = mca(e_hid, torch.randn(2, 6, 3, 8), torch.softmax(torch.randn(2, 6, 3), -1),
              torch.zeros(2, 6, dtype=torch.bool), True)
    torch.testing.assert_close(out, e_hid)


def test_eq5_cross_attention_is_causal():
    mca = MultiGranularityCrossAttention(8)
    e_hid, levels = torch.randn(1, 6, 8), torch.randn(1, 6, 3, 8)
    alpha = torch.softmax(torch.randn(1, 6, 3), -1)
    pad = torch.zeros(1, 6, dtype=torch.bool)
    base = mca(e_hid, levels, alpha, pad, True)
    later = levels.clone()
    later[:, 3:] = torch.randn_like(later[:, 3:])
    torch.testing.assert_close(mca(e_hid, later, alpha, pad, True)[:, :3], base[:, :3])


def cos_matrix(a, b, tau):
    return torch.tensor([[F.cosine_similarity(a[i], b[j], dim=0) / tau for j in range(len(b))] for i in range(len(a))])


def test_eq6_one_to_one_alignment_matches_the_formula():
    s, h, tau = torch.randn(5, 4), torch.randn(5, 4), 0.3
    sim = cos_matrix(s, h, tau)
    expected = -sum(math.log(math.exp(sim[i, i]) / sum(math.exp(sim[i, j]) for j in range(5) if j != i))
                    for i in range(5)) / 5
    assert math.isclose(float(align_one_to_one(s, h, tau)), expected, rel_tol=1e-5)


def test_eq7_equals_eq6_when_the_positive_set_is_the_item_alone():
    s, h, tau = torch.randn(6, 4), torch.randn(6, 4), 0.5
    alone = torch.eye(6, dtype=torch.bool)
    # Eq. 6 sums its denominator over j != i, Eq. 7 over all j; with the same denominator they agree
    torch.testing.assert_close(contrastive(s, h, alone, tau, exclude_positives=True), align_one_to_one(s, h, tau))
    # and Eq. 7 with P(i) = {i} is the usual InfoNCE, i.e. cross-entropy on the diagonal
    sim = F.normalize(s, dim=-1) @ F.normalize(h, dim=-1).T / tau
    torch.testing.assert_close(contrastive(s, h, alone, tau), F.cross_entropy(sim, torch.arange(6)))


def test_eq7_code_guided_alignment_matches_the_formula_in_both_directions():
    s, h, tau = torch.randn(5, 4), torch.randn(5, 4), 0.2
    positives = torch.eye(5, dtype=torch.bool)
    positives[0, 2] = positives[2, 0] = positives[1, 4] = positives[4, 1] = True

    def one_direction(a, b):
        sim = cos_matrix(a, b, tau)
        return -sum(math.log(sum(math.exp(sim[i, k]) for k in range(5) if positives[i, k])
                             / sum(math.exp(sim[i, j]) for j in range(5))) for i in range(5)) / 5

    expected = one_direction(s, h) + one_direction(h, s)
    assert math.isclose(float(code_guided_alignment(s, h, positives, tau)), expected, rel_tol=1e-5)


def test_eq7_at_a_low_temperature_uses_log_sum_exp_and_stays_finite():
    g = torch.Generator().manual_seed(0)
    s, h = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    positives = torch.eye(5, dtype=torch.bool)
    positives[0, 2] = positives[2, 0] = True
    # just above the switch the direct form is still exact; just below, the log-sum-exp form takes over
    above, below = 2 / 87 * 1.01, 2 / 87 * 0.99
    for tau in (above, below):
        direct = code_guided_alignment(s.double(), h.double(), positives, tau)  # float64 never underflows here
        torch.testing.assert_close(code_guided_alignment(s, h, positives, tau), direct.float(), rtol=1e-4, atol=1e-4)
    # at tau = 0.005, exp(-2 / tau) is 0 in float32: the direct form would take log(0) for far pairs
    assert torch.isfinite(code_guided_alignment(s, h, positives, 0.005))


def test_eq7_positive_set():
    items = torch.tensor([10, 11, 12, 10, 13])
    codes = torch.tensor([[1, 2, 3], [1, 2, 4], [5, 6, 7], [1, 2, 3], [5, 0, 0]])
    rows = torch.tensor([0, 0, 0, 1, 1])
    positions = torch.tensor([0, 1, 5, 0, 3])
    only_self = alignment_positives(items, codes, rows, positions, code_match=0, window=0)
    assert only_self.tolist()[0] == [True, False, False, True, False]  # the same item at another position
    by_codes = alignment_positives(items, codes, rows, positions, code_match=2, window=0)
    assert by_codes[0, 1] and not by_codes[0, 2] and by_codes[2, 2] and not by_codes[2, 4]
    by_window = alignment_positives(items, codes, rows, positions, code_match=0, window=3)
    assert by_window[0, 1] and not by_window[0, 2] and by_window[3, 4] and not by_window[1, 3]
    assert torch.equal(by_window, by_window.T) and torch.equal(by_codes, by_codes.T)


def test_eq8_masked_granularity_matches_the_formula():
    u, u_masked, tau = torch.randn(4, 6), torch.randn(4, 6), 0.4

    def one_direction(a, b):
        sim = cos_matrix(a, b, tau)
        return -sum(math.log(math.exp(sim[i, i]) / sum(math.exp(sim[i, j]) for j in range(4))) for i in range(4)) / 4

    expected = one_direction(u, u_masked) + one_direction(u_masked, u)
    assert math.isclose(float(masked_granularity(u, u_masked, tau)), expected, rel_tol=1e-5)


def test_eq10_bpr_and_the_alternative_ranking_losses():
    pos, neg = torch.randn(7), torch.randn(7, 3)
    expected = -sum(math.log(1 / (1 + math.exp(-(pos[i] - neg[i, k])))) for i in range(7) for k in range(3)) / 21
    assert math.isclose(float(bpr(pos, neg).mean()), expected, rel_tol=1e-5)
    expected_bce = -sum(math.log(torch.sigmoid(pos[i])) + sum(math.log(1 - torch.sigmoid(neg[i, k])) for k in range(3))
                        for i in range(7)) / 7
    assert math.isclose(float(bce(pos, neg).mean()), expected_bce, rel_tol=1e-5)
    hits = torch.zeros(7, 3, dtype=torch.bool)
    hits[0, 1] = True
    logits = torch.cat([pos[:, None], neg], 1)
    logits[0, 2] = float("-inf")
    expected = F.cross_entropy(logits, torch.zeros(7, dtype=torch.long))
    torch.testing.assert_close(sampled_softmax_shared(pos, neg, hits=hits).mean(), expected)


def test_eq10_reductions():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    user_of = torch.tensor([0, 0, 0, 2])  # user 0 has three positions, user 2 one
    assert float(reduce_positions(losses, user_of, "mean")) == 2.5
    assert float(reduce_positions(losses, user_of, "user_sum")) == (6.0 + 4.0) / 2
