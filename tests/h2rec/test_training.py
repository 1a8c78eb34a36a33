"""Training end to end: learning, determinism, exact resume, run folders."""

from __future__ import annotations

import json

import h2rec
import pytest
import torch
from h2rec.checkpoint import FORMAT_VERSION
from h2rec.errors import H2RecError
from h2rec.evaluate import selected_protocol


def metrics_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timings(record):
    return {k: v for k, v in record.items() if "seconds" not in k}


def test_a_few_epochs_beat_random_by_a_wide_margin(tiny_config, tmp_path):
    config = tiny_config(**{"train.epochs": 8, "train.lr": 5e-3, "model.kind": "h2rec"})
    results = h2rec.train(config, tmp_path / "run", progress=False)
    n_items = results["data"]["catalogue_items"]
    test = results["test"]["full"]["overall"]
    random_hr10 = 10 / n_items  # a random ranking puts the target in the top 10 this often
    assert test["HR@10"] > 3 * random_hr10, test
    assert set(results["test"]["full"]) >= {"overall", "head", "tail"}
    assert results["test"]["full"]["head"]["n"] + results["test"]["full"]["tail"]["n"] == test["n"]


@pytest.mark.parametrize("options", [
    {},  # the defaults
    # every piece of state a resume must restore: the window phase, the schedule's step, shared negatives
    {"train.windows": "random", "data.max_len": 5, "train.lr_schedule": "cosine", "train.warmup_steps": 5,
     "train.loss": "sampled_softmax", "train.sampler": "popularity", "train.sampled_negatives": 16},
    {"train.ema_decay": 0.9},  # the weights' average too
    # lazy updates of the ID table: two optimizers' moments in one checkpoint, SparseAdam's step count
    {"train.loss": "sampled_softmax", "train.sampled_negatives": 16, "train.sparse_ids": True}])
def test_same_seed_same_numbers_and_resume_after_a_crash_matches(tiny_config, tmp_path, crash_then_resume, options):
    config = tiny_config(**{"train.epochs": 4, "train.patience": 10, **options})
    straight = h2rec.train(config, tmp_path / "straight", progress=False)
    again = h2rec.train(config, tmp_path / "again", progress=False)
    assert straight["test"] == again["test"]

    resumed = crash_then_resume(config, tmp_path / "crashed", 2)

    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]
    assert [without_timings(r) for r in metrics_lines(tmp_path / "crashed")] == \
           [without_timings(r) for r in metrics_lines(tmp_path / "straight")]


def test_run_folder_files_and_checkpoint_cleanup(tiny_config, tmp_path):
    run = tmp_path / "run"
    h2rec.train(tiny_config(**{"train.epochs": 3}), run, progress=False)
    for name in ("config.json", "data_stats.json", "metrics.jsonl", "results.json", "checkpoints/last.json"):
        assert (run / name).is_file(), name
    state = json.loads((run / "checkpoints" / "last.json").read_text())
    on_disk = sorted(p.name for p in (run / "checkpoints").glob("*.safetensors"))
    # the average of the weights (train.ema_epochs, on by default) is kept beside them
    assert on_disk == sorted(state["files"][key] for key in ("weights", "state", "best", "average"))
    config = json.loads((run / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION
    assert config["model"]["pca_init"] is True  # the resolved value is saved


def test_existing_run_folder_is_not_overwritten(tiny_config, tmp_path):
    run = tmp_path / "run"
    h2rec.train(tiny_config(**{"train.epochs": 1}), run, progress=False)
    before = (run / "results.json").read_text()
    with pytest.raises(H2RecError, match="already holds a run"):
        h2rec.train(tiny_config(**{"train.epochs": 1}), run, progress=False)
    assert (run / "results.json").read_text() == before


def test_run_folder_from_another_version_is_refused(tiny_config, tmp_path):
    run = tmp_path / "run"
    h2rec.train(tiny_config(**{"train.epochs": 1}), run, progress=False)
    meta = json.loads((run / "config.json").read_text())
    meta["format_version"] = 99
    (run / "config.json").write_text(json.dumps(meta))
    with pytest.raises(H2RecError, match="run folder format 99"):
        h2rec.load(run)


def test_sampled_protocol_and_api(tiny_config, tmp_path):
    run = tmp_path / "run"
    results = h2rec.train(tiny_config(**{"train.epochs": 2, "eval.negatives": 50}), run, progress=False)
    assert set(results["test"]) == {"full", "full_unseen", "sampled_50"}
    # the tiny set repeats no item in a training sequence: the default selects with seen items left out
    assert results["selection"] == "valid NDCG@10 (full_unseen)"
    rec = h2rec.load(run, device="cpu")
    again = rec.evaluate(negatives=50)
    assert again["test"] == results["test"]  # same checkpoint, same candidates
    user = rec.dataset.user_ids[0]
    top = rec.recommend(user, k=5)
    history = {rec.dataset.item_ids[i - 1] for i in rec.dataset.sequences[0]}
    assert len(top) == 5 and not {row["item_id"] for row in top} & history
    assert top == sorted(top, key=lambda r: -r["score"])
    with pytest.raises(H2RecError, match="not in"):
        rec.recommend("nobody")


@pytest.mark.parametrize("backbone, loss", [
    ("bert4rec", {"train.loss": "bpr"}), ("gru4rec", {"train.loss": "ce", "train.ce_chunk_items": 50}),
    ("sasrec", {"train.loss": "sampled_softmax", "train.sampled_negatives": 16}),
    ("sasrec", {"train.loss": "sampled_softmax", "train.sampler": "in_batch"}),
    ("sasrec", {"train.loss": "sampled_softmax", "train.sampler": "popularity", "train.sampled_negatives": 16}),
    ("sasrec", {"train.loss": "bce"}), ("sasrec", {"train.loss": "gbce"}),
    ("sasrec", {"train.label_smoothing": 0.1, "train.windows": "random", "train.lr_schedule": "cosine",
                "train.warmup_steps": 3, "train.grad_clip": 1.0, "train.weight_decay": 0.01})])
def test_other_backbones_and_losses_train(tiny_config, tmp_path, backbone, loss):
    config = tiny_config(**{"model.backbone": backbone, "train.num_negatives": 8,
                            "model.num_heads": 2 if backbone == "bert4rec" else 1, "train.epochs": 1, **loss})
    results = h2rec.train(config, tmp_path / "run", progress=False)
    assert results["epochs_run"] == 1 and results["test"]["full"]["overall"]["n"] > 0


def test_a_catalogue_above_ce_max_items_trains_with_the_sampled_softmax(tiny_config):
    # the tiny catalogue has 160 items: with ce_max_items below that, ce resolves to sampled_softmax
    # (what config.json records); 0 or a ce-only option keeps ce
    from h2rec.assemble import prepare

    big = {"train.ce_max_items": 100, "train.sampled_negatives": 32}
    assert prepare(tiny_config(**big))[0].train.loss == "sampled_softmax"
    assert prepare(tiny_config(**{**big, "train.ce_max_items": 0}))[0].train.loss == "ce"
    assert prepare(tiny_config(**{**big, "train.label_smoothing": 0.1}))[0].train.loss == "ce"
    assert prepare(tiny_config(**big, **{"train.loss": "bpr"}))[0].train.loss == "bpr"
    assert prepare(tiny_config())[0].train.loss == "ce"  # 160 items <= the default 100,000


def test_default_label_smoothing_follows_the_loss_it_ends_up_with(tiny_config):
    # None (the default) is resolved with the loss, and config.json records the number
    from h2rec.assemble import prepare

    def smoothing(**overrides):
        return prepare(tiny_config(**overrides))[0].train.label_smoothing

    assert smoothing() == 0.1  # the full softmax
    assert smoothing(**{"train.ce_max_items": 100}) == 0.0  # became the sampled softmax
    assert smoothing(**{"train.loss": "bpr"}) == smoothing(**{"train.exclude_seen": True}) == 0.0
    assert smoothing(**{"train.label_smoothing": 0.2}) == 0.2
    with pytest.raises(H2RecError, match="label_smoothing"):  # asked for where it cannot act
        tiny_config(**{"train.loss": "bpr", "train.label_smoothing": 0.1})


def test_the_weight_average_follows_its_formula():
    from h2rec.config import TrainConfig
    from h2rec.optim import ema_decay, make_average

    assert make_average(torch.nn.Linear(3, 2), 0.0) is None  # off
    # a horizon in epochs: 1 / (1 - decay) = epochs x steps an epoch; a decay per step wins when given
    assert ema_decay(TrainConfig(ema_epochs=2.0, ema_decay=0.0), steps_per_epoch=10) == pytest.approx(0.95)
    assert ema_decay(TrainConfig(ema_epochs=2.0, ema_decay=0.5), steps_per_epoch=10) == 0.5
    assert ema_decay(TrainConfig(ema_epochs=0.0, ema_decay=0.0), steps_per_epoch=10) == 0.0
    assert ema_decay(TrainConfig(ema_epochs=0.05, ema_decay=0.0), steps_per_epoch=10) == 0.0  # under a step: none
    model = torch.nn.Linear(3, 2)
    average = make_average(model, 0.75)
    seen = []
    for _ in range(3):  # the first update copies the weights, each later one moves a quarter of the way
        seen.append(model.weight.detach().clone())
        average.update_parameters(model)
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
    expected = 0.75 * (0.75 * seen[0] + 0.25 * seen[1]) + 0.25 * seen[2]
    torch.testing.assert_close(average.module.weight, expected)
    assert not any(p.requires_grad for p in average.parameters())  # never trained itself

    # with the warm-up, the plain mean of the steps so far until the decay caps it: decay of the n-th
    # update min(0.75, (n - 1) / n): 1/2, 2/3, then 0.75
    model = torch.nn.Linear(3, 2)
    average = make_average(model, 0.75, warmup=True)
    seen = []
    for _ in range(5):
        seen.append(model.weight.detach().clone())
        average.update_parameters(model)
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
    mean3 = (seen[0] + seen[1] + seen[2]) / 3
    expected = 0.75 * (0.75 * mean3 + 0.25 * seen[3]) + 0.25 * seen[4]
    torch.testing.assert_close(average.module.weight, expected)


def test_a_run_from_before_the_average_reads_and_resumes_without_one(tiny_config, tmp_path):
    """Format-3 run folders predate train.ema_epochs and its warm-up: they trained without an average (or
    with train.ema_decay alone) and must not read as today's default."""
    from h2rec.runfolder import read_run_config

    run = tmp_path / "run"
    h2rec.train(tiny_config(**{"train.epochs": 1, "train.ema_epochs": 0.0}), run, progress=False)
    before = h2rec.load(run).evaluate()
    meta = json.loads((run / "config.json").read_text())
    del meta["train"]["ema_epochs"], meta["train"]["ema_warmup"]
    meta["format_version"] = 3
    (run / "config.json").write_text(json.dumps(meta))
    config = read_run_config(run)
    assert (config.train.ema_epochs, config.train.ema_warmup) == (0.0, False)
    assert h2rec.load(run).evaluate() == before
    resumed = h2rec.train(tiny_config(**{"train.epochs": 2, "train.ema_epochs": 0.0, "train.ema_warmup": False}),
                          run, resume=True, progress=False)
    assert resumed["epochs_run"] == 2


def test_with_a_weight_average_validation_and_the_best_checkpoint_read_the_average(tiny_config, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    results = h2rec.train(tiny_config(**{"train.epochs": 3, "train.ema_decay": 0.9, "train.lr": 5e-3}), run,
                          progress=False)
    state = json.loads((run / "checkpoints" / "last.json").read_text())
    folder = run / "checkpoints"
    average = {k.removeprefix("module."): v for k, v in load_file(folder / state["files"]["average"]).items()
               if k != "n_averaged"}
    weights = load_file(folder / state["files"]["weights"])
    assert sorted(average) == sorted(weights)
    assert any(not torch.equal(average[k], weights[k]) for k in weights)  # an average, not the weights
    assert results["best_epoch"] == 3  # still climbing: the best checkpoint is the last epoch's average
    best = load_file(folder / state["files"]["best"])
    assert all(torch.equal(best[k], average[k]) for k in best)
    # the reported validation is the best checkpoint's (the average), read again after training
    selected = results["valid"][selected_protocol(results["selection"])]
    assert selected["overall"]["NDCG@10"] == pytest.approx(state["best_ndcg10"])
    with pytest.raises(H2RecError, match="ema_decay"):  # a decay of 1 never leaves the initial weights
        tiny_config(**{"train.ema_decay": 1.0})
    with pytest.raises(H2RecError, match="ema_epochs"):
        tiny_config(**{"train.ema_epochs": -1})
