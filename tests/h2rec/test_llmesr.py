"""LLM-ESR as model kind ``llmesr`` (h2rec.rivals): each of (L1)-(L8) of docs/model.md against a
hand-written reference, no validation or test item in retrieval or training, causality, and the
whole command line (train, resume, evaluate, export, recommend) on the tiny generated dataset."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h2rec
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from h2rec.assemble import build_model, prepare
from h2rec.cli import main
from h2rec.data import training_windows
from h2rec.evaluate import next_item_states
from h2rec.rivals.llmesr import CrossViewAttention
from h2rec.rivals.llmesr_distill import (
    build_distillation,
    similar_users,
    text_user_vectors,
    window_owners,
)
from h2rec.runfolder import read_run_config
from h2rec.step import training_step

BACKBONES = ["sasrec", "gru4rec", "bert4rec"]


@pytest.fixture
def llmesr(small_model):
    """``llmesr(**overrides)``: (config, sids, dataset, model in eval mode) of a small llmesr."""
    return lambda **overrides: small_model("llmesr", **overrides)


# ----------------------------------------------------------------------------- (L1), (L2): the two item views
def test_the_semantic_view_is_a_two_layer_adapter_of_the_frozen_text(llmesr):
    _, sids, _, model = llmesr()
    items = torch.tensor([[3, 17, 0], [model.mask_token, 5, 160]])
    (w1, b1), (w2, b2) = [(layer.weight, layer.bias) for layer in model.adapter]
    text = sids.embeddings[items.clamp(max=model.n_items) - 1]  # item i is row i - 1
    expected = (text @ w1.T + b1) @ w2.T + b2  # (L1): W2 (W1 e^llm + b1) + b2
    got = model.semantic(items)
    torch.testing.assert_close(got[0, :2], expected[0, :2])
    torch.testing.assert_close(got[1, 1:], expected[1, 1:])
    torch.testing.assert_close(got[1, 0], model.se_mask)  # BERT4Rec's mask token has a learned vector
    # frozen: the text is neither trained nor saved with the weights (every build reads it from semid)
    assert "text" not in dict(model.named_parameters()) and "text" not in model.state_dict()
    model.semantic(items).sum().backward()
    assert model.adapter[0].weight.grad is not None and model.text.grad is None


def test_the_collaborative_view_starts_from_the_text_embeddings_principal_components(llmesr):
    config, sids, _, model = llmesr()
    d = config.model.dim
    text = sids.embeddings.double().numpy()
    centred = text - text.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:d].T
    reference *= config.model.init_std / reference.std(ddof=1)  # (L2): top-d components at the table's scale
    rows = model.co.weight[1 : model.n_items + 1].detach().double().numpy()
    # principal directions have no sign: compare what does not depend on it
    np.testing.assert_allclose(rows @ rows.T, reference @ reference.T, atol=1e-6)
    assert not model.co.weight[0].any()  # padding
    _, _, _, random_init = llmesr(**{"model.pca_init": False})  # the paper's ablation
    assert not torch.allclose(random_init.co.weight[1:5], model.co.weight[1:5])


# ----------------------------------------------------------------------------- (L3): cross-view attention
@pytest.mark.parametrize("causal", [True, False])
def test_cross_view_attention_against_a_loop(causal):
    torch.manual_seed(1)
    heads, d, n = 2, 6, 5
    attention = CrossViewAttention(d, heads)
    other, own = torch.randn(2, n, d), torch.randn(2, n, d)
    pad = torch.tensor([[False] * n, [False, False, False, True, True]])
    got = attention(other, own, pad, causal)
    q, k, v = attention.w_q(other), attention.w_k(own), attention.w_v(own)
    width = d // heads
    for b in range(2):
        length = int((~pad[b]).sum())
        for t in range(length):
            keys = range(t + 1) if causal else range(length)  # causal: positions <= t; else every real one
            out = []
            for h in range(heads):
                part = slice(h * width, (h + 1) * width)
                logits = torch.stack([q[b, t, part] @ k[b, s, part] / math.sqrt(width) for s in keys])
                out.append(sum(w * v[b, s, part] for w, s in zip(torch.softmax(logits, 0), keys)))
            expected = attention.w_o(torch.cat(out))  # queries of the other view, keys/values of this one
            torch.testing.assert_close(got[b, t], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cross", ["replace", "residual", "off"])
def test_both_views_go_through_one_shared_encoder(llmesr, cross):
    _, _, ds, model = llmesr(**{"model.llmesr_cross": cross})
    items = next_item_inputs(model, ds)
    encoded, _ = model(items)
    pad = items == 0
    e_co, e_se = model.co(items), model.semantic(items)
    # (L3) then (L4): u^co = f(CA(E^se -> E^co)), u^se = f(CA(E^co -> E^se)), the same f for both;
    # "residual" adds each view to its attended form, "off" feeds the views as they are
    if cross == "off":
        into_co, into_se = e_co, e_se
        assert not hasattr(model, "cross_co") and not hasattr(model, "cross_se")
    else:
        into_co, into_se = model.cross_co(e_se, e_co, pad, True), model.cross_se(e_co, e_se, pad, True)
        if cross == "residual":
            into_co, into_se = e_co + into_co, e_se + into_se
    torch.testing.assert_close(encoded.u_co, model.encoder(into_co, pad))
    torch.testing.assert_close(encoded.u_se, model.encoder(into_se, pad))
    assert sum(isinstance(m, type(model.encoder)) for m in model.modules()) == 1


def next_item_inputs(model, ds, users: int = 8) -> torch.Tensor:
    from h2rec.evaluate import model_inputs

    return model_inputs(model, ds.sequences[:users], 20)


# ----------------------------------------------------------------------------- (L5): the score
@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_score_is_the_concatenated_views_inner_product(llmesr, backbone):
    _, _, ds, model = llmesr(**{"model.backbone": backbone})
    with torch.no_grad():
        state = next_item_states(model, ds.sequences[:6], 20)
        catalogue = torch.arange(1, model.n_items + 1)
        e = torch.cat([model.co(catalogue), model.semantic(catalogue)], 1)  # [e^co : e^se]
        expected = torch.cat([state.u_co, state.u_se], 1) @ e.T  # (L5)
        scores = model.score_all(state)
        torch.testing.assert_close(scores[:, 1:], expected, atol=1e-5, rtol=1e-5)
        assert torch.isneginf(scores[:, 0]).all()
        torch.testing.assert_close(model.score_range(state, 40, 90), expected[:, 39:89], atol=1e-5, rtol=1e-5)
        picked = torch.randint(1, model.n_items + 1, (6, 7))
        torch.testing.assert_close(model.score(state, picked), expected.gather(1, picked - 1), atol=1e-5, rtol=1e-5)
        shared = torch.tensor([5, 9, 160])
        torch.testing.assert_close(model.score_shared(state, shared), expected[:, shared - 1], atol=1e-5, rtol=1e-5)
        # h2rec export: one inner product per user and item
        users, items = model.user_vectors(state), model.item_vectors()
        torch.testing.assert_close(users @ items.T, expected, atol=1e-5, rtol=1e-5)
    assert model.vector_parts() == ["collaborative", "semantic"] and items.shape[1] == 2 * model.cfg.dim


# ----------------------------------------------------------------------------- (L6): retrieval
def test_user_vectors_and_retrieval_against_a_loop():
    rng = np.random.default_rng(0)
    text = torch.cat([torch.zeros(1, 5), torch.randn(12, 5)])  # row 0: padding
    train = [rng.integers(1, 13, size=rng.integers(1, 6)) for _ in range(9)]
    vectors = text_user_vectors(train, text)
    for u, seq in enumerate(train):  # (L6): mean of the unit-length text embeddings of the training items
        expected = torch.stack([text[i] / text[i].norm() for i in seq]).mean(0)
        torch.testing.assert_close(vectors[u], expected)
    candidates = torch.tensor([len(s) >= 2 for s in train])
    got = similar_users(vectors, candidates, n=4, chunk=3)  # chunks smaller than the user count
    for u in range(len(train)):
        cos = {v: float(F.cosine_similarity(vectors[u], vectors[v], dim=0))
               for v in range(len(train)) if v != u and candidates[v]}
        expected = sorted(cos, key=lambda v: -cos[v])[:4]
        assert got[u, : len(expected)].tolist() == expected
        assert (got[u, len(expected):] == -1).all()  # fewer candidates than asked: -1 fills


@pytest.mark.parametrize("scheme, causal", [("sliding", True), ("last", True), ("random", True), ("sliding", False)])
def test_each_users_latest_window_is_found(scheme, causal):
    rng = np.random.default_rng(1)
    train = [rng.integers(1, 50, size=rng.integers(1, 40)) for _ in range(30)]
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    windows = training_windows(train, 8, causal, scheme, 4 if causal else None, gen)
    owners = window_owners(train, windows, 8, causal, scheme, 4 if causal else None, state)
    width = 9 if causal else 8
    trained = [u for u, s in enumerate(train) if len(s) >= (2 if causal else 1)]
    assert sorted(owners[owners >= 0].tolist()) == trained  # one latest window per trained user
    for row in (owners >= 0).nonzero()[:, 0].tolist():
        tail = train[owners[row]][-width:]
        assert windows.rows[row, : len(tail)].tolist() == tail.tolist()  # it ends at the last training item


# ----------------------------------------------------------------------------- (L7), (L8): the distillation loss
def test_the_distillation_loss_against_a_hand_written_teacher(llmesr):
    config, _, ds, model = llmesr()
    distill = build_distillation(config, ds, model)
    assert distill.similar.shape == (len(ds.train), config.train.similar_users)
    rows = torch.arange(6)
    owners = torch.tensor([4, -1, 7, 11, -1, 30])  # -1: not a latest window, no part in the loss
    windows = [ds.train[u][-21:] for u in owners.clamp(min=0).tolist()]
    from h2rec.data import pad_right
    from h2rec.step import next_item_targets

    items, _ = next_item_targets(pad_right(windows, 21)[rows])
    encoded, _ = model(items)
    got = distill.loss(model, encoded, owners)
    student = model.user_vectors(encoded.last())
    terms = []
    for r, u in enumerate(owners.tolist()):
        if u < 0:
            continue
        neighbours = [v for v in distill.similar[u].tolist() if v >= 0]
        state = next_item_states(model, [ds.train[v][:-1] for v in neighbours], 20)  # their training history
        teacher = model.user_vectors(state).mean(0)  # (L7): t_u, the mean of the similar users' [u^co : u^se]
        terms.append(((student[r] - teacher) ** 2).mean())
    torch.testing.assert_close(got, torch.stack(terms).mean())  # mean over users and dimensions
    # the teacher is a fixed target: the gradient flows into the student only
    got.backward()
    assert model.co.weight.grad is not None


@pytest.mark.parametrize("backbone", BACKBONES)
def test_teachers_encoded_in_groups_of_similar_length_as_in_one_pass(llmesr, backbone, monkeypatch):
    """Grouping the teachers by history length (3 a pass here) changes only the padding, not a vector."""
    import h2rec.rivals.llmesr_distill as distill_module

    config, _, ds, model = llmesr(**{"model.backbone": backbone})
    distill = build_distillation(config, ds, model)
    histories = [ds.train[u][:-1] for u in (5, 0, 9, 2, 14, 3, 7) if len(ds.train[u]) >= 2]
    assert len({len(h) for h in histories}) > 1  # lengths differ, so the order is shuffled and restored
    monkeypatch.setattr(distill_module, "TEACHER_ROWS", 3)
    with torch.no_grad():
        got = distill.teacher_vectors(model, histories)
        want = model.user_vectors(next_item_states(model, histories, config.data.max_len))
    torch.testing.assert_close(got, want)


def test_training_step_adds_alpha_times_the_distillation(llmesr):
    config, _, ds, model = llmesr(**{"train.distill_weight": 0.7})
    model.train()
    distill = build_distillation(config, ds, model)
    rows = torch.from_numpy(np.stack([np.pad(s[-21:], (0, 21 - len(s[-21:]))) for s in ds.train[:16]]))
    owners = torch.arange(16)
    parts = training_step(model, rows, config.train, torch.Generator().manual_seed(0), None, None, distill, owners)
    torch.testing.assert_close(parts["total"], parts["rec"] + 0.7 * parts["distill"])  # (L8)
    assert build_distillation(h2rec.build_config(overrides={**flat(config), "train.distill_weight": 0.0}),
                              ds, model) is None


def flat(config) -> dict:
    return {f"{s}.{k}": v for s, section in config.to_dict().items() for k, v in section.items()}


# ----------------------------------------------------------------------------- no validation or test item
def test_moving_a_test_item_changes_nothing_in_training(tiny, tiny_config, moved_test_items, untimed_epochs,
                                                        tmp_path):
    """Retrieval and training read training items only: move every user's test item (the last) to
    another item, and the similar users, the training losses and the validation metrics stay exactly
    the same."""
    moved = moved_test_items(tmp_path)

    outcome = {}
    for name, interactions in (("original", tiny["interactions"]), ("moved", moved)):
        config = tiny_config(**{"model.kind": "llmesr", "data.interactions": str(interactions), "train.epochs": 2,
                                "train.windows": "random", "data.min_catalogue_coverage": 0.0})
        _, sids, ds = prepare(config)
        torch.manual_seed(0)
        similar = build_distillation(config, ds, build_model(config, sids)).similar
        h2rec.train(config, tmp_path / name, progress=False, test=False)
        outcome[name] = similar, untimed_epochs(tmp_path / name), ds
    (sim_a, epochs_a, ds_a), (sim_b, epochs_b, ds_b) = outcome["original"], outcome["moved"]
    assert not np.array_equal(ds_a.test.targets, ds_b.test.targets)  # the test items did move
    assert torch.equal(sim_a, sim_b)
    assert epochs_a == epochs_b  # every loss part and validation metric of every epoch


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize("backbone, cross", [("sasrec", "replace"), ("gru4rec", "replace"), ("sasrec", "residual")])
def test_a_future_item_changes_no_earlier_output(llmesr, with_a_future_change, backbone, cross):
    _, _, ds, model = llmesr(**{"model.backbone": backbone, "model.llmesr_cross": cross})
    a, b, _ = with_a_future_change(model, ds)
    torch.testing.assert_close(a.u_co[:, :6], b.u_co[:, :6])
    torch.testing.assert_close(a.u_se[:, :6], b.u_se[:, :6])
    assert not torch.allclose(a.u_co[:, 6:], b.u_co[:, 6:])


# ----------------------------------------------------------------------------- configuration errors
def test_configuration_mistakes_exit_2_with_a_clear_message(tiny, tmp_path):
    base = ["train", "--interactions", str(tiny["interactions"]), "--semid", str(tiny["semid"]), "--device", "cpu",
            "--quiet", "-o", str(tmp_path / "run")]
    runner = CliRunner()
    result = runner.invoke(main, [*base, "--model", "h2rec", "--distill-weight", "0.3"])
    assert result.exit_code == 2 and "--distill-weight" in result.output and "'llmesr'" in result.output
    result = runner.invoke(main, [*base, "--model", "sid", "--llmesr-cross", "replace"])
    assert result.exit_code == 2 and "--llmesr-cross" in result.output and "'llmesr'" in result.output
    result = runner.invoke(main, [*base, "--model", "llmesr", "--llmesr-cross", "skip"])
    assert result.exit_code == 2 and "--llmesr-cross" in result.output and "residual" in result.output
    result = runner.invoke(main, [*base, "--model", "llmesr", "--similar-users", "0"])
    assert result.exit_code == 2 and "--similar-users" in result.output and ">= 1" in result.output
    no_text = tmp_path / "semid-without-embeddings"
    shutil.copytree(tiny["semid"], no_text)
    (no_text / "embeddings.safetensors").unlink()
    result = runner.invoke(main, [*base[:4], str(no_text), *base[5:], "--model", "llmesr"])
    assert result.exit_code == 2 and "text embeddings" in result.output, result.output


def test_a_run_from_before_the_setting_reads_as_the_authors_form(tiny_config, tmp_path):
    """Format-2 run folders predate model.llmesr_cross, when every LLM-ESR replaced its views: they must not
    read as today's default (another model with the same weights)."""
    run = tmp_path / "run"
    h2rec.train(tiny_config(**{"model.kind": "llmesr", "model.llmesr_cross": "replace", "train.epochs": 1}), run,
                progress=False)
    before = h2rec.load(run).evaluate()
    meta = json.loads((run / "config.json").read_text())
    del meta["model"]["llmesr_cross"]
    meta["format_version"] = 2
    (run / "config.json").write_text(json.dumps(meta))
    assert read_run_config(run).model.llmesr_cross == "replace"
    # the same metrics; the process's peak memory (also in the results) may have grown in between
    same = lambda results: {k: v for k, v in results.items() if not k.startswith("peak_")}  # noqa: E731
    assert same(h2rec.load(run).evaluate()) == same(before)


def test_another_models_run_of_format_2_still_reads(tiny_config, tmp_path):
    """Between the setting's arrival and its new default, every run folder recorded llmesr_cross 'replace',
    which another model never read: such a folder loads, resumes and evaluates."""
    run = tmp_path / "run"
    h2rec.train(tiny_config(**{"model.kind": "hid", "train.epochs": 1}), run, progress=False)
    meta = json.loads((run / "config.json").read_text())
    meta["model"]["llmesr_cross"], meta["format_version"] = "replace", 2
    (run / "config.json").write_text(json.dumps(meta))
    assert read_run_config(run).model.kind == "hid"
    h2rec.load(run).evaluate()
    h2rec.train(None, run, resume=True, progress=False)


# ----------------------------------------------------------------------------- the command line, end to end
@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_train_resume_evaluate_export_recommend(tiny, tmp_path, backbone, cli_round_trip):
    run = tmp_path / "run"
    args = ["train", "--model", "llmesr", "--backbone", backbone, "--interactions", str(tiny["interactions"]),
            "--semid", str(tiny["semid"]), "--max-len", "20", "--dim", "32", "--heads", "2", "--batch-size", "64",
            "--device", "cpu", "--quiet", "--eval-negatives", "20", "-o", str(run)]
    results, recommender, scores, layout = cli_round_trip(args, "llmesr", backbone)
    assert "loss_distill" in (run / "metrics.jsonl").read_text()
    assert not any("text" in key for key in load_keys(run))  # the frozen embeddings stay out of checkpoints
    assert layout == ["collaborative", "semantic"]
    # shared without the training data: the semid folder travels with its text embeddings
    pretrained = h2rec.from_pretrained(recommender.save_pretrained(tmp_path / "shared"), device="cpu")
    history = [recommender.dataset.item_ids[i - 1] for i in recommender.dataset.sequences[0]]
    np.testing.assert_allclose(pretrained.scores(history)[1:].numpy(), scores[0], rtol=1e-4, atol=1e-4)


def load_keys(run: Path) -> list[str]:
    from safetensors import safe_open

    state = json.loads((run / "checkpoints" / "last.json").read_text())
    with safe_open(run / "checkpoints" / state["files"]["best"], "pt") as f:
        return list(f.keys())


def test_a_resumed_run_ends_as_an_uninterrupted_one(tiny_config, tmp_path, crash_then_resume):
    """Exact resume, with random window phases: the distillation's users of each window are redrawn
    from a copy of the run's generator, which the checkpoint restores."""
    config = tiny_config(**{"model.kind": "llmesr", "train.epochs": 3, "train.windows": "random"})
    straight = h2rec.train(config, tmp_path / "straight", progress=False)
    resumed = crash_then_resume(config, tmp_path / "crashed", epoch=2)
    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]
