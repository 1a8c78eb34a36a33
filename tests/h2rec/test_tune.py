"""`h2rec tune`: an Optuna search on validation only, resumable after a kill, the test split read once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

optuna = pytest.importorskip("optuna")

from h2rec import api, evaluate, training  # noqa: E402
from h2rec.cli import main  # noqa: E402
from h2rec.config import load_config_file  # noqa: E402
from h2rec.errors import H2RecError  # noqa: E402
from h2rec.evaluate import selected_protocol  # noqa: E402
from h2rec.tune import _test_best, _write_best_config, tune  # noqa: E402

SPACE = """\
# dotted config key -> distribution
train.lr: {float: [1.0e-3, 1.0e-2], log: true}
model.dropout: {float: [0.1, 0.5]}
model.num_layers: {int: [1, 2]}
"""


def write_space(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture
def spy(monkeypatch):
    """Records every evaluated split, every train() call and every final evaluation;
    ``spy["crash"] = (run folder, epoch)`` raises KeyboardInterrupt after that epoch's checkpoint, as a kill would."""
    record = {"splits": [], "train": [], "final": 0, "crash": None}
    real_evaluate, real_train, real_final = evaluate.evaluate_split, training.train, api.Recommender.evaluate

    def evaluate_split(model, ds, split_name, *args, **kwargs):
        record["splits"].append(split_name)
        return real_evaluate(model, ds, split_name, *args, **kwargs)

    def final_evaluation(self, *args, **kwargs):  # the best checkpoint on validation and test
        record["final"] += 1
        before = len(record["splits"])
        results = real_final(self, *args, **kwargs)
        record["splits"][before:] = ["final " + s for s in record["splits"][before:]]
        return results

    def train(config, run_dir, resume=False, progress=True, on_epoch=None, test=True):
        record["train"].append((Path(run_dir).name, resume, test))

        def hook(rec):
            if on_epoch is not None:  # a run trained outside the search
                on_epoch(rec)
            if record["crash"] == (Path(run_dir).name, rec["epoch"]):
                raise KeyboardInterrupt("simulated kill")

        return real_train(config, run_dir, resume=resume, progress=progress, on_epoch=hook, test=test)

    monkeypatch.setattr(evaluate, "evaluate_split", evaluate_split)
    monkeypatch.setattr(training, "evaluate_split", evaluate_split)
    monkeypatch.setattr(training, "train", train)
    monkeypatch.setattr(api.Recommender, "evaluate", final_evaluation)
    return record


def test_search_selects_on_validation_and_tests_the_best_once(tiny_config, tmp_path, spy):
    out = tmp_path / "search"
    summary = tune(write_space(tmp_path), out, tiny_config(), trials=3, progress=False)

    assert [test for _, _, test in spy["train"]] == [False] * 3  # no trial reads the test split
    assert spy["final"] == 1 and "test" not in spy["splits"]  # one final evaluation reads the test split
    assert "final test" in spy["splits"] and all(s.startswith("final") for s in spy["splits"][-2:])
    rows = read_csv(out / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert {"value", "best_epoch", "epochs_run", "seconds", "train.lr", "model.num_layers"} <= set(rows[0])
    assert all(r["epochs_run"] == "2" for r in rows)
    best = max(rows, key=lambda r: float(r["value"]))
    assert summary["best_trial"] == int(best["number"]) and summary["best_value"] == float(best["value"])

    config = load_config_file(out / "best.yaml")  # loadable as a train config, with the best trial's values
    assert config.train.lr == summary["best_params"]["train.lr"] == float(best["train.lr"])
    assert 1e-3 <= config.train.lr <= 1e-2 and 0.1 <= config.model.dropout <= 0.5
    assert config.model.num_layers in (1, 2) and config.model.dim == 32  # the rest from the base config
    saved = json.loads((out / "best_test.json").read_text())
    assert saved["trial"] == summary["best_trial"] and "test" in saved and "valid" in saved
    selected = saved["valid"][selected_protocol(summary["metric"])]
    assert selected["overall"]["NDCG@10"] == pytest.approx(summary["best_value"])
    assert (out / "trials.png").stat().st_size > 0

    # the same command again: budget already met, nothing trained, the test split not read again
    spy["splits"].clear()
    again = tune(write_space(tmp_path), out, tiny_config(), trials=3, progress=False)
    assert len(spy["train"]) == 3 and spy["final"] == 1 and spy["splits"] == []
    assert again["best_trial"] == summary["best_trial"]


def test_a_killed_search_continues_the_interrupted_trial_from_its_checkpoint(tiny_config, tmp_path, spy):
    out, space = tmp_path / "search", write_space(tmp_path)
    spy["crash"] = ("1", 1)  # killed in the second trial, after its first epoch
    with pytest.raises(KeyboardInterrupt):
        tune(space, out, tiny_config(), trials=3, progress=False)
    spy["crash"] = None

    summary = tune(space, out, tiny_config(), trials=3, progress=False)

    assert spy["train"] == [("0", False, False), ("1", False, False), ("1", True, False), ("3", False, False)]
    rows = {r["number"]: r for r in read_csv(out / "trials.csv")}
    assert [rows[n]["state"] for n in "0123"] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert summary["finished_trials"] == 3
    params = ("train.lr", "model.dropout", "model.num_layers")
    assert [rows["2"][k] for k in params] == [rows["1"][k] for k in params]  # the interrupted trial, retried
    assert rows["2"]["run_dir"] == "trials/1" and rows["2"]["epochs_run"] == "2"
    history = [json.loads(line) for line in (out / "trials" / "1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]  # epoch 1 from the killed run, epoch 2 after resuming
    assert not (out / "trials" / "2").exists()
    study = optuna.load_study(study_name="h2rec", storage=f"sqlite:///{out / 'study.db'}")
    reported = {t.number: sorted(t.intermediate_values) for t in study.get_trials()}
    assert reported == {0: [1, 2], 1: [1], 2: [1, 2], 3: [1, 2]}  # the pruner sees the resumed epochs too
    assert spy["final"] == 1 and "test" not in spy["splits"]


def test_a_search_continues_across_toolkit_versions_but_not_across_settings(tiny_config, tmp_path):
    out, space = tmp_path / "search", write_space(tmp_path)
    tune(space, out, tiny_config(), trials=1, progress=False)
    study = optuna.load_study(study_name="h2rec", storage=f"sqlite:///{out / 'study.db'}")
    stored = study.user_attrs["base_config"]
    # a search begun before a setting existed (and from another path to the same data) continues:
    # the setting's default leaves the trials' training as it was
    del stored["train"]["distill_weight"]
    semid = Path(stored["data"]["semid"])
    (tmp_path / "linked").symlink_to(semid.parent, target_is_directory=True)
    stored["data"]["semid"] = str(tmp_path / "linked" / semid.name)
    study.set_user_attr("base_config", stored)
    assert tune(space, out, tiny_config(), trials=2, progress=False)["finished_trials"] == 2

    with pytest.raises(H2RecError, match="started with another base configuration"):
        tune(space, out, tiny_config(**{"train.batch_size": 7}), trials=3, progress=False)
    with pytest.raises(H2RecError, match="started with another search space"):
        tune(write_space(tmp_path, SPACE + "train.weight_decay: {float: [0.0, 0.1]}\n"), out, tiny_config(),
             trials=3, progress=False)


def test_finished_runs_join_the_search_as_completed_trials(tiny_config, tmp_path, spy):
    out = tmp_path / "search"
    space = write_space(tmp_path, SPACE + "model.emb_dropout: {float: [0.1, 0.5], step: 0.1}\n")
    # the starting point, trained before the search: emb_dropout None means "as dropout" (0.3)
    start = tmp_path / "start"
    training.train(tiny_config(**{"train.lr": 2e-3, "model.dropout": 0.3, "model.num_layers": 1}), start,
                   progress=False, test=False)
    other = tmp_path / "other-batch"
    training.train(tiny_config(**{"train.batch_size": 32}), other, progress=False, test=False)
    outside = tmp_path / "outside"
    training.train(tiny_config(**{"train.lr": 0.05}), outside, progress=False, test=False)
    results = json.loads((start / "results.json").read_text())
    valid = results["valid"][selected_protocol(results["selection"])]["overall"]["NDCG@10"]
    spy["train"].clear()

    with pytest.raises(H2RecError, match=r"other-batch: cannot join the search: not its base configuration: "
                                         r"train.batch_size = 32 \(the search's: 64\)"):
        tune(space, out, tiny_config(), trials=2, progress=False, add_runs=[other])
    with pytest.raises(H2RecError, match=r"outside: cannot join the search: outside its space: train.lr = 0.05"):
        tune(space, out, tiny_config(), trials=2, progress=False, add_runs=[outside])
    tune(space, out, tiny_config(), trials=2, progress=False, add_runs=[start])
    tune(space, out, tiny_config(), trials=3, progress=False, add_runs=[start])  # named again: added once

    rows = read_csv(out / "trials.csv")
    assert [(r["number"], r["state"], r["run_dir"]) for r in rows] == [
        ("0", "COMPLETE", "../start"), ("1", "COMPLETE", "trials/1"), ("2", "COMPLETE", "trials/2")]
    assert float(rows[0]["value"]) == pytest.approx(valid)
    assert [rows[0][k] for k in ("train.lr", "model.dropout", "model.num_layers", "model.emb_dropout")] == [
        "0.002", "0.3", "1", "0.3"]
    assert [name for name, _, _ in spy["train"]] == ["1", "2"]  # the added run is not trained again
    study = optuna.load_study(study_name="h2rec", storage=f"sqlite:///{out / 'study.db'}")
    history = [json.loads(line) for line in (start / "metrics.jsonl").read_text().splitlines()]
    assert study.trials[0].intermediate_values == {r["epoch"]: r["valid_NDCG@10"] for r in history}

    # another checkout: the search's folder without the added run's. Were the added run the best, as the
    # Beauty search's starting point is, best.yaml still says what it was; its test reading waits
    moved = tmp_path / "elsewhere" / "search"
    moved.parent.mkdir()
    out.rename(moved)
    added = optuna.load_study(study_name="h2rec", storage=f"sqlite:///{moved / 'study.db'}").trials[0]
    _write_best_config(moved, added, "valid NDCG@10 (full)")
    best_yaml = yaml.safe_load((moved / "best.yaml").read_text())
    assert (best_yaml["train"]["lr"], best_yaml["model"]["dropout"], best_yaml["model"]["num_layers"]) == (2e-3, 0.3, 1)
    assert _test_best(moved, added, tiny_config()) is None


@pytest.mark.parametrize("text, expected", [
    ("model.hidden_size: {int: [16, 64]}", "model.hidden_size: unknown config key"),
    ("optimizer.lr: {float: [0.1, 0.2]}", "optimizer.lr: not a config key"),
    ("train.lr: {uniform: [1.0e-4, 1.0e-3]}", "train.lr: a distribution is one of"),
    ("train.lr: {float: [1.0e-2, 1.0e-3]}", "train.lr: low (0.01) must be below high (0.001)"),
    ("train.lr: {float: [0.0, 1.0e-3], log: true}", "train.lr: log: true needs low > 0"),
    ("model.num_layers: {int: [1.5, 3]}", "model.num_layers: int takes [low, high] as two integers"),
    ("model.dim: {float: [16, 64]}", "model.dim: model.dim is an integer setting"),
    ("model.fusion: {float: [0, 1]}", "model.fusion: model.fusion is not a numeric setting"),
    ("train.loss: {categorical: [ce, hinge]}", "train.loss = 'hinge'"),
    ("eval.negatives: {int: [10, 100]}", "eval.negatives: cannot be searched"),
    ("[1, 2]", "a search space is a mapping"),
])
def test_bad_space_files_name_the_file_and_the_key(tiny_config, tmp_path, text, expected):
    with pytest.raises(H2RecError) as err:
        tune(write_space(tmp_path, text + "\n"), tmp_path / "out", tiny_config(), trials=1, progress=False)
    assert str(err.value).startswith(str(tmp_path / "space.yaml")) and expected in str(err.value)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_cli_end_to_end_then_train_the_best_config(tiny, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("data:\n  max_len: 20\nmodel:\n  dim: 32\ntrain:\n  epochs: 1\n  batch_size: 64\n")
    space = write_space(tmp_path, "model.dropout: {categorical: [0.1, 0.3]}\n")
    out = tmp_path / "search"
    runner = CliRunner()
    args = ["tune", "--space", str(space), "--config", str(base), "--interactions", str(tiny["interactions"]),
            "--semid", str(tiny["semid"]), "--device", "cpu", "-o", str(out), "--trials", "2"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "best trial" in result.output and "model.dropout:" in result.output
    assert "| test | full |" in result.output
    assert f"best config: {out / 'best.yaml'}" in result.output and f"trials: {out / 'trials.csv'}" in result.output
    assert "[h2rec.tune] trial 1:" in result.output  # one log line per trial
    assert yaml.safe_load((out / "best.yaml").read_text())["model"]["dropout"] in (0.1, 0.3)

    result = runner.invoke(main, ["train", "--config", str(out / "best.yaml"), "-o", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output

    result = runner.invoke(main, [a for a in args if a not in ("--trials", "2")])
    assert result.exit_code == 2 and "--trials N" in result.output and "--minutes M" in result.output
    space.write_text("model.dropout: {categorical: [0.2, 0.4]}\n")  # the same folder, another space
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and "was started with another search space" in result.output
    assert "Traceback" not in result.output


def test_prune_warmup_reaches_the_pruner(tiny, tmp_path, monkeypatch):
    seen = []
    real = optuna.pruners.MedianPruner

    def median_pruner(**kwargs):
        if "n_warmup_steps" in kwargs:  # Optuna's own default pruner is built without it
            seen.append(kwargs["n_warmup_steps"])
        return real(**kwargs)

    monkeypatch.setattr(optuna.pruners, "MedianPruner", median_pruner)
    space = write_space(tmp_path, "model.dropout: {categorical: [0.1, 0.3]}\n")
    base = tmp_path / "base.yaml"
    base.write_text("data:\n  max_len: 20\nmodel:\n  dim: 16\ntrain:\n  epochs: 1\n  batch_size: 64\n")
    args = ["tune", "--space", str(space), "--config", str(base), "--interactions", str(tiny["interactions"]),
            "--semid", str(tiny["semid"]), "--device", "cpu", "--trials", "1", "--quiet"]
    runner = CliRunner()
    result = runner.invoke(main, [*args, "-o", str(tmp_path / "a"), "--prune-warmup", "12"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, [*args, "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert seen == [12, 5]
    result = runner.invoke(main, [*args, "-o", str(tmp_path / "c"), "--prune-warmup", "-1"])
    assert result.exit_code == 2 and "--prune-warmup" in result.output


def test_cli_bad_space_exits_2(tiny, tmp_path):
    space = write_space(tmp_path, "model.hidden: {int: [1, 2]}\n")
    result = CliRunner().invoke(main, ["tune", "--space", str(space), "-o", str(tmp_path / "o"), "--minutes", "1",
                                       "--interactions", str(tiny["interactions"]), "--semid", str(tiny["semid"])])
    assert result.exit_code == 2, result.output
    assert f"{space}: model.hidden: unknown config key" in result.output and "Traceback" not in result.output


def test_start_from_base_trains_the_base_configuration_first(tiny_config, tmp_path, spy):
    out = tmp_path / "search"
    base = tiny_config(**{"train.lr": 2e-3, "model.dropout": 0.3, "model.num_layers": 1})
    tune(write_space(tmp_path), out, base, trials=2, progress=False, start_from_base=True)
    tune(write_space(tmp_path), out, base, trials=3, progress=False, start_from_base=True)  # not enqueued again

    rows = read_csv(out / "trials.csv")
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "COMPLETE")]
    assert [rows[0][k] for k in ("train.lr", "model.dropout", "model.num_layers")] == ["0.002", "0.3", "1"]
    assert [rows[1][k] for k in ("train.lr", "model.dropout", "model.num_layers")] != ["0.002", "0.3", "1"]
    # the first trial is the run the base configuration gives outside the search
    alone = tmp_path / "alone"
    training.train(base, alone, progress=False, test=False)
    results = json.loads((alone / "results.json").read_text())
    valid = results["valid"][selected_protocol(results["selection"])]["overall"]["NDCG@10"]
    assert float(rows[0]["value"]) == pytest.approx(valid, abs=1e-6)

    with pytest.raises(H2RecError, match=r"cannot be the first trial: outside the space: train.lr = 0.05"):
        tune(write_space(tmp_path), tmp_path / "other", tiny_config(**{"train.lr": 0.05}), trials=1,
             progress=False, start_from_base=True)
