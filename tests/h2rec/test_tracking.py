"""Optional tracking: TensorBoard event files and MLflow runs hold each epoch once, resume included.

Skipped where the packages are not installed (CI installs requirements.txt, which leaves them out):
pip install 'h2rec[tensorboard,mlflow]'."""

from __future__ import annotations

import json
import sys

import h2rec
import pytest
from click.testing import CliRunner
from h2rec import training
from h2rec.cli import main
from h2rec.errors import H2RecError
from h2rec.tracking import Tracking, open_tracking


def train_args(tiny, out, *extra):
    return ["train", "--interactions", str(tiny["interactions"]), "--semid", str(tiny["semid"]), "-o", str(out),
            "--max-len", "20", "--dim", "32", "--batch-size", "64", "--device", "cpu", "--epochs", "2", "--quiet",
            *extra]


def tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows them (events hidden by a purge step left out)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_run(uri, run_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"]
    return client, client.get_run(run_id)


def steps(client, run, key) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, key)]


def metrics_lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_cli_tracks_to_tensorboard_and_mlflow(tiny, tmp_path, monkeypatch):
    pytest.importorskip("torch.utils.tensorboard")
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store unless asked
    run, uri = tmp_path / "run", (tmp_path / "mlruns").as_uri()
    result = CliRunner().invoke(main, train_args(tiny, run, "--track", "tensorboard", "--track", "mlflow",
                                                 "--mlflow-uri", uri, "--mlflow-experiment", "tiny"))
    assert result.exit_code == 0, result.output
    assert "tracking: tensorboard --logdir" in result.output and "tracking: mlflow ui" in result.output
    lines = metrics_lines(run)

    scalars = tensorboard_scalars(run / "tensorboard")
    assert scalars["valid/NDCG@10"] == [(r["epoch"], pytest.approx(r["valid_NDCG@10"])) for r in lines]
    assert [step for step, _ in scalars["loss/total"]] == [1, 2]
    results = json.loads((run / "results.json").read_text())
    assert scalars["final/test/full/overall/NDCG@10"] == [
        (results["best_epoch"], pytest.approx(results["test"]["full"]["overall"]["NDCG@10"]))]

    client, mlrun = mlflow_run(uri, run)
    assert client.get_experiment(mlrun.info.experiment_id).name == "tiny"
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "run"
    assert mlrun.data.params["model.dim"] == "32" and mlrun.data.params["train.epochs"] == "2"
    assert [(m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, "valid/NDCG_at_10")] == \
           [(r["epoch"], pytest.approx(r["valid_NDCG@10"])) for r in lines]
    assert steps(client, mlrun, "loss/total") == [1, 2]
    assert mlrun.data.metrics["final/test/full/overall/NDCG_at_10"] == pytest.approx(
        results["test"]["full"]["overall"]["NDCG@10"])
    assert mlrun.data.metrics["final/test/full_unseen/tail/HR_at_10"] == pytest.approx(
        results["test"]["full_unseen"]["tail"]["HR@10"])
    assert [a.path for a in client.list_artifacts(mlrun.info.run_id)] == ["results.json"]


def test_a_killed_then_resumed_run_logs_each_epoch_once(tiny_config, tmp_path, monkeypatch):
    """Killed after epoch 2's checkpoint, before its metrics line and its on_epoch call; the resumed
    process (new trackers, as after kill -9) copies epoch 2 from the checkpoint's history, then goes on."""
    pytest.importorskip("torch.utils.tensorboard")
    pytest.importorskip("mlflow")
    config, run, uri = tiny_config(**{"train.epochs": 3}), tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    real_save = training.save_checkpoint
    saved = []

    def save_then_kill(*args, **kwargs):
        real_save(*args, **kwargs)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(training, "save_checkpoint", save_then_kill)
    first = open_tracking(["tensorboard", "mlflow"], run, mlflow_uri=uri)
    with pytest.raises(KeyboardInterrupt):
        h2rec.train(config, run, progress=False, on_epoch=first.on_epoch)  # no close: as after kill -9
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    assert json.loads((run / "tracking.json").read_text())["mlflow"]["logged_through"] == 1

    with open_tracking(["tensorboard", "mlflow"], run, mlflow_uri=uri) as tracking:
        results = h2rec.train(None, run, resume=True, progress=False, on_epoch=tracking.on_epoch)
        tracking.finish(results)

    scalars = tensorboard_scalars(run / "tensorboard")
    assert [step for step, _ in scalars["valid/NDCG@10"]] == [1, 2, 3]
    assert [step for step, _ in scalars["loss/total"]] == [1, 2, 3]
    client, mlrun = mlflow_run(uri, run)
    assert len(client.search_runs([mlrun.info.experiment_id])) == 1  # the same MLflow run, continued
    assert steps(client, mlrun, "valid/NDCG_at_10") == [1, 2, 3]
    assert steps(client, mlrun, "epoch") == [1, 2, 3]
    assert mlrun.info.status == "FINISHED"


def test_epochs_a_kill_left_uncounted_are_not_repeated(tiny_config, tmp_path):
    """The narrowest window: a destination holds epochs that tracking.json does not count yet. The
    resumed TensorBoard writer hides them behind its purge step; MLflow asks its store."""
    pytest.importorskip("torch.utils.tensorboard")
    pytest.importorskip("mlflow")
    run, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    h2rec.train(tiny_config(), run, progress=False)
    with open_tracking(["tensorboard", "mlflow"], run, mlflow_uri=uri) as tracking:
        for record in metrics_lines(run):
            tracking.on_epoch(record)
    state = json.loads((run / "tracking.json").read_text())
    for name in ("tensorboard", "mlflow"):
        state[name]["logged_through"] = 1  # as if killed before tracking.json counted epoch 2
    (run / "tracking.json").write_text(json.dumps(state))

    with open_tracking(["tensorboard", "mlflow"], run, mlflow_uri=uri) as tracking:
        tracking.finish(h2rec.train(None, run, resume=True, progress=False))  # nothing left to train

    assert [step for step, _ in tensorboard_scalars(run / "tensorboard")["valid/NDCG@10"]] == [1, 2]
    client, mlrun = mlflow_run(uri, run)
    assert steps(client, mlrun, "valid/NDCG_at_10") == [1, 2]


@pytest.mark.parametrize(("name", "module"), [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow")])
def test_a_tracker_that_is_not_installed_exits_2_with_the_pip_extra(tiny, tmp_path, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(H2RecError, match=rf"pip install 'h2rec\[{name}\]'"):
        open_tracking([name], tmp_path / "run")
    result = CliRunner().invoke(main, train_args(tiny, tmp_path / "run", "--track", name))
    assert result.exit_code == 2
    assert f"--track {name} needs the {name} package: pip install 'h2rec[{name}]'" in result.output
    assert not (tmp_path / "run").exists()  # refused before training


def test_tracking_is_off_by_default(tiny, tmp_path):
    result = CliRunner().invoke(main, train_args(tiny, tmp_path / "run", "--epochs", "1"))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run" / "tracking.json").exists() and not (tmp_path / "run" / "tensorboard").exists()
    assert "tracking:" not in result.output
    result = CliRunner().invoke(main, train_args(tiny, tmp_path / "other", "--mlflow-uri", "sqlite:///x.db"))
    assert result.exit_code == 2 and "--track mlflow" in result.output


class ListTracker:
    """An in-memory tracker: runs where the optional packages are not installed too."""

    def __init__(self, name: str, fail_at: int = 0):
        self.name, self.fail_at, self.epochs, self.status = name, fail_at, [], None

    def start(self, config, run_dir, saved):
        return saved.get("logged_through", 0)

    def state(self):
        return {}

    def log_epoch(self, record):
        if record["epoch"] == self.fail_at:
            raise OSError("database is locked")
        self.epochs.append(record["epoch"])

    def finish(self, results):
        self.close("FINISHED")

    def close(self, status):
        self.status = status

    def describe(self):
        return self.name


def test_a_failing_tracker_is_dropped_with_a_warning_and_training_goes_on(tiny_config, tmp_path, caplog):
    run = tmp_path / "run"
    good, bad = ListTracker("good"), ListTracker("bad", fail_at=2)
    with Tracking([good, bad], run) as tracking:
        results = h2rec.train(tiny_config(**{"train.epochs": 3}), run, progress=False, on_epoch=tracking.on_epoch)
        tracking.finish(results)
    assert results["epochs_run"] == 3 and good.epochs == [1, 2, 3] and good.status == "FINISHED"
    assert bad.epochs == [1] and bad.status is None and tracking.describe() == ["good"]
    assert "bad tracking stopped (OSError: database is locked)" in caplog.text
    assert json.loads((run / "tracking.json").read_text()) == {"good": {"logged_through": 3},
                                                               "bad": {"logged_through": 1}}

    again = ListTracker("bad")  # resumed later with the same tracker: it gets the epochs it missed
    with Tracking([again], run) as tracking:
        tracking.finish(h2rec.train(None, run, resume=True, progress=False, on_epoch=tracking.on_epoch))
    assert again.epochs == [2, 3]
