"""The assembled model: no leakage, factorised scores, the masked view, Eq. 11 and the PCA initialisation."""

from __future__ import annotations

import pytest
import torch
from h2rec.assemble import build_model, prepare
from h2rec.losses import code_guided_alignment
from h2rec.model import at_last
from h2rec.step import training_step

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def built(tiny_config, **overrides):
    config, sids, ds = prepare(tiny_config(**overrides))
    torch.manual_seed(0)
    return build_model(config, sids).eval(), config, ds


def random_items(model, batch=4, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, model.n_items + 1, (batch, n), generator=g).to(model.device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["h2rec", "hid", "sid"])
@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_no_leakage_changing_a_future_item_moves_no_past_score(tiny_config, kind, backbone, device):
    model, _, _ = built(tiny_config, **{"model.kind": kind, "model.backbone": backbone})
    model = model.to(device)
    items = random_items(model)
    base, _ = model(items)
    for t in (0, 4, 9):
        changed = items.clone()
        changed[:, t + 1:] = random_items(model, seed=t + 1)[:, t + 1:]
        out, _ = model(changed)
        past = torch.zeros_like(items, dtype=torch.bool)
        past[:, : t + 1] = True
        # every part of the user side at positions <= t: both branches' states and the intent weights
        torch.testing.assert_close(model.score_all(out.select(past)), model.score_all(base.select(past)))
        for name in ("u_sid", "u_hid", "alpha"):
            a, b = getattr(out, name), getattr(base, name)
            if a is not None:
                torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])


def test_bert4rec_branches_are_bidirectional(tiny_config):
    model, _, _ = built(tiny_config, **{"model.backbone": "bert4rec", "model.num_heads": 2})
    assert not model.causal
    items = random_items(model)
    changed = items.clone()
    changed[:, -1] = items[:, -1] % model.n_items + 1
    a, _ = model(items)
    b, _ = model(changed)
    assert not torch.allclose(a.u_hid[:, 0], b.u_hid[:, 0])
    # the mask token has learned code embeddings, not those of a real item
    mask = torch.full((1, 1), model.mask_token)
    torch.testing.assert_close(model.code_levels(mask)[0, 0], model.cloze_levels)


def test_eq3_weights_sum_to_one_in_the_model(tiny_config):
    model, _, _ = built(tiny_config)
    encoded, _ = model(random_items(model))
    torch.testing.assert_close(encoded.alpha.sum(-1), torch.ones(encoded.alpha.shape[:2]))
    no_fusion, _, _ = built(tiny_config, **{"model.fusion": False})
    encoded, _ = no_fusion(random_items(no_fusion))
    assert torch.all(encoded.alpha == 1 / no_fusion.n_levels)


@pytest.mark.parametrize("weights", ["intent", "uniform"])
@pytest.mark.parametrize("kind", ["h2rec", "sid", "hid"])
def test_eq9_factorised_scores_equal_the_dense_ones(tiny_config, kind, weights):
    model, _, _ = built(tiny_config, **{"model.kind": kind, "model.candidate_weights": weights})
    encoded, _ = model(random_items(model))
    state = encoded.last()
    catalogue = torch.arange(1, model.n_items + 1)
    parts = []
    if model.has_sid:
        w = state.alpha if weights == "intent" else torch.full_like(state.alpha, 1 / model.n_levels)
        e_sid = torch.einsum("pl,nld->pnd", w, model.code_levels(catalogue))  # every candidate's e_j^sid, per user
        parts.append(torch.einsum("pd,pnd->pn", state.u_sid, e_sid))
    if model.has_hid:
        parts.append(state.u_hid @ model.hid(catalogue).T)
    dense = sum(parts)  # [e^sid : e^hid]^T [u^sid : u^hid]
    factorised = model.score_all(state)
    assert torch.all(factorised[:, 0] == float("-inf"))
    torch.testing.assert_close(factorised[:, 1:], dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.score(state, catalogue.expand(4, -1)), dense, rtol=1e-5, atol=1e-5)
    # the catalogue in chunks (chunked cross-entropy) and candidates shared by a batch (sampled softmax)
    torch.testing.assert_close(model.score_range(state, 7, 30), dense[:, 6:29], rtol=1e-5, atol=1e-5)
    shared = torch.tensor([5, 1, 5, model.n_items])
    torch.testing.assert_close(model.score_shared(state, shared), dense[:, shared - 1], rtol=1e-5, atol=1e-5)


def test_masked_view_replaces_exactly_one_level(tiny_config):
    model, _, _ = built(tiny_config)
    items = random_items(model)
    level = torch.tensor([0, 1, 2, 0])
    encoded, masked = model(items, level)
    levels = model.code_levels(items)
    for b in range(4):
        levels[b, :, level[b]] = model.msg_mask[level[b]]
    expected = model.f_sid(torch.einsum("bnl,bnld->bnd", encoded.alpha, levels), items == 0)
    torch.testing.assert_close(masked, at_last(expected, items == 0))  # L_MSG reads the last position only
    assert not torch.allclose(masked, encoded.last().u_sid)


def test_eq11_total_is_rec_plus_weighted_auxiliary_losses(tiny_config):
    model, config, ds = built(tiny_config, **{"train.beta": 0.7, "train.gamma": 0.2})
    from h2rec.data import training_windows

    rows = training_windows(ds.train, config.data.max_len, True, "sliding", None).rows[:32]
    torch.manual_seed(0)
    parts = training_step(model, rows, config.train, torch.Generator().manual_seed(0))
    torch.testing.assert_close(parts["total"], parts["rec"] + 0.7 * parts["ca"] + 0.2 * parts["msg"])
    assert parts["ca"] > 0 and parts["msg"] > 0
    hid, hconfig, _ = built(tiny_config, **{"model.kind": "hid"})
    hparts = training_step(hid, rows, hconfig.train, torch.Generator().manual_seed(0))
    assert set(hparts) == {"rec", "total"}  # baselines train on the ranking loss alone


def test_code_guided_alignment_is_low_when_branches_agree():
    e = torch.randn(16, 8)
    eye = torch.eye(16, dtype=torch.bool)
    assert code_guided_alignment(e, e, eye, 0.1) < code_guided_alignment(e, torch.randn(16, 8), eye, 0.1)


def test_pca_initialisation_follows_the_text_embeddings(tiny_config):
    model, config, _ = built(tiny_config)
    assert config.model.pca_init is True  # resolved: h2rec with text embeddings available
    import semid

    text = semid.load(config.data.semid).embeddings
    rows = model.hid.weight[1 : model.n_items + 1].detach()
    assert abs(rows.std().item() - config.model.init_std) < 1e-3
    # the first principal direction of the text is the first column of the table
    centred = text - text.mean(0)
    first = centred @ torch.linalg.svd(centred, full_matrices=False)[2][0]
    corr = torch.corrcoef(torch.stack([first, rows[:, 0]]))[0, 1].abs()
    assert corr > 0.999
    _, hid_config, _ = built(tiny_config, **{"model.kind": "hid"})
    assert hid_config.model.pca_init is False
