"""CCFRec as model kind ``ccfrec`` (h2rec.rivals): each of (C1)-(C10) of docs/model.md against a
hand-written reference, no validation or test item in training, causality, and the whole command line
(train, resume, evaluate, export, recommend) on the tiny generated dataset."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import h2rec
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from h2rec import ddp, training
from h2rec.assemble import prepare
from h2rec.cli import main
from h2rec.errors import H2RecError
from h2rec.evaluate import model_inputs, next_item_states
from h2rec.optim import make_optimizer
from h2rec.rivals.ccfrec import FusionLayer, text_views, whitened_pca
from h2rec.rivals.ccfrec_masking import (
    code_masking_losses,
    code_prediction_losses,
    draw_code_mask,
    masked_codes,
    sequence_alignment,
)
from h2rec.step import training_step

BACKBONES = ["sasrec", "gru4rec", "bert4rec"]
MAX_LEN = 20  # tiny_config's data.max_len


@pytest.fixture
def ccfrec(small_model):
    """``ccfrec(**overrides)``: (config, sids, dataset, model in eval mode) of a small ccfrec."""
    return lambda **overrides: small_model("ccfrec", **overrides)


def code_vectors(model, sids, items: torch.Tensor) -> torch.Tensor:
    """Z^c of each item's codes, looked up level by level in the semid folder's codes: (..., C, d)."""
    codes = sids.codes[items - 1]  # item i is row i - 1
    return torch.stack([model.codes.levels[level].weight[codes[..., level]] for level in range(codes.shape[-1])], -2)


# ----------------------------------------------------------------------------- (C1): the text views
def test_a_view_is_the_whitened_principal_components_of_its_slice():
    x = torch.randn(40, 7, dtype=torch.float64) @ torch.randn(7, 7, dtype=torch.float64)
    got = whitened_pca(x, 5).double()
    centred = (x - x.mean(0)).numpy()
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:5].T / (s[:5] / math.sqrt(39))  # scikit-learn's whiten: unit variance components
    # a direction has no sign: compare what does not depend on it, then the sign rule itself
    np.testing.assert_allclose(got.numpy() @ got.numpy().T, reference @ reference.T, atol=1e-4)
    np.testing.assert_allclose(got.std(0, unbiased=True).numpy(), np.ones(5), atol=1e-5)
    projected_back = torch.linalg.lstsq(x - x.mean(0), got).solution  # the directions, (7, 5)
    largest = projected_back.abs().argmax(0)
    assert (projected_back[largest, torch.arange(5)] > 0).all()
    # fewer directions than dimensions: zero columns after them
    narrow = whitened_pca(x[:, :3], 5)
    assert narrow.shape == (40, 5) and not narrow[:, 3:].any() and narrow[:, :3].abs().sum(0).all()


def test_the_views_are_contiguous_slices_of_the_frozen_text_embedding(ccfrec):
    config, sids, _, model = ccfrec()
    text = sids.embeddings.float()
    slices = torch.tensor_split(text, config.model.ccfrec_views, dim=1)  # (C1): 48 dims -> 10, 10, 10, 9, 9
    assert [s.shape[1] for s in slices] == [10, 10, 10, 9, 9]
    expected = torch.stack([whitened_pca(s, config.model.dim) for s in slices], 1)
    torch.testing.assert_close(model.views[1:], expected)
    assert not model.views[0].any()  # padding
    # frozen, and not saved: every build recomputes it, the same
    assert "views" not in dict(model.named_parameters()) and "views" not in model.state_dict()
    torch.testing.assert_close(ccfrec()[3].views, model.views, rtol=0, atol=0)
    one = ccfrec(**{"model.ccfrec_views": 1})[3]
    torch.testing.assert_close(one.views[1:, 0], whitened_pca(text, config.model.dim))
    with pytest.raises(ValueError, match="ccfrec_views"):
        text_views(text, 49, 32)


# ----------------------------------------------------------------------------- (C2), (C3): the semantic-fusion module
def layer_norm(x, norm):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-12) * norm.weight \
        + norm.bias


def linear(layer, x):
    return x @ layer.weight.T + layer.bias


def attention(module, queries, keys, heads):
    """softmax(Q K^T / sqrt(d/h)) V per head, then W_O, written out token by token (no dropout)."""
    q, k, v = linear(module.w_q, queries), linear(module.w_k, keys), linear(module.w_v, keys)
    width = q.shape[-1] // heads
    rows = []
    for t in range(len(q)):
        out = []
        for h in range(heads):
            part = slice(h * width, (h + 1) * width)
            weights = torch.softmax(torch.stack([q[t, part] @ k[s, part] for s in range(len(k))]) / math.sqrt(width), 0)
            out.append(sum(w * v[s, part] for s, w in enumerate(weights)))
        rows.append(linear(module.w_o, torch.cat(out)))
    return torch.stack(rows)


def test_a_fusion_layer_against_a_hand_written_reference():
    torch.manual_seed(2)
    layer = FusionLayer(dim=8, num_heads=2, dropout=0.3).eval()
    tokens, views = torch.randn(3, 4, 8), torch.randn(3, 5, 8)  # 3 items, 4 codes and 5 views each
    got = layer(tokens, views)
    for m in range(3):
        x = tokens[m]
        x = layer_norm(x + attention(layer.self_attention, x, x, 2), layer.norms[0])  # the codes read each other
        x = layer_norm(x + attention(layer.cross_attention, x, views[m], 2), layer.norms[1])  # codes query the views
        hidden = linear(layer.ffn[0], x)
        ffn = linear(layer.ffn[2], 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2))))  # GELU
        expected = layer_norm(x + ffn, layer.norms[2])
        torch.testing.assert_close(got[m], expected, atol=1e-5, rtol=1e-5)


def test_the_code_table_starts_at_random_and_fuses_each_item_with_its_own_views(ccfrec):
    config, sids, _, model = ccfrec()
    assert model.n_codes == sum(sids.codebook_sizes) and model.n_levels == sids.n_columns
    for table in model.codes.levels:  # (C2): N(0, init_std), the authors' initialiser, not the codebooks
        assert abs(float(table.weight.detach().std()) - config.model.init_std) < 0.006
    assert not model.code_table()[-1].any()  # the [MASK] code: the zero vector
    items = torch.tensor([7, 160, 7])
    h = model.fuse(items, model.item_codes(items))
    x = code_vectors(model, sids, items)
    for layer in model.fusion.layers:
        x = layer(x, model.views[items])  # (C3): L layers over (Z^c, T)
    torch.testing.assert_close(h, x)
    torch.testing.assert_close(h[0], h[2])  # evaluation mode: one item, one H


# ----------------------------------------------------------------------------- (C4), (C5): the sequence
def test_the_sequence_is_the_pooled_fusion_through_the_encoder(ccfrec):
    _, sids, ds, model = ccfrec(**{"model.backbone": "bert4rec"})
    items = model_inputs(model, ds.sequences[:6], MAX_LEN)  # BERT4Rec: a mask token after each history
    encoded, _ = model(items)
    pad, is_mask = items == 0, items == model.mask_token
    real = ~pad & ~is_mask
    e = torch.zeros(*items.shape, model.cfg.dim)
    e[real] = model.fuse(items[real], model.item_codes(items[real])).mean(1)  # (C4): ẽ = mean_j H_j
    e[is_mask] = model.cloze_item  # the mask token is no item: a learned vector
    torch.testing.assert_close(encoded.r, model.encoder(e, pad))  # (C5)
    assert is_mask.sum() == 6 and not encoded.fused[~real].any()


# ----------------------------------------------------------------------------- (C6): the score
@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_score_is_a_cosine_over_tau_with_fused_plus_code_candidates(ccfrec, backbone):
    _, sids, ds, model = ccfrec(**{"model.backbone": backbone, "model.ccfrec_tau": 0.2})
    with torch.no_grad():
        state = next_item_states(model, ds.sequences[:6], MAX_LEN)
        catalogue = torch.arange(1, model.n_items + 1)
        pooled = model.fuse(catalogue, model.item_codes(catalogue)).mean(1)
        candidate = pooled + code_vectors(model, sids, catalogue).mean(1)  # mean_j H_ij + mean_j Z^c[c_ij]
        expected = F.cosine_similarity(state.r[:, None], candidate[None], dim=-1) / 0.2  # (C6)
        scores = model.score_all(state)
        torch.testing.assert_close(scores[:, 1:], expected, atol=1e-5, rtol=1e-5)
        assert torch.isneginf(scores[:, 0]).all()
        torch.testing.assert_close(model.score_range(state, 40, 90), expected[:, 39:89], atol=1e-5, rtol=1e-5)
        picked = torch.randint(1, model.n_items + 1, (6, 7))
        torch.testing.assert_close(model.score(state, picked), expected.gather(1, picked - 1), atol=1e-5, rtol=1e-5)
        shared = torch.tensor([5, 9, 160])
        torch.testing.assert_close(model.score_shared(state, shared), expected[:, shared - 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.user_vectors(state) @ model.item_vectors().T, expected, atol=1e-5,
                                   rtol=1e-5)  # h2rec export: one inner product
        # the candidate table kept for evaluation follows every change of the weights
        model.codes.levels[0].weight.mul_(3.0)
        changed = model.score_all(state)
        assert not torch.allclose(changed, scores)
        model.train()
    with torch.enable_grad():
        torch.testing.assert_close(model.eval().score_all(state).detach(), changed)  # computed afresh, the same
        # in training, a candidate is one vector however often a step asks for it: no dropout on this side
        model.train()
        torch.testing.assert_close(model.score(state, picked), model.score_all(state).gather(1, picked))
        assert model.candidates(picked).requires_grad
    assert model.vector_parts() == ["fused"]


def test_the_kept_candidate_table_follows_an_optimizer_step(ccfrec):
    """Validation after an epoch scores against the weights that epoch left. Torch's fused AdamW (what
    training uses on CPU and CUDA) moves the weights without counting a version, and the table used to
    be kept on versions alone: every validation after the first read the first one's items."""
    config, _, ds, model = ccfrec()
    with torch.no_grad():
        state = next_item_states(model, ds.sequences[:6], MAX_LEN)
        before = model.score_all(state)  # the table is computed and kept
    optimizer = make_optimizer(model, config.train)
    assert optimizer.defaults["fused"]  # the case that broke: CPU has the fused kernel
    model.train()
    model.candidates(torch.arange(1, model.n_items + 1)).sum().backward()
    optimizer.step()
    model.eval()  # as evaluation does before each pass
    with torch.no_grad():
        state = next_item_states(model, ds.sequences[:6], MAX_LEN)
        after = model.score_all(state)
        fresh = ccfrec()[3]
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(after, fresh.score_all(state), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(after[:, 1:], before[:, 1:])


# ----------------------------------------------------------------------------- (C7): code masking
def test_code_masking_selects_a_share_of_real_items_codes_and_applies_80_10_10(ccfrec):
    _, _, ds, model = ccfrec(**{"model.backbone": "bert4rec"})
    items = model_inputs(model, ds.sequences[:200], MAX_LEN).cpu()
    mask = draw_code_mask(items, model, 0.5, torch.Generator().manual_seed(0))
    real = (items > 0) & (items != model.mask_token)
    assert not mask.selected[~real].any() and mask.count == int(mask.selected.sum())
    assert abs(mask.count / (int(real.sum()) * model.n_levels) - 0.5) < 0.02  # ρ
    codes, selected, targets = masked_codes(model, items, mask)
    original = model.item_codes(items.masked_fill(items == model.mask_token, 0))
    torch.testing.assert_close(targets, original[selected])
    torch.testing.assert_close(codes[~selected], original[~selected])  # unselected tokens stay
    choice = mask.choice[selected]
    became = codes[selected]
    assert (became[choice < 0.8] == model.n_codes).all()  # 80%: [MASK]
    middle = (choice >= 0.8) & (choice < 0.9)
    torch.testing.assert_close(became[middle], mask.random_codes[selected][middle])  # 10%: a random code
    torch.testing.assert_close(became[choice >= 0.9], targets[choice >= 0.9])  # 10%: kept
    assert abs(float((choice < 0.8).float().mean()) - 0.8) < 0.03
    assert (mask.random_codes >= 0).all() and (mask.random_codes < model.n_codes).all()  # any level's code
    # the same draws from the same generator state: resume and torchrun draw what one run does
    again = draw_code_mask(items, model, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(again.selected, mask.selected) and torch.equal(again.random_codes, mask.random_codes)


# ----------------------------------------------------------------------------- (C8), (C9): the two losses
def test_masked_code_modeling_against_a_hand_written_reference(ccfrec):
    _, _, ds, model = ccfrec()
    items = model_inputs(model, ds.sequences[:5], MAX_LEN)
    mask = draw_code_mask(items, model, 0.5, torch.Generator().manual_seed(1))
    codes, selected, targets = masked_codes(model, items, mask)
    masked, _ = model(items, codes=codes)
    got = code_prediction_losses(model, masked.fused, selected, targets)
    table = torch.cat([t.weight for t in model.codes.levels])  # every code of every level, (ΣK, d)
    expected = []
    for (b, t, j), code in zip(selected.nonzero().tolist(), targets.tolist()):
        h = masked.fused[b, t, j]  # the SFM output at the masked token
        logits = torch.stack([F.cosine_similarity(h, z, dim=0) for z in table]) / model.tau
        expected.append(-torch.log_softmax(logits, 0)[code])  # (C8)
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-4, rtol=1e-4)


def test_masked_sequence_alignment_against_a_hand_written_reference():
    torch.manual_seed(3)
    r, r_masked, tau = torch.randn(6, 8), torch.randn(6, 8), 0.07
    cos = torch.stack([torch.stack([F.cosine_similarity(a, b, dim=0) for b in r_masked]) for a in r])  # (6, 6)
    forward = -torch.stack([torch.log_softmax(cos[i] / tau, 0)[i] for i in range(6)]).mean()  # r_i -> r̃_i
    backward = -torch.stack([torch.log_softmax(cos[:, i] / tau, 0)[i] for i in range(6)]).mean()  # r̃_i -> r_i
    torch.testing.assert_close(sequence_alignment(r, r_masked, tau), (forward + backward) / 2)  # (C9)


def test_the_masking_losses_of_a_batch(ccfrec):
    _, _, ds, model = ccfrec()
    items = model_inputs(model, ds.sequences[:5], MAX_LEN)
    encoded, _ = model(items)
    mask = draw_code_mask(items, model, 0.5, torch.Generator().manual_seed(1))
    mcm, msa = code_masking_losses(model, items, encoded, mask)
    codes, selected, targets = masked_codes(model, items, mask)
    masked, _ = model(items, codes=codes)
    torch.testing.assert_close(mcm, code_prediction_losses(model, masked.fused, selected, targets).mean())
    # (C9) on each sequence's last state, the one that predicts the next item
    torch.testing.assert_close(msa, sequence_alignment(encoded.last().r, masked.last().r, model.tau))


# ----------------------------------------------------------------------------- (C10): the objective
def test_training_step_adds_the_weighted_masking_losses(ccfrec):
    config, _, ds, model = ccfrec(**{"train.mcm_weight": 0.3, "train.msa_weight": 0.7})
    model.train()
    rows = torch.from_numpy(np.stack([np.pad(s[-21:], (0, 21 - len(s[-21:]))) for s in ds.train[:16]]))
    parts = training_step(model, rows, config.train, torch.Generator().manual_seed(0))
    assert parts["mcm"] > 0 and parts["msa"] > 0
    torch.testing.assert_close(parts["total"], parts["rec"] + 0.3 * parts["mcm"] + 0.7 * parts["msa"])  # (C10)
    parts["total"].backward()
    assert model.codes.levels[0].weight.grad.any() and model.fusion.layers[0].cross_attention.w_q.weight.grad.any()
    config, _, _, model = ccfrec(**{"train.mcm_weight": 0.0, "train.msa_weight": 0.0})  # both off: no second pass
    parts = training_step(model.train(), rows, config.train, torch.Generator().manual_seed(0))
    assert set(parts) == {"rec", "total"}


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_idle_parameters_are_those_a_step_leaves_without_gradient(ccfrec, backbone):
    """What DDP is told no step uses is what one process's step leaves without a gradient."""
    config, _, ds, model = ccfrec(**{"model.backbone": backbone})
    windows = training.training_windows(ds.train, MAX_LEN, model.causal, "sliding", None)
    parts = training_step(model.train(), windows.rows[:32], config.train, torch.Generator().manual_seed(0),
                          windows.first_target[:32])
    parts["total"].backward()
    without = {name for name, p in model.named_parameters() if p.grad is None}
    assert ddp.idle_parameters(model, config.train) == without


# ----------------------------------------------------------------------------- every ranking loss
@pytest.mark.parametrize("loss, chunk", [("ce", 65536), ("ce", 50), ("sampled_softmax", 65536), ("gbce", 65536),
                                         ("bce", 65536), ("bpr", 65536)])
def test_every_ranking_loss_trains(ccfrec, loss, chunk):
    """Chunks of 50 items: the softmax's chunks are checkpointed, and backward recomputes the candidates."""
    config, _, ds, model = ccfrec(**{"train.loss": loss, "train.ce_chunk_items": chunk})
    rows = torch.from_numpy(np.stack([np.pad(s[-21:], (0, 21 - len(s[-21:]))) for s in ds.train[:16]]))
    log_q = training.sampler_log_q(config.train, ds.popularity)
    parts = training_step(model.train(), rows, config.train, torch.Generator().manual_seed(0), log_q=log_q)
    parts["total"].backward()
    assert torch.isfinite(parts["rec"]) and model.codes.levels[1].weight.grad.any()


# ----------------------------------------------------------------------------- no validation or test item
def test_moving_a_test_item_changes_nothing_in_training(tiny, tiny_config, moved_test_items, untimed_epochs,
                                                        tmp_path):
    """The masks are drawn on the training windows' own items and the views come from text only: move
    every user's test item (the last) to another item, and every training loss and validation
    metric stays exactly the same."""
    moved = moved_test_items(tmp_path)
    outcome = {}
    for name, interactions in (("original", tiny["interactions"]), ("moved", moved)):
        config = tiny_config(**{"model.kind": "ccfrec", "data.interactions": str(interactions), "train.epochs": 2,
                                "train.windows": "random", "data.min_catalogue_coverage": 0.0})
        _, _, ds = prepare(config)
        h2rec.train(config, tmp_path / name, progress=False, test=False)
        outcome[name] = untimed_epochs(tmp_path / name), ds
    (epochs_a, ds_a), (epochs_b, ds_b) = outcome["original"], outcome["moved"]
    assert not np.array_equal(ds_a.test.targets, ds_b.test.targets)  # the test items did move
    assert "loss_mcm" in epochs_a[0] and "loss_msa" in epochs_a[0]
    assert epochs_a == epochs_b  # every loss part and validation metric of every epoch


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_a_future_item_changes_no_earlier_output(ccfrec, with_a_future_change, backbone):
    _, _, ds, model = ccfrec(**{"model.backbone": backbone})
    a, b, _ = with_a_future_change(model, ds)
    torch.testing.assert_close(a.r[:, :6], b.r[:, :6])  # the SFM fuses each item alone: nothing leaks back
    assert not torch.allclose(a.r[:, 6:], b.r[:, 6:])


# ----------------------------------------------------------------------------- configuration errors
def test_configuration_mistakes_are_refused_with_a_clear_message(tiny, tiny_config, tmp_path):
    with pytest.raises(H2RecError, match="train.mcm_weight belongs to CCFRec"):
        tiny_config(**{"model.kind": "hid", "train.mcm_weight": 0.3})
    with pytest.raises(H2RecError, match="model.ccfrec_layers belongs to CCFRec"):
        tiny_config(**{"model.kind": "melt", "model.ccfrec_layers": 1})
    with pytest.raises(H2RecError, match="code_mask_ratio must lie in"):
        tiny_config(**{"model.kind": "ccfrec", "train.code_mask_ratio": 1.5})
    with pytest.raises(H2RecError, match="ccfrec_tau must be > 0"):
        tiny_config(**{"model.kind": "ccfrec", "model.ccfrec_tau": 0.0})
    runner = CliRunner()
    base = ["train", "--interactions", str(tiny["interactions"]), "--semid", str(tiny["semid"]), "--device", "cpu",
            "--quiet", "-o", str(tmp_path / "run")]
    result = runner.invoke(main, [*base, "--model", "h2rec", "--msa-weight", "0.3"])
    assert result.exit_code == 2 and "--msa-weight" in result.output and "'ccfrec'" in result.output
    result = runner.invoke(main, [*base, "--model", "ccfrec", "--ccfrec-views", "0"])
    assert result.exit_code == 2 and "--ccfrec-views" in result.output and ">= 1" in result.output
    result = runner.invoke(main, [*base, "--model", "ccfrec", "--ccfrec-views", "49"])  # the text has 48 dims
    assert result.exit_code == 2 and "--ccfrec-views" in result.output and "at most 48" in result.output
    result = runner.invoke(main, [*base, "--model", "ccfrec", "--pca-init"])
    assert result.exit_code == 2 and "--pca-init" in result.output and "has none" in result.output, result.output
    no_text = tmp_path / "semid-without-embeddings"
    shutil.copytree(tiny["semid"], no_text)
    (no_text / "embeddings.safetensors").unlink()
    result = runner.invoke(main, [*base[:4], str(no_text), *base[5:], "--model", "ccfrec"])
    assert result.exit_code == 2 and "text embeddings" in result.output, result.output
    assert not (tmp_path / "run" / "config.json").exists()  # refused before a file is written


# ----------------------------------------------------------------------------- the command line, end to end
@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_train_resume_evaluate_export_recommend(tiny, tmp_path, backbone, cli_round_trip):
    run = tmp_path / "run"
    args = ["train", "--model", "ccfrec", "--backbone", backbone, "--interactions", str(tiny["interactions"]),
            "--semid", str(tiny["semid"]), "--max-len", "20", "--dim", "32", "--heads", "2", "--batch-size", "64",
            "--ccfrec-views", "3", "--ccfrec-layers", "1", "--mcm-weight", "0.3", "--msa-weight", "0.5",
            "--code-mask-ratio", "0.4", "--device", "cpu", "--quiet", "--eval-negatives", "20", "-o", str(run)]
    results, recommender, scores, layout = cli_round_trip(args, "ccfrec", backbone)
    saved = json.loads((run / "config.json").read_text())
    assert (saved["model"]["ccfrec_views"], saved["model"]["ccfrec_layers"], saved["train"]["code_mask_ratio"]) \
        == (3, 1, 0.4)
    assert "loss_mcm" in (run / "metrics.jsonl").read_text()
    assert layout == ["fused"]
    # shared without the training data: the semid folder travels with its text embeddings, the views are rebuilt
    pretrained = h2rec.from_pretrained(recommender.save_pretrained(tmp_path / "shared"), device="cpu")
    history = [recommender.dataset.item_ids[i - 1] for i in recommender.dataset.sequences[0]]
    np.testing.assert_allclose(pretrained.scores(history)[1:].numpy(), scores[0], rtol=1e-4, atol=1e-4)


def test_a_resumed_run_ends_as_an_uninterrupted_one(tiny_config, tmp_path, crash_then_resume):
    """Exact resume: the code masks come from the run's generator, which the checkpoint restores."""
    config = tiny_config(**{"model.kind": "ccfrec", "train.epochs": 3, "train.windows": "random",
                            "model.ccfrec_layers": 1})
    straight = h2rec.train(config, tmp_path / "straight", progress=False)
    resumed = crash_then_resume(config, tmp_path / "crashed", epoch=2)
    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]


def test_two_processes_follow_one_process(tiny, tmp_path):
    """torchrun: (C8) is each process's share of the batch's mean, (C9) is computed from the batch's
    gathered states, and the masks are drawn for the whole batch: the same losses and metrics as
    one process (without dropout, the one draw that is each process's own). Without label smoothing:
    with it the losses still agree to 2e-6, but its catalogue-wide term turns the all-reduce's other
    rounding into one flipped near-tie among the 240 users' ranks."""
    settings = {"model": {"kind": "ccfrec", "dropout": 0.0, "ccfrec_dropout": 0.0, "num_heads": 2},
                "train": {"epochs": 2, "batch_size": 64, "device": "cpu", "label_smoothing": 0.0},
                "eval": {"batch_size": 64},
                "data": {"interactions": str(tiny["interactions"]), "semid": str(tiny["semid"]), "max_len": MAX_LEN}}
    (tmp_path / "config.json").write_text(json.dumps(settings))
    h2rec.train(h2rec.build_config(settings), tmp_path / "one", progress=False)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "h2rec",
              "train", "--config", str(tmp_path / "config.json"), "-o", str(tmp_path / "two"), "--quiet"]
    result = subprocess.run(launch, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    one, two = ([{k: v for k, v in json.loads(line).items() if not k.endswith("_seconds")}
                 for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("one", "two"))
    assert {"loss_mcm", "loss_msa"} <= set(one[0]) and [set(e) for e in two] == [set(e) for e in one]
    for a, b in zip(one, two):
        assert b == pytest.approx(a, rel=1e-4)
