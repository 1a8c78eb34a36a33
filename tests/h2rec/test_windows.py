"""All of each history: training windows, their targets, and the training loop around them
(learning-rate schedule, optimizer groups, early stopping on two clocks, presets, both full-ranking protocols)."""

from __future__ import annotations

import copy
from collections import Counter

import h2rec
import numpy as np
import pytest
import torch
from h2rec import assemble, step, training
from h2rec.config import DataConfig, TrainConfig, build_config
from h2rec.data import build_dataset, training_windows
from h2rec.errors import H2RecError
from h2rec.optim import learning_rate, make_optimizer
from h2rec.step import next_item_targets

LENGTHS = (1, 2, 3, 5, 7, 12, 40, 101)  # shorter than, equal to and many times longer than a window


@pytest.fixture
def unique_items(tmp_path):
    """A dataset whose every (user, position) holds its own item, so a target names its position."""
    rows, items = [], []
    for u, n in enumerate(LENGTHS):
        for t in range(n):
            rows.append(f"u{u},i{u}_{t},{t}\n")
            items.append(f"i{u}_{t}")
    path = tmp_path / "inter.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(rows))
    return build_dataset(DataConfig(interactions=str(path)), items)


def trained_targets(windows, causal: bool) -> Counter:
    """How often each item is a training target in one pass over ``windows``."""
    if causal:
        _, targets = next_item_targets(windows.rows, windows.first_target)
    else:  # every real position of a cloze row may be masked
        keep = torch.arange(windows.rows.shape[1])[None, :] >= windows.first_target[:, None]
        targets = windows.rows * keep
    return Counter(targets[targets > 0].tolist())


@pytest.mark.parametrize("scheme, stride", [("sliding", None), ("sliding", 3), ("sliding", 1), ("random", None),
                                            ("random", 4)])
def test_every_training_target_is_trained_exactly_once_per_epoch(unique_items, scheme, stride):
    ds = unique_items
    gen = torch.Generator().manual_seed(0)
    expected = Counter(int(item) for seq in ds.train for item in seq[1:])  # causal: all but each first item
    held_out = set(ds.valid.targets.tolist()) | set(ds.test.targets.tolist())
    for _ in range(3):  # the random phase changes between epochs; the count must not
        windows = training_windows(ds.train, 6, True, scheme, stride, gen)
        counts = trained_targets(windows, True)
        assert counts == expected
        assert not held_out & set(windows.rows.unique().tolist())  # validation and test items never enter
        assert windows.rows.shape[1] == 7


def test_sliding_stride_gives_every_target_its_context(unique_items):
    windows = training_windows(unique_items.train, 6, True, "sliding", 2)
    history_starts = {int(seq[0]) for seq in unique_items.train if len(seq)}
    for first, start in zip(windows.first_target, windows.rows[:, 0]):
        if int(start) not in history_starts:  # a window inside a long history
            assert int(first) + 1 >= 6 - 2  # its first trained target sees max_len - stride items or more


def test_random_windows_move_between_epochs_and_repeat_with_the_seed(unique_items):
    def epoch_rows(seed, epochs=2):
        gen = torch.Generator().manual_seed(seed)
        return [training_windows(unique_items.train, 6, True, "random", None, gen).rows for _ in range(epochs)]

    first, second = epoch_rows(0)
    assert first.shape != second.shape or not torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(epoch_rows(0), epoch_rows(0)))


def test_last_window_scheme_trains_only_each_historys_end(unique_items):
    windows = training_windows(unique_items.train, 6, True, "last", None)
    # each history's last max_len + 1 items: its last max_len targets, older ones never
    expected = Counter(int(item) for seq in unique_items.train if len(seq) >= 2 for item in seq[-7:][1:])
    assert trained_targets(windows, True) == expected
    assert len(windows) == sum(len(seq) >= 2 for seq in unique_items.train)


def test_cloze_windows_tile_each_history(unique_items):
    windows = training_windows(unique_items.train, 6, False, "sliding", None)
    assert trained_targets(windows, False) == Counter(int(i) for seq in unique_items.train for i in seq)
    assert windows.rows.shape[1] == 6 and int(windows.first_target.max()) == 0


def test_bad_stride_is_refused(unique_items):
    with pytest.raises(H2RecError, match="window_stride"):
        training_windows(unique_items.train, 6, True, "sliding", 7)


def test_one_epoch_of_training_trains_every_target_once(tiny_config, tmp_path, monkeypatch):
    """The training loop itself: every position target of an epoch reaches the ranking loss once."""
    seen: list[torch.Tensor] = []
    real = step.ranking_loss

    def record(model, state, targets, *args, **kwargs):
        seen.append(targets.clone())
        return real(model, state, targets, *args, **kwargs)

    monkeypatch.setattr(step, "ranking_loss", record)
    config = tiny_config(**{"model.kind": "hid", "data.max_len": 4, "train.epochs": 1})
    h2rec.train(config, tmp_path / "run", progress=False)
    _, _, ds = assemble.prepare(config)
    trained = int(sum(len(t) for t in seen))
    assert trained == sum(len(seq) - 1 for seq in ds.train if len(seq) >= 2)
    longest = max(len(seq) for seq in ds.train)
    assert longest > 5  # so the old last-window scheme would have dropped targets here


# ----------------------------------------------------------------------------- the loop
def test_learning_rate_schedules():
    total = 100
    warm = TrainConfig(lr=1.0, warmup_steps=10)
    assert learning_rate(warm, 0, total) == pytest.approx(0.1) and learning_rate(warm, 9, total) == 1.0
    assert learning_rate(warm, 50, total) == 1.0  # constant after warm-up
    cosine = TrainConfig(lr=1.0, lr_schedule="cosine", warmup_steps=10)
    assert learning_rate(cosine, 10, total) == pytest.approx(1.0)
    assert learning_rate(cosine, 55, total) == pytest.approx(0.5)
    assert learning_rate(cosine, 100, total) == pytest.approx(0.0, abs=1e-12)
    linear = TrainConfig(lr=2.0, lr_schedule="linear")
    assert learning_rate(linear, 50, total) == pytest.approx(1.0) and learning_rate(linear, 150, total) == 0.0


def test_weight_decay_spares_biases_and_norms(tiny_config):
    config, sids, _ = assemble.prepare(tiny_config(**{"train.weight_decay": 0.1}))
    model = assemble.build_model(config, sids)
    decayed, spared = make_optimizer(model, config.train).param_groups
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert any("norm" in names[id(p)] for p in spared["params"]) and any("bias" in names[id(p)]
                                                                          for p in spared["params"])
    assert len(decayed["params"]) + len(spared["params"]) == len(list(model.parameters()))


def test_optimizer_is_fused_on_cpu_and_steps_as_adamw(tiny_config):
    # the fused kernel (a step's cost grows with the item table: benchmarks/optimizer_step.py) applies
    # AdamW's update: one step from the same gradients lands where torch's foreach AdamW lands
    config, sids, _ = assemble.prepare(tiny_config(**{"train.weight_decay": 0.1}))
    model = assemble.build_model(config, sids)
    optimizer = make_optimizer(model, config.train)
    assert optimizer.defaults["fused"]
    reference = copy.deepcopy(model)
    params, ref_params = list(model.parameters()), list(reference.parameters())
    for p, q in zip(params, ref_params):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    optimizer.step()
    torch.optim.AdamW([{"params": [q for q in ref_params if q.dim() >= 2], "weight_decay": 0.1},
                       {"params": [q for q in ref_params if q.dim() < 2], "weight_decay": 0.0}],
                      lr=config.train.lr, foreach=True).step()
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_early_stopping_waits_for_both_clocks(tiny_config, tmp_path, monkeypatch):
    """Validation gets worse after epoch 1. Patience of 2 epochs alone stops at epoch 3; with a
    step clock longer than those epochs, training goes on until the steps have run out too."""
    scores = iter(np.linspace(0.5, 0.1, 50))
    monkeypatch.setattr(training, "evaluate_split",
                        lambda *a, **k: {"overall": {"NDCG@10": float(next(scores)), "n": 1}})
    monkeypatch.setattr(training, "final_results", lambda *a, **k: {})
    base = {"model.kind": "hid", "train.epochs": 30, "train.patience": 2}
    epochs_only = tmp_path / "epochs"
    h2rec.train(tiny_config(**base, **{"train.patience_steps": 0}), epochs_only, progress=False)
    steps = [r["step"] for r in map(eval_json, (epochs_only / "metrics.jsonl").read_text().splitlines())]
    assert len(steps) == 3
    per_epoch = steps[0]
    scores = iter(np.linspace(0.5, 0.1, 50))
    both = tmp_path / "both"
    h2rec.train(tiny_config(**base, **{"train.patience_steps": 5 * per_epoch}), both, progress=False)
    assert len((both / "metrics.jsonl").read_text().splitlines()) == 6  # best at epoch 1, 5 epochs of steps


def eval_json(line: str) -> dict:
    import json

    return json.loads(line)


# ----------------------------------------------------------------------------- presets, protocols
def test_paper_preset_and_its_overrides():
    paper = build_config(preset="paper")
    assert (paper.train.loss, paper.train.num_negatives, paper.train.windows) == ("bpr", 1, "last")
    assert build_config().train.loss == "ce" and build_config().train.windows == "sliding"
    assert build_config(overrides={"train.loss": "gbce"}, preset="paper").train.loss == "gbce"
    with pytest.raises(H2RecError, match="unknown preset"):
        build_config(preset="nope")


@pytest.mark.parametrize("key, value", [("train.label_smoothing", 1.5), ("train.warmup_steps", -1),
                                        ("model.emb_dropout", -0.1), ("train.sampled_negatives", 0)])
def test_out_of_range_settings_name_the_key(key, value):
    with pytest.raises(H2RecError, match=key.split(".")[1]):
        build_config(overrides={key: value})


def test_results_state_both_full_ranking_protocols(tiny_config, tmp_path):
    results = h2rec.train(tiny_config(**{"model.kind": "hid", "train.epochs": 1}), tmp_path / "run", progress=False)
    for split in ("valid", "test"):
        full, unseen = results[split]["full"]["overall"], results[split]["full_unseen"]["overall"]
        # leaving seen items out can only lift the target (it stays in the ranking itself)
        assert unseen["HR@10"] >= full["HR@10"] and unseen["NDCG@10"] >= full["NDCG@10"]
    assert set(results["protocols"]) == {"full", "full_unseen"} and "left out" in results["protocols"]["full_unseen"]
    assert results["selection"] == "valid NDCG@10 (full_unseen)"  # the default, as no training sequence repeats


def test_sparse_ids_move_only_the_rows_a_step_reads(tiny_config):
    config, sids, _ = assemble.prepare(tiny_config(**{"train.loss": "sampled_softmax", "train.sparse_ids": True}))
    model = assemble.build_model(config, sids)
    optimizer = make_optimizer(model, config.train)
    table_before = model.hid.weight.detach().clone()
    others_before = {n: p.detach().clone() for n, p in model.named_parameters() if n != "hid.weight"}
    items = torch.tensor([[3, 5, 7, 0], [2, 3, 0, 0]])
    negatives = torch.tensor([11, 13])
    encoded, _ = model(items)
    state = encoded.last()
    loss = model.score_shared(state, negatives).logsumexp(1).sum() - model.score(state, torch.tensor([[8], [9]])).sum()
    optimizer.zero_grad()
    loss.backward()
    assert model.hid.weight.grad.is_sparse  # the rows read, not a zeroed table with them added in
    optimizer.step()
    moved = (model.hid.weight.detach() != table_before).any(1).nonzero().flatten().tolist()
    assert moved == [2, 3, 5, 7, 8, 9, 11, 13]  # padding (0) and every row no one read stay where they were
    # the rest under AdamW: every parameter with a gradient moved (encoders, fusion, the codes' tables)
    trained = {n: p for n, p in model.named_parameters()
               if n != "hid.weight" and p.grad is not None and p.grad.abs().sum() > 0}
    assert len(trained) > 10
    assert all((p.detach() != others_before[n]).any() for n, p in trained.items())
    assert len(optimizer.param_groups) == 3  # AdamW's two groups and the table's; the schedule sets all three


@pytest.mark.parametrize("options, message", [
    ({"train.loss": "sampled_softmax", "model.kind": "llmesr"}, "model.kind"),
    ({"train.loss": "sampled_softmax", "train.weight_decay": 0.1}, "weight_decay"),
    ({"train.loss": "sampled_softmax", "train.grad_clip": 1.0}, "grad_clip"),
    ({}, "needs a sampled loss"),  # the full softmax, kept at this catalogue's size
])
def test_sparse_ids_refuse_what_lazy_updates_cannot_do(tiny_config, options, message):
    with pytest.raises(H2RecError, match=message):
        assemble.prepare(tiny_config(**{"train.sparse_ids": True, **options}))


def test_lazy_table_average_is_the_dense_average(tiny_config):
    """train.sparse_ids pays each table row's decays when a step reads it (optim.LazyTableAverage): after a
    flush, the same average as updating every row every step, warm-up and a mid-run flush included."""
    from h2rec.optim import LazyTableAverage, make_average

    config, sids, _ = assemble.prepare(tiny_config(**{"train.loss": "sampled_softmax", "train.sparse_ids": True,
                                                      "model.kind": "hid"}))
    model = assemble.build_model(config, sids)
    optimizer = make_optimizer(model, config.train)
    dense, lazy_average = make_average(model, 0.8, warmup=True), make_average(model, 0.8, warmup=True)
    lazy = LazyTableAverage(lazy_average, model, 0.8, warmup=True)
    g = torch.Generator().manual_seed(0)
    for i in range(12):
        items = torch.randint(1, 30, (4, 6), generator=g)  # a few rows read each step, most rows of 30 idle
        encoded, _ = model(items)
        loss = model.score_shared(encoded.last(), torch.arange(1, 8)).logsumexp(1).sum()
        optimizer.zero_grad()
        loss.backward()
        read = lazy.rows_read()
        optimizer.step()
        dense.update_parameters(model)
        lazy.update(model, *read)
        if i == 5:
            lazy.flush()
    lazy.flush()
    moved = (lazy_average.module.hid.weight != model.hid.weight).any(1)
    assert moved.sum() > 10  # the average trails the weights: the comparison below is not of copies
    for a, b in zip(dense.module.parameters(), lazy_average.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(dense.n_averaged) == int(lazy_average.n_averaged) == 12
