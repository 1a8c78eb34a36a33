"""MELT as model kind ``melt`` (h2rec.rivals): each of (M1)-(M8) of docs/model.md against a
hand-written reference, the curriculum schedule, no validation or test item in training, causality,
and the whole command line (train, resume, evaluate, export, recommend) on the tiny generated dataset."""

from __future__ import annotations

import math
import shutil

import h2rec
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from h2rec.assemble import build_model, prepare
from h2rec.cli import main
from h2rec.errors import H2RecError
from h2rec.evaluate import model_inputs, next_item_states
from h2rec.rivals.melt_branches import ItemContexts, build_branches, curriculum_weight, pareto_threshold, warm_start
from h2rec.step import training_step

BACKBONES = ["sasrec", "gru4rec", "bert4rec"]
MAX_LEN = 20  # tiny_config's data.max_len


@pytest.fixture
def melt(small_model):
    """``melt(**overrides)``: (config, dataset, model in eval mode, its branches) of a small melt."""

    def build(**overrides):
        config, _, ds, model = small_model("melt", **{"model.num_heads": 1, **overrides})
        return config, ds, model, build_branches(config, ds, model)

    return build


def raw_state(model, seq) -> torch.Tensor:
    """f_θ(S) written out: the encoder over the item table, read at the last input position (d,)."""
    items = model_inputs(model, [np.asarray(seq)], MAX_LEN)
    out = model.encoder(model.item(items), items == 0)
    return out[0, int((items[0] != 0).sum()) - 1]


def linear(layer, x):
    return x @ layer.weight.T + layer.bias


# ----------------------------------------------------------------------------- (M1): head and tail
def test_head_and_tail_split_at_the_pareto_quantile_of_training_counts(melt):
    config, ds, model, branches = melt()
    lengths = np.array([len(s) for s in ds.train])
    cut = np.quantile(lengths, 0.8)  # the authors' rule: a user above the 80% quantile is head
    assert branches.user_threshold == math.floor(cut) and model.user_threshold == branches.user_threshold
    assert branches.head_users.tolist() == np.flatnonzero(lengths > cut).tolist()
    # items: counted in training only (validation and test items are not), quantile over items seen there
    assert np.array_equal(ds.popularity, np.bincount(np.concatenate(list(ds.train)), minlength=ds.n_items + 1))
    counts = ds.popularity[1:]
    cut = np.quantile(counts[counts > 0], 0.8)
    assert branches.item_threshold == math.floor(cut)
    assert branches.head_items.tolist() == (np.flatnonzero(counts > cut) + 1).tolist()
    assert branches.tail_items.tolist() == (np.flatnonzero((counts > 0) & (counts <= cut)) + 1).tolist()
    assert 0 < len(branches.head_users) < len(ds.train) and 0 < len(branches.head_items) < ds.n_items
    assert pareto_threshold(np.array([1, 1, 2, 3, 10]), 0.5) == 2  # 2, the median: 3 and 10 are head
    # the user branch off: no tail user is enhanced (M3)
    _, _, no_user_branch, _ = melt(**{"train.user_branch_weight": 0.0})
    assert no_user_branch.user_threshold == -1


# ----------------------------------------------------------------------------- (M4): item contexts
def test_item_contexts_are_the_prefixes_and_reversed_suffixes_ending_at_the_item():
    train = [np.array([1, 2, 3, 1, 4]), np.array([2]), np.array([4, 2])]
    contexts = ItemContexts(train, n_items=5, max_len=3)
    for item in range(6):
        expected = []
        for seq in train:
            for p in np.flatnonzero(seq == item):
                expected.append(seq[max(0, p - 2) : p + 1].tolist())  # the last 3 items up to and with it
                if len(seq) > 1:
                    expected.append(seq[p : p + 3][::-1].tolist())  # from it onwards, reversed: it comes last
        got = [row.tolist() for row in contexts.rows(contexts.of(item))]
        assert contexts.length[contexts.of(item)].tolist() == [len(row) for row in got]  # for batching by length
        assert sorted(got) == sorted(expected), item
        assert contexts.count(np.array([item]))[0] == len(expected)
    # item 1 twice in the first history: [1], [3, 2, 1] (reversed suffix) and [2, 3, 1], [4, 1]
    assert sorted(row.tolist() for row in contexts.rows(contexts.of(1))) == [[1], [2, 3, 1], [3, 2, 1], [4, 1]]


# ----------------------------------------------------------------------------- (M7): the curriculum
def test_the_curriculum_moves_weight_from_the_longest_to_those_just_above_the_threshold():
    t, cap = 5, 15
    counts = torch.tensor([6, 10, 15, 40])  # head counts: just above T, between, at the cap, beyond it
    offset = torch.tensor([0.0, 4 / 9, 1.0, 1.0])  # (min(c, L) - T - 1) / (L - T - 1)
    for progress in (0.0, 0.25, 0.5, 1.0):
        expected = torch.sin(math.pi / 2 * progress + math.pi / 2 * offset).abs()  # (M7)
        torch.testing.assert_close(curriculum_weight(counts, t, cap, progress), expected)
    start, end = curriculum_weight(counts, t, cap, 0.0), curriculum_weight(counts, t, cap, 1.0)
    torch.testing.assert_close(start[[0, 2]], torch.tensor([0.0, 1.0]))  # first the longest ...
    torch.testing.assert_close(end[[0, 2]], torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)  # ... last the nearest


@pytest.mark.parametrize("curriculum_epochs, epochs, expected", [(None, 5, [0, 0.2, 0.4, 0.6, 0.8]),
                                                                 (2, 5, [0, 0.5, 1, 1, 1])])
def test_the_curriculum_progress_over_epochs(melt, curriculum_epochs, epochs, expected):
    overrides = {"train.epochs": epochs, "train.item_branch_weight": 0.0}  # no refresh: only the schedule
    if curriculum_epochs:
        overrides["train.curriculum_epochs"] = curriculum_epochs
    _, _, model, branches = melt(**overrides)
    progress = []
    for epoch in range(1, epochs + 1):  # ρ = (e - 1) / e_max, counted from 0 as the authors' loop, then held at 1
        branches.start_epoch(model, epoch, 3, torch.Generator().manual_seed(epoch))
        progress.append(branches.progress)
    assert progress == pytest.approx(expected)


def test_each_epoch_plans_every_head_user_and_item_once(melt):
    _, _, model, branches = melt(**{"train.item_branch_weight": 0.0})
    branches.item_weight = 0.4  # the plan only (no refresh)
    branches.start_epoch(model, 1, 7, torch.Generator().manual_seed(0))
    assert len(branches.plan) == 7
    users, items = (torch.cat([part[k] for part in branches.plan]) for k in (0, 1))
    assert sorted(users.tolist()) == branches.head_users.tolist()
    assert sorted(items.tolist()) == branches.head_items.tolist()
    branches.step = 7
    with pytest.raises(RuntimeError, match="plan"):
        branches.losses(model, torch.Generator())


# ----------------------------------------------------------------------------- (M2): the user branch
def test_the_user_branch_loss_against_a_hand_written_reference(melt):
    _, ds, model, branches = melt()
    branches.progress = 0.3
    users = branches.head_users[:5]
    gen = torch.Generator().manual_seed(1)
    replay = torch.Generator().manual_seed(1)
    got = branches.user_loss(model, users, gen)
    histories = [ds.train[u] for u in users.tolist()]
    recent = branches.draw_recent(histories, replay)  # the same draws
    t = branches.user_threshold
    terms = []
    for history, short in zip(histories, recent):
        assert 1 <= len(short) <= t and history[-len(short):].tolist() == short.tolist()  # S̄_u: the R most recent
        p, r = raw_state(model, history), raw_state(model, short)  # f_θ(S_u), f_θ(S̄_u)
        w = abs(math.sin(math.pi / 2 * 0.3 + math.pi / 2 * (min(len(history), MAX_LEN) - t - 1) / (MAX_LEN - t - 1)))
        terms.append(w * ((p - linear(model.g_user, r)) ** 2).mean())  # (M2): w_u ‖p_u - G^U(r̄_u)‖² / d
    torch.testing.assert_close(got, torch.stack(terms).mean())
    got.backward()  # no stop-gradient: both the long history's state and G^U learn
    assert model.g_user.weight.grad is not None and model.item.weight.grad[ds.train[users[0]][-1]].any()


# ----------------------------------------------------------------------------- (M5): the item branch
def test_the_item_branch_loss_against_a_hand_written_reference(melt):
    _, ds, model, branches = melt()
    branches.progress = 0.6
    items = branches.head_items[:4]
    gen = torch.Generator().manual_seed(2)
    replay = torch.Generator().manual_seed(2)
    got = branches.item_loss(model, items, gen)
    picked = branches.draw_contexts(items, replay)  # the same draws
    t = branches.item_threshold
    terms = []
    for item, ids in zip(items.tolist(), picked):
        assert 1 <= len(ids) <= min(t, branches.contexts.count(np.array([item]))[0]) and len(set(ids)) == len(ids)
        rows = branches.contexts.rows(ids)
        assert all(row[-1] == item for row in rows)  # contexts of this item
        r = torch.stack([raw_state(model, row) for row in rows])  # f_θ(s) for s in C̃_i
        r_plus = linear(model.g_user, r) + r  # Eq. 12: G^U(r̃) + β r̃, β = 1
        predicted = linear(model.g_item, r_plus.mean(0))  # G^I(r̄_i)
        count = ds.popularity[item]
        w = abs(math.sin(math.pi / 2 * 0.6 + math.pi / 2 * (min(count, t + MAX_LEN) - t - 1) / (MAX_LEN - 1)))
        terms.append(w * ((model.item.weight[item] - predicted) ** 2).mean())  # (M5), w_i once (not squared)
    torch.testing.assert_close(got, torch.stack(terms).mean())


def test_the_draws_cover_their_ranges(melt):
    _, ds, _, branches = melt()
    gen = torch.Generator().manual_seed(3)
    busiest = branches.head_items[int(np.argmax(branches.contexts.count(branches.head_items.numpy())))]
    sizes = {len(branches.draw_contexts(busiest[None], gen)[0]) for _ in range(300)}
    assert sizes == set(range(1, branches.item_threshold + 1))  # K uniform in 1..min(|C_i|, T_I)
    user = int(branches.head_users[0])
    lengths = {len(branches.draw_recent([ds.train[user]], gen)[0]) for _ in range(300)}
    assert lengths == set(range(1, branches.user_threshold + 1))  # R uniform in 1..T_U


# ----------------------------------------------------------------------------- (M6): the tail items' refresh
def test_the_tail_item_refresh_against_a_loop(melt):
    _, ds, model, branches = melt()
    expected = {}
    with torch.no_grad():  # from the table before the refresh, in evaluation mode
        for item in branches.tail_items[:5].tolist():
            rows = branches.contexts.rows(branches.contexts.of(item))  # all of C_i
            r = torch.stack([raw_state(model, row) for row in rows]).mean(0)
            expected[item] = linear(model.g_item, r)  # (M6) with γ = 0
    model.train()  # the refresh runs without dropout and leaves the mode as it found it
    before = model.item.weight.detach().clone()
    branches.refresh_tail_items(model)
    assert model.training
    after = model.item.weight.detach()
    for item, row in expected.items():
        torch.testing.assert_close(after[item], row)
    untouched = np.setdiff1d(np.arange(ds.n_items + 2), branches.tail_items)  # head items, unseen ones, 0, mask
    assert torch.equal(after[untouched], before[untouched])


# ----------------------------------------------------------------------------- (M3) and the score
@pytest.mark.parametrize("backbone", BACKBONES)
def test_tail_users_are_enhanced_and_the_score_is_one_inner_product(melt, backbone):
    _, ds, model, branches = melt(**{"model.backbone": backbone})
    t = branches.user_threshold
    short = next(s for s in ds.sequences if 2 <= len(s) <= t)
    long = next(s for s in ds.sequences if t < len(s) < MAX_LEN - 1)
    with torch.no_grad():
        state = next_item_states(model, [short, long], MAX_LEN)
        p_short, p_long = raw_state(model, short), raw_state(model, long)
        torch.testing.assert_close(state.p[0], linear(model.g_user, p_short) + p_short)  # (M3): G^U(p) + β p
        torch.testing.assert_close(state.p[1], p_long)  # a head user's state as it is
        catalogue = model.item.weight[1 : model.n_items + 1]
        expected = state.p @ catalogue.T  # p̂_u · q_j
        scores = model.score_all(state)
        torch.testing.assert_close(scores[:, 1:], expected)
        assert torch.isneginf(scores[:, 0]).all()
        torch.testing.assert_close(model.score_range(state, 40, 90), expected[:, 39:89])
        picked = torch.randint(1, model.n_items + 1, (2, 7))
        torch.testing.assert_close(model.score(state, picked), expected.gather(1, picked - 1))
        shared = torch.tensor([5, 9, 160])
        torch.testing.assert_close(model.score_shared(state, shared), expected[:, shared - 1])
        torch.testing.assert_close(model.user_vectors(state) @ model.item_vectors().T, expected)
        model.user_threshold.fill_(-1)  # before a run sets T_U: nobody is enhanced
        torch.testing.assert_close(next_item_states(model, [short], MAX_LEN).p[0], p_short)
    assert model.vector_parts() == ["id"]


# ----------------------------------------------------------------------------- (M8): the objective
def test_training_step_adds_the_weighted_branch_losses(melt):
    config, ds, model, branches = melt(**{"train.user_branch_weight": 0.3, "train.item_branch_weight": 0.7})
    model.train()
    gen = torch.Generator().manual_seed(0)
    branches.start_epoch(model, 1, 1, gen)
    rows = torch.from_numpy(np.stack([np.pad(s[-21:], (0, 21 - len(s[-21:]))) for s in ds.train[:16]]))
    parts = training_step(model, rows, config.train, gen, melt=branches)
    assert parts["user_branch"] > 0 and parts["item_branch"] > 0
    torch.testing.assert_close(parts["total"], parts["rec"] + 0.3 * parts["user_branch"] + 0.7 * parts["item_branch"])


# ----------------------------------------------------------------------------- no validation or test item
def test_moving_a_test_item_changes_nothing_in_training(tiny, tiny_config, moved_test_items, untimed_epochs,
                                                        tmp_path):
    """The thresholds, the contexts, the histories read training items only: move every user's test item
    (the last) to another item, and the branches, the training losses and the validation metrics stay
    exactly the same."""
    moved = moved_test_items(tmp_path)

    outcome = {}
    for name, interactions in (("original", tiny["interactions"]), ("moved", moved)):
        config = tiny_config(**{"model.kind": "melt", "data.interactions": str(interactions), "train.epochs": 2,
                                "train.windows": "random", "data.min_catalogue_coverage": 0.0})
        _, sids, ds = prepare(config)
        branches = build_branches(config, ds, build_model(config, sids))
        h2rec.train(config, tmp_path / name, progress=False, test=False)
        outcome[name] = branches, untimed_epochs(tmp_path / name), ds
    (a, epochs_a, ds_a), (b, epochs_b, ds_b) = outcome["original"], outcome["moved"]
    assert not np.array_equal(ds_a.test.targets, ds_b.test.targets)  # the test items did move
    assert (a.user_threshold, a.item_threshold) == (b.user_threshold, b.item_threshold)
    for key in ("head_users", "head_items", "tail_items"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    for key in ("user", "position", "backwards", "offsets"):
        assert np.array_equal(getattr(a.contexts, key), getattr(b.contexts, key)), key
    assert epochs_a == epochs_b  # every loss part and validation metric of every epoch


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_a_future_item_changes_no_earlier_output(melt, with_a_future_change, backbone):
    _, ds, model, _ = melt(**{"model.backbone": backbone})
    a, b, items = with_a_future_change(model, ds)
    torch.testing.assert_close(a.p[:, :6], b.p[:, :6])
    assert not torch.allclose(a.p[:, 6:], b.p[:, 6:])
    with torch.no_grad():  # a tail user's next-item state reads its own history only
        short = model(items[:, :6])[0].last().p
        torch.testing.assert_close(short, model(torch.cat([items[:, :6], 0 * items[:, 6:]], 1))[0].last().p)


# ----------------------------------------------------------------------------- configuration errors
def test_configuration_mistakes_are_refused_with_a_clear_message(tiny, tiny_config, tmp_path):
    with pytest.raises(H2RecError, match="train.user_branch_weight.*'melt'"):
        tiny_config(**{"model.kind": "hid", "train.user_branch_weight": 0.3})
    with pytest.raises(H2RecError, match="train.item_branch_weight must be >= 0"):
        tiny_config(**{"model.kind": "melt", "train.item_branch_weight": -0.1})
    with pytest.raises(H2RecError, match="melt_head_share must lie strictly between 0 and 1"):
        tiny_config(**{"model.kind": "melt", "train.melt_head_share": 1.0})
    with pytest.raises(H2RecError, match="curriculum_epochs must be an integer >= 1"):
        tiny_config(**{"model.kind": "melt", "train.curriculum_epochs": 0})
    with pytest.raises(H2RecError, match="T_U = 9 .* data.max_len is 10"):  # a head user's history must fit
        h2rec.train(tiny_config(**{"model.kind": "melt", "data.max_len": 10}), tmp_path / "short", progress=False)
    with pytest.raises(H2RecError, match="melt_init .*not a finished run folder"):
        h2rec.train(tiny_config(**{"model.kind": "melt", "train.melt_init": str(tmp_path)}), tmp_path / "x",
                    progress=False)
    assert not (tmp_path / "x" / "config.json").exists()  # refused before a file is written
    # the command line: exit 2 and the key named
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {kind: melt}\ntrain: {melt_head_share: 0}\n")
    result = CliRunner().invoke(main, ["train", "--config", str(bad), "--interactions", str(tiny["interactions"]),
                                       "--semid", str(tiny["semid"]), "--quiet", "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "train.melt_head_share" in result.output, result.output
    result = CliRunner().invoke(main, ["train", "--model", "hid", "--user-branch-weight", "0.3", "--interactions",
                                       str(tiny["interactions"]), "--semid", str(tiny["semid"]), "--quiet", "-o",
                                       str(tmp_path / "run")])
    assert result.exit_code == 2 and "--user-branch-weight" in result.output and "'melt'" in result.output


# ----------------------------------------------------------------------------- the authors' pretrained start
def test_a_run_starts_from_a_finished_hid_run(tiny_config, tmp_path):
    h2rec.train(tiny_config(**{"model.kind": "hid", "train.epochs": 1}), tmp_path / "sasrec", progress=False)
    config, sids, ds = prepare(tiny_config(**{"model.kind": "melt", "train.melt_init": str(tmp_path / "sasrec")}))
    model = build_model(config, sids)
    g_user = model.g_user.weight.detach().clone()
    warm_start(model, config, sids, ds)
    sasrec = h2rec.load(tmp_path / "sasrec", "cpu").model
    assert torch.equal(model.item.weight, sasrec.hid.weight)
    for key, value in sasrec.f_hid.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    assert torch.equal(model.g_user.weight, g_user)  # the branches' maps start as built
    results = h2rec.train(config, tmp_path / "melt", progress=False, test=False)  # and trains from there
    assert results["epochs_run"] == 2
    config, sids, ds = prepare(tiny_config(**{"model.kind": "melt", "model.backbone": "gru4rec",
                                              "train.melt_init": str(tmp_path / "sasrec")}))
    with pytest.raises(H2RecError, match="model.backbone 'sasrec' \\(needed: 'gru4rec'\\)"):
        warm_start(build_model(config, sids), config, sids, ds)


# ----------------------------------------------------------------------------- the command line, end to end
@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_train_resume_evaluate_export_recommend(tiny, tmp_path, backbone, cli_round_trip):
    run = tmp_path / "run"
    config = tmp_path / "melt.yaml"
    config.write_text("model: {kind: melt}\ntrain: {user_branch_weight: 0.2, item_branch_weight: 0.3}\n")
    args = ["train", "--config", str(config), "--backbone", backbone, "--interactions", str(tiny["interactions"]),
            "--semid", str(tiny["semid"]), "--max-len", "20", "--dim", "32", "--heads", "2", "--batch-size", "64",
            "--device", "cpu", "--quiet", "--eval-negatives", "20", "-o", str(run)]
    results, recommender, scores, layout = cli_round_trip(args, "melt", backbone)
    assert "loss_user_branch" in (run / "metrics.jsonl").read_text()
    assert int(recommender.model.user_threshold) >= 1  # T_U travels with the weights
    assert layout == ["id"]
    # shared without the training data: T_U is in the weights, so tail users are still enhanced
    pretrained = h2rec.from_pretrained(recommender.save_pretrained(tmp_path / "shared"), device="cpu")
    short = min(range(len(recommender.dataset.sequences)), key=lambda u: len(recommender.dataset.sequences[u]))
    history = [recommender.dataset.item_ids[i - 1] for i in recommender.dataset.sequences[short]]
    np.testing.assert_allclose(pretrained.scores(history)[1:].numpy(), scores[short], rtol=1e-4, atol=1e-4)


def test_a_resumed_run_ends_as_an_uninterrupted_one(tiny_config, tmp_path, crash_then_resume):
    """Exact resume: the refresh, the plan and the branches' draws come from the restored weights and
    generator; the curriculum ends before the run does (e_max 2 of 3 epochs)."""
    config = tiny_config(**{"model.kind": "melt", "train.epochs": 3, "train.windows": "random",
                            "train.curriculum_epochs": 2})
    straight = h2rec.train(config, tmp_path / "straight", progress=False)
    resumed = crash_then_resume(config, tmp_path / "crashed", epoch=2)
    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]
    shutil.rmtree(tmp_path / "straight")
