"""The optimised forward pass computes what the straightforward one does (issue 22, the step's speed).

The model looks every level up in one table and sums levels as embedding bags (Eq. 3), scores the
cross attention without projecting the levels (Eq. 4-5), and runs L_MSG's masked view through the
encoder's last block at the last position only (``forward_split``). Each is checked here against the formulas written
out plainly (per-level tensors, einsum, one attention per level, the full second encoder pass):
the same outputs and the same gradients, up to rounding. In float64, so that the tolerance is
tight enough to catch a wrong term (float32 differs in the fifth or sixth digit, as any change of
summation order does). Dropout is off (eval mode): the fused paths draw their dropout masks
differently.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from h2rec.assemble import build_model, prepare
from h2rec.losses import alignment_positives
from h2rec.model import at_last
from srs_backbones import build_encoder, cloze_mask

TOL = {"rtol": 1e-9, "atol": 1e-11}  # float64


def built(tiny_config, **overrides):
    config, sids, _ = prepare(tiny_config(**overrides))
    torch.manual_seed(0)
    model = build_model(config, sids).eval().double()
    with torch.no_grad():  # the tiny config's small init leaves the attention near uniform: spread it out
        for name, p in model.named_parameters():
            if name.startswith("mca.") or name in ("msg_mask", "cloze_levels"):
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    return model


def straightforward_levels(model, items):
    """E_g^1 .. E_g^L (B, N, L, d) through the CodeEmbedding, the mask token's stand-ins where it sits."""
    is_mask = items == model.mask_token
    levels = model.codes(items.masked_fill(is_mask, 0))
    return torch.where(is_mask[..., None, None], model.cloze_levels, levels) if is_mask.any() else levels


def straightforward_mca(mca, e_hid, levels, alpha, pad, causal):
    """Eq. 4-5 as first written: the levels projected by W^K and W^V, one SDPA head per level."""
    n_levels = levels.shape[2]
    q = mca.w_q(e_hid).unsqueeze(1).expand(-1, n_levels, -1, -1)
    k, v = mca.w_k(levels).transpose(1, 2), mca.w_v(levels).transpose(1, 2)
    if causal:
        per_level = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        visible = ~pad
        visible[:, 0] = True
        per_level = F.scaled_dot_product_attention(q, k, v, attn_mask=visible[:, None, None, :])
    return torch.einsum("bnl,blnd->bnd", alpha, per_level) + e_hid


def straightforward_forward(model, items, msg_level):
    pad = items == 0
    e_hid = model.hid(items) if model.has_hid else None
    levels = straightforward_levels(model, items)
    alpha = model.intent(e_hid if e_hid is not None else levels.sum(-2))
    e_sid = torch.einsum("bnl,bnld->bnd", alpha, levels)
    u_sid = model.f_sid(e_sid, pad)
    masked = None
    if msg_level is not None:
        hide = F.one_hot(msg_level, model.n_levels).bool()[:, None, :, None]
        e_masked = torch.einsum("bnl,bnld->bnd", alpha, torch.where(hide, model.msg_mask, levels))
        masked = at_last(model.f_sid(e_masked, pad), pad)  # the whole second pass, then its last position
    u_hid = None
    if model.has_hid:
        fused = straightforward_mca(model.mca, e_hid, levels, alpha, pad, model.causal) if model.mca else e_hid
        u_hid = model.f_hid(fused, pad)
    return [u_sid, u_hid, alpha, e_sid, e_hid, masked]


def gradients(model, outputs):
    """Every parameter's gradient (None where a parameter is not used) of a fixed random projection
    of ``outputs``."""
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(1)
    total = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outputs if t is not None)
    total.backward(retain_graph=True)  # outputs may share a graph (the user states of the score test)
    return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


def batch(model, causal, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([12, 7, 1, 12, 3, 0])  # right padding, a row of padding only among them
    items = torch.randint(1, model.n_items + 1, (len(lengths), 12), generator=g)
    items = items * (torch.arange(12)[None, :] < lengths[:, None])
    if not causal:  # BERT4Rec's inputs hold mask tokens
        items, _ = cloze_mask(items, mask_token=model.mask_token, mask_prob=0.3, generator=g)
    return items, torch.randint(0, getattr(model, "n_levels", 1), (len(lengths),), generator=g)


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "gru4rec"])
@pytest.mark.parametrize("overrides", [{}, {"model.mca": False}, {"model.fusion": False}, {"model.kind": "sid"},
                                       {"backbone_options": {"norm": "pre"}}])
def test_forward_and_gradients_equal_the_straightforward_pass(tiny_config, backbone, overrides):
    if "backbone_options" in overrides and backbone == "gru4rec":
        pytest.skip("a GRU has no norm placement")
    overrides = {f"model.{k}" if k == "backbone_options" else k: v for k, v in overrides.items()}
    model = built(tiny_config, **{"model.backbone": backbone, **overrides})
    items, msg_level = batch(model, model.causal)
    use_msg = model.cfg.kind == "h2rec"
    encoded, masked = model(items, msg_level if use_msg else None)
    fast = [encoded.u_sid, encoded.u_hid, encoded.alpha, encoded.e_sid, encoded.e_hid, masked]
    plain = straightforward_forward(model, items, msg_level if use_msg else None)
    for got, expected in zip(fast, plain):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected, **TOL)
    fast_grads, plain_grads = gradients(model, fast), gradients(model, plain)
    for name, expected in plain_grads.items():
        # the same parameters used: one left without a gradient stays so (DDP's idle parameters, AdamW)
        assert (fast_grads[name] is None) == (expected is None), name
        if expected is not None:
            torch.testing.assert_close(fast_grads[name], expected, **TOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("kind", ["h2rec", "sid", "hid"])
def test_scores_of_given_candidates_equal_the_formula(tiny_config, kind):
    model = built(tiny_config, **{"model.kind": kind})
    items, _ = batch(model, True)
    state = model(items)[0].select(items > 0)
    g = torch.Generator().manual_seed(2)
    candidates = torch.randint(1, model.n_items + 1, (len(state.u_sid if kind != "hid" else state.u_hid), 3),
                               generator=g)
    expected = 0.0
    if model.has_hid:
        expected = expected + torch.einsum("pd,pkd->pk", state.u_hid, model.hid(candidates))
    if model.has_sid:
        expected = expected + torch.einsum("pd,pkld,pl->pk", state.u_sid, straightforward_levels(model, candidates),
                                           state.alpha)
    got = model.score(state, candidates)
    torch.testing.assert_close(got, expected, **TOL)
    fast_grads, plain_grads = gradients(model, [got]), gradients(model, [expected])
    for name, grad in plain_grads.items():
        assert (fast_grads[name] is None) == (grad is None), name
        if grad is not None:
            torch.testing.assert_close(fast_grads[name], grad, **TOL, msg=name)


@pytest.mark.parametrize("backbone,options", [("sasrec", {}), ("sasrec", {"norm": "pre"}),
                                              ("sasrec", {"num_layers": 1}), ("bert4rec", {}), ("gru4rec", {})])
def test_forward_split_and_last_are_forward_at_the_positions_read(backbone, options):
    torch.manual_seed(0)
    encoder = build_encoder(backbone, dim=16, max_len=10, dropout=0.0, **options).eval().double()
    x = torch.randn(5, 10, 16, dtype=torch.float64, requires_grad=True)
    pad = torch.arange(10)[None, :] >= torch.tensor([10, 4, 1, 0, 7])[:, None]
    states = encoder(x, pad)
    weights = torch.randn(5, 10, 16, dtype=torch.float64)
    for n_full in (0, 2, 5):
        full, last = encoder.forward_split(x, pad, n_full)
        torch.testing.assert_close(full, states[:n_full], **TOL)
        torch.testing.assert_close(last, at_last(states[n_full:], pad[n_full:]), **TOL)
        assert n_full > 3 or torch.all(last[3 - n_full] == 0)  # a row of padding only: zero, as forward's
        expected = (states[:n_full] * weights[:n_full]).sum() + (at_last(states[n_full:], pad[n_full:])
                                                                 * weights[n_full:, 0]).sum()
        (g_expected,) = torch.autograd.grad(expected, x, retain_graph=True)
        (g_split,) = torch.autograd.grad((full * weights[:n_full]).sum() + (last * weights[n_full:, 0]).sum(), x)
        torch.testing.assert_close(g_split, g_expected, **TOL)
    torch.testing.assert_close(encoder.forward_last(x, pad), at_last(states, pad), **TOL)


def test_code_prefix_positives_equal_grouping_the_prefixes():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 3, (64, 4), generator=g)  # few codes: many shared prefixes
    items, rows, positions = torch.arange(64), torch.zeros(64, dtype=torch.long), torch.arange(64) * 10
    for p in (1, 2, 3, 4, 6):
        _, group = torch.unique(codes[:, :p], dim=0, return_inverse=True)
        expected = (group[:, None] == group[None, :]) | torch.eye(64, dtype=torch.bool)
        assert torch.equal(alignment_positives(items, codes, rows, positions, p, 0), expected)


def test_cross_attention_puts_no_weight_on_padding_keys_bidirectionally(tiny_config):
    model = built(tiny_config, **{"model.backbone": "bert4rec"})
    e_hid = torch.randn(2, 5, model.cfg.dim, dtype=torch.float64)
    levels = torch.randn(2, 5, model.n_levels, model.cfg.dim, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(2, 5, model.n_levels, dtype=torch.float64), -1)
    pad = torch.tensor([[False] * 3 + [True] * 2, [False] * 5])
    base = model.mca(e_hid, levels, alpha, pad, False)
    later = levels.clone()
    later[0, 3:] = 100.0  # padding keys of row 0
    torch.testing.assert_close(model.mca(e_hid, later, alpha, pad, False)[0], base[0])
    assert math.isfinite(base.abs().max().item())
