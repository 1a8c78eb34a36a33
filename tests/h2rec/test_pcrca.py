"""PCR-CA as model kind ``pcrca`` (h2rec.rivals): each of (P1)-(P7) of docs/model.md against a
hand-written reference, no validation or test item in training, causality, and the whole command line
(train, resume, evaluate, export, recommend) on the tiny generated dataset."""

from __future__ import annotations

import logging

import h2rec
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from h2rec.assemble import prepare
from h2rec.cli import main
from h2rec.evaluate import model_inputs, next_item_states
from h2rec.rivals.pcrca_align import batch_items, contrastive_losses, item_contrast, user_contrast
from h2rec.step import training_step
from semid.code_embedding import project_codebook

BACKBONES = ["sasrec", "gru4rec", "bert4rec"]


@pytest.fixture
def pcrca(small_model):
    """``pcrca(**overrides)``: (config, sids, dataset, model in eval mode) of a small pcrca."""
    return lambda **overrides: small_model("pcrca", **overrides)


def windows(ds, n: int = 16, width: int = 21) -> torch.Tensor:
    """The last ``width`` training items of the first ``n`` users, right-padded (B, width)."""
    return torch.from_numpy(np.stack([np.pad(s[-width:], (0, width - len(s[-width:]))) for s in ds.train[:n]]))


# ----------------------------------------------------------------------------- (P1), (P2): the two item representations
def test_the_semantic_embedding_maps_the_concatenated_codebook_vectors(pcrca):
    config, sids, _, model = pcrca()
    d, m = config.model.dim, sids.n_columns
    assert model.n_codebooks == m and model.w_sem.weight.shape == (d, m * d)
    items = torch.tensor([[3, 17, 0], [model.mask_token, 5, 160]])
    tables = [table.weight for table in model.codes.levels]
    by_hand = torch.zeros(2, 3, d)
    for b in range(2):
        for t in range(3):
            i = int(items[b, t])
            if i in (0, model.mask_token):
                continue
            codes = sids.codes[i - 1]  # item i is row i - 1
            # (P1): e^sem_i = W_s [C_1[c_i1] ; ... ; C_M[c_iM]]
            by_hand[b, t] = model.w_sem.weight @ torch.cat([tables[k][codes[k]] for k in range(m)])
    got = model.semantic(items)
    torch.testing.assert_close(got[0], by_hand[0])
    torch.testing.assert_close(got[1, 1:], by_hand[1, 1:])
    assert not got[0, 2].any()  # padding: the zero vector
    torch.testing.assert_close(got[1, 0], model.sem_mask)  # BERT4Rec's mask token has a learned vector
    # each codebook's table starts from that codebook (projected to d, scaled to init_std)
    for k, codebook in enumerate(sids.codebooks):
        start = project_codebook(codebook, d)
        torch.testing.assert_close(tables[k], start * (config.model.init_std / start.std()))


def test_the_id_table_starts_at_random_unless_pca_init(pcrca):
    config, _, _, model = pcrca()
    assert not config.model.pca_init  # PCR-CA's ID embeddings are plain hash-ID embeddings (P2)
    assert not model.id_table.weight[0].any()  # padding
    assert abs(float(model.id_table.weight[1:].detach().std()) - config.model.init_std) < 0.005
    _, _, _, pca = pcrca(**{"model.pca_init": True})
    assert not torch.allclose(pca.id_table.weight[1:5], model.id_table.weight[1:5])


def test_a_residual_folder_is_used_with_a_warning(pcrca, caplog):
    with caplog.at_level(logging.WARNING):
        pcrca()  # the tiny folder's codes are residual (rq)
    assert "parallel" in caplog.text and "rq quantizer" in caplog.text


# ----------------------------------------------------------------------------- (P3): one encoder per representation
@pytest.mark.parametrize("share", [False, True])
def test_each_representation_has_its_encoder(pcrca, share):
    _, _, ds, model = pcrca(**{"model.share_encoders": share})
    items = model_inputs(model, ds.sequences[:8], 20)
    encoded, _ = model(items)
    pad = items == 0
    # (P3): u^id = f_id(E^id), u^sem = f_sem(E^sem)
    torch.testing.assert_close(encoded.u_id, model.f_id(model.id_table(items), pad))
    torch.testing.assert_close(encoded.u_sem, model.f_sem(model.semantic(items), pad))
    assert (model.f_sem is model.f_id) == share
    assert sum(isinstance(m, type(model.f_id)) for m in model.modules()) == (1 if share else 2)


# ----------------------------------------------------------------------------- (P4): the score
@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_score_is_the_concatenated_representations_inner_product(pcrca, backbone):
    _, _, ds, model = pcrca(**{"model.backbone": backbone})
    with torch.no_grad():
        state = next_item_states(model, ds.sequences[:6], 20)
        catalogue = torch.arange(1, model.n_items + 1)
        expected = state.u_id @ model.id_table(catalogue).T + state.u_sem @ model.semantic(catalogue).T  # (P4)
        scores = model.score_all(state)
        torch.testing.assert_close(scores[:, 1:], expected, atol=1e-5, rtol=1e-5)
        assert torch.isneginf(scores[:, 0]).all()
        torch.testing.assert_close(model.score_range(state, 40, 90), expected[:, 39:89], atol=1e-5, rtol=1e-5)
        picked = torch.randint(1, model.n_items + 1, (6, 7))
        torch.testing.assert_close(model.score(state, picked), expected.gather(1, picked - 1), atol=1e-5, rtol=1e-5)
        shared = torch.tensor([5, 9, 160])
        torch.testing.assert_close(model.score_shared(state, shared), expected[:, shared - 1], atol=1e-5, rtol=1e-5)
        users, items = model.user_vectors(state), model.item_vectors()  # h2rec export: one inner product
        torch.testing.assert_close(users @ items.T, expected, atol=1e-5, rtol=1e-5)
    assert model.vector_parts() == ["id", "semantic"] and items.shape[1] == 2 * model.cfg.dim


# ----------------------------------------------------------------------------- (P5), (P6): the contrastive alignment
def infonce_by_hand(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """½ (mean_i −log(exp(cos(a_i, b_i)/τ) / Σ_j exp(cos(a_i, b_j)/τ)) + the same with a and b exchanged)."""
    n = len(a)

    def cos(x, y):
        return float(x @ y / (x.norm() * y.norm()))

    def direction(x, y):
        terms = []
        for i in range(n):
            logits = torch.tensor([cos(x[i], y[j]) / tau for j in range(n)], dtype=torch.float64)
            terms.append(-(logits[i] - torch.logsumexp(logits, 0)))
        return torch.stack(terms).mean()

    return ((direction(a, b) + direction(b, a)) / 2).float()


def test_the_item_level_contrast_against_a_loop(pcrca):
    _, _, _, model = pcrca()
    items = torch.tensor([3, 8, 17, 42, 99, 160])
    got = item_contrast(model, items, tau=0.2)
    # (P5): an item's ID and semantic embeddings are a positive pair, the other items' are negatives
    expected = infonce_by_hand(model.id_table(items).detach(), model.semantic(items).detach(), 0.2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    got.backward()
    assert model.id_table.weight.grad is not None and model.codes.levels[0].weight.grad is not None


def test_the_user_level_contrast_against_a_loop(pcrca):
    config, _, ds, model = pcrca(**{"train.contrast_tau": 0.5})
    from h2rec.step import next_item_targets

    items, _ = next_item_targets(windows(ds, 8))
    encoded, _ = model(items)
    parts = contrastive_losses(model, encoded, torch.tensor([1, 2, 3]), config.train)
    # (P6): the two user states at each window's last position are a positive pair
    u_id, u_sem = [], []
    for row in items:
        state = next_item_states(model, [row[row > 0].numpy()], 20)
        u_id.append(state.u_id[0])
        u_sem.append(state.u_sem[0])
    expected = infonce_by_hand(torch.stack(u_id).detach(), torch.stack(u_sem).detach(), 0.5)
    torch.testing.assert_close(parts["user_contrast"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts["user_contrast"], user_contrast(*vars(encoded.last()).values(), 0.5))


def test_the_batch_items_are_its_distinct_training_items():
    rows = torch.tensor([[5, 3, 5, 0], [7, 3, 0, 0], [9, 1, 2, 4]])
    assert batch_items(rows, 100, torch.Generator().manual_seed(0)).tolist() == [1, 2, 3, 4, 5, 7, 9]
    capped = batch_items(rows, 4, torch.Generator().manual_seed(0))
    assert len(capped) == 4 and set(capped.tolist()) <= {1, 2, 3, 4, 5, 7, 9}
    assert torch.equal(capped, batch_items(rows, 4, torch.Generator().manual_seed(0)))  # from the run's generator


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_training_step_adds_both_weighted_contrasts(pcrca, backbone):
    config, _, ds, model = pcrca(**{"model.backbone": backbone, "train.item_contrast_weight": 0.3,
                                    "train.user_contrast_weight": 0.7})
    model.train()
    width = 21 if model.causal else 20  # a causal window holds max_len inputs and one more target
    parts = training_step(model, windows(ds, width=width), config.train, torch.Generator().manual_seed(0))
    # (P7): L = L_rec + λ_I L_item + λ_U L_user
    torch.testing.assert_close(parts["total"], parts["rec"] + 0.3 * parts["item_contrast"]
                               + 0.7 * parts["user_contrast"])
    config, _, _, model = pcrca(**{"model.backbone": backbone, "train.item_contrast_weight": 0.0,
                                   "train.user_contrast_weight": 0.0})
    parts = training_step(model, windows(ds, width=width), config.train, torch.Generator().manual_seed(0))
    assert set(parts) == {"rec", "total"}  # both off: plain two-representation training


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_idle_parameters_are_those_a_step_leaves_without_gradient(pcrca, backbone):
    """What DistributedDataParallel is told no step uses (h2rec.ddp) is what a step leaves without a
    gradient: the mask token's semantic vector under a causal backbone, nothing under BERT4Rec."""
    from h2rec import ddp

    config, _, ds, model = pcrca(**{"model.backbone": backbone})
    model.train()
    width = 21 if model.causal else 20
    training_step(model, windows(ds, 32, width), config.train, torch.Generator().manual_seed(0))["total"].backward()
    without = {name for name, p in model.named_parameters() if p.grad is None}
    assert ddp.idle_parameters(model, config.train) == without == ({"sem_mask"} if model.causal else set())


# ----------------------------------------------------------------------------- no validation or test item
def test_moving_a_test_item_changes_nothing_in_training(tiny, tiny_config, moved_test_items, untimed_epochs,
                                                        tmp_path):
    """Training reads training items only, the contrastive terms included: move every user's test item
    (the last) to another item, and every training loss and validation metric stays exactly the same."""
    moved = moved_test_items(tmp_path)
    epochs = {}
    for name, interactions in (("original", tiny["interactions"]), ("moved", moved)):
        config = tiny_config(**{"model.kind": "pcrca", "data.interactions": str(interactions), "train.epochs": 2,
                                "train.windows": "random", "data.min_catalogue_coverage": 0.0})
        h2rec.train(config, tmp_path / name, progress=False, test=False)
        epochs[name] = untimed_epochs(tmp_path / name)
    assert "loss_item_contrast" in epochs["original"][0] and "loss_user_contrast" in epochs["original"][0]
    assert epochs["original"] == epochs["moved"]
    _, _, ds_a = prepare(tiny_config(**{"model.kind": "pcrca"}))
    _, _, ds_b = prepare(tiny_config(**{"model.kind": "pcrca", "data.interactions": str(moved),
                                        "data.min_catalogue_coverage": 0.0}))
    assert not np.array_equal(ds_a.test.targets, ds_b.test.targets)  # the test items did move


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_a_future_item_changes_no_earlier_output(pcrca, with_a_future_change, backbone):
    _, _, ds, model = pcrca(**{"model.backbone": backbone})
    a, b, _ = with_a_future_change(model, ds)
    torch.testing.assert_close(a.u_id[:, :6], b.u_id[:, :6])
    torch.testing.assert_close(a.u_sem[:, :6], b.u_sem[:, :6])
    assert not torch.allclose(a.u_id[:, 6:], b.u_id[:, 6:])
    assert not torch.allclose(a.u_sem[:, 6:], b.u_sem[:, 6:])


# ----------------------------------------------------------------------------- configuration errors
def test_configuration_mistakes_exit_2_with_a_clear_message(tiny, tmp_path):
    base = ["train", "--interactions", str(tiny["interactions"]), "--semid", str(tiny["semid"]), "--device", "cpu",
            "--quiet", "-o", str(tmp_path / "run")]
    runner = CliRunner()
    result = runner.invoke(main, [*base, "--model", "h2rec", "--item-contrast-weight", "0.3"])
    assert result.exit_code == 2 and "--item-contrast-weight" in result.output and "'pcrca'" in result.output
    result = runner.invoke(main, [*base, "--model", "pcrca", "--contrast-tau", "0"])
    assert result.exit_code == 2 and "--contrast-tau" in result.output and "> 0" in result.output
    result = runner.invoke(main, [*base, "--model", "pcrca", "--user-contrast-weight", "-1"])
    assert result.exit_code == 2 and "--user-contrast-weight" in result.output and ">= 0" in result.output


# ----------------------------------------------------------------------------- the command line, end to end
@pytest.mark.parametrize("backbone", BACKBONES)
def test_train_resume_evaluate_export_recommend(tiny, tmp_path, backbone, cli_round_trip):
    run = tmp_path / "run"
    args = ["train", "--model", "pcrca", "--backbone", backbone, "--interactions", str(tiny["interactions"]),
            "--semid", str(tiny["semid"]), "--max-len", "20", "--dim", "32", "--heads", "2", "--batch-size", "64",
            "--device", "cpu", "--quiet", "--eval-negatives", "20", "--loss", "bpr", "-o", str(run)]
    results, recommender, scores, layout = cli_round_trip(args, "pcrca", backbone)
    assert "loss_user_contrast" in (run / "metrics.jsonl").read_text()
    assert layout == ["id", "semantic"]
    # shared without the training data: the semid folder travels with its codes
    pretrained = h2rec.from_pretrained(recommender.save_pretrained(tmp_path / "shared"), device="cpu")
    history = [recommender.dataset.item_ids[i - 1] for i in recommender.dataset.sequences[0]]
    np.testing.assert_allclose(pretrained.scores(history)[1:].numpy(), scores[0], rtol=1e-4, atol=1e-4)


def test_a_resumed_run_ends_as_an_uninterrupted_one(tiny_config, tmp_path, crash_then_resume):
    """Exact resume: the item-level contrast's draws come from the run's generator, which the
    checkpoint restores."""
    config = tiny_config(**{"model.kind": "pcrca", "train.epochs": 3, "train.windows": "random",
                            "train.contrast_max_items": 40})
    straight = h2rec.train(config, tmp_path / "straight", progress=False)
    resumed = crash_then_resume(config, tmp_path / "crashed", epoch=2)
    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]
