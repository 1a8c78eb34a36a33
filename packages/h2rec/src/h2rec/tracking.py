"""Optional experiment tracking: TensorBoard event files and MLflow runs, both off by default.

``metrics.jsonl`` stays the run's record; a tracker is a copy of it in a tool that plots and
compares runs. :class:`Tracking` composes trackers into the ``on_epoch`` callback of
:func:`h2rec.training.train` and a ``finish(results)`` hook::

    with open_tracking(["tensorboard", "mlflow"], run_dir) as tracking:
        results = h2rec.train(config, run_dir, on_epoch=tracking.on_epoch)
        tracking.finish(results)

Each epoch goes to each tracker exactly once, across kills and ``--resume``: ``RUN_DIR/tracking.json``
names each tracker's destination (TensorBoard folder; MLflow store, experiment and run id) and the
last epoch it holds. A resumed run continues the same event folder and the same MLflow run, and
first copies the epochs the destination lacks from ``metrics.jsonl`` (the epoch a kill interrupted,
or every epoch when tracking is first asked for on resume).

The packages are optional extras, imported only when a tracker is asked for:
``pip install 'h2rec[tensorboard]'`` and ``pip install 'h2rec[mlflow]'``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import time
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Protocol

from .checkpoint import read_json, write_json
from .errors import H2RecError

logger = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "mlflow")
STATE_FILE = "tracking.json"
DEFAULT_EXPERIMENT = "h2rec"
FINAL_GROUPS = ("overall", "head", "tail")
# MLflow 2.x stores at most 500 characters per parameter value (later versions more)
MLFLOW_PARAM_CHARS = 500


class Tracker(Protocol):
    """One destination of a run's metrics."""

    name: str

    def start(self, config: dict, run_dir: Path, saved: dict) -> int:
        """Opens the destination for the run in ``run_dir`` (``config``: its config.json); continues
        the one ``saved`` (this tracker's part of tracking.json, ``{}`` at first) describes when it
        is the same destination. Returns the last epoch the destination already holds (0: none)."""

    def state(self) -> dict:
        """What tracking.json keeps so that a resumed run finds this destination again."""

    def log_epoch(self, record: dict) -> None:
        """One ``metrics.jsonl`` line, on disk (or on the server) when this returns."""

    def finish(self, results: dict) -> None:
        """The final results (results.json); closes the destination."""

    def close(self, status: str) -> None:
        """Closes the destination, if open; ``status`` (MLflow's): FAILED, KILLED (Ctrl-C) or FINISHED."""

    def describe(self) -> str:
        """How to look at the destination (a command line)."""


def _require(module: str, tracker: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise H2RecError(f"--track {tracker} needs the {tracker} package: pip install 'h2rec[{tracker}]'") from err


def epoch_metrics(record: dict) -> dict[str, float]:
    """A metrics.jsonl line as tags grouped by prefix (``valid/NDCG@10``, ``loss/total``, ``train/lr``,
    ``time/train_seconds``), the epoch left out: it is the step."""
    out = {}
    for key, value in record.items():
        if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        prefix, _, rest = key.partition("_")
        if prefix in ("valid", "loss") and rest:
            out[f"{prefix}/{rest}"] = float(value)
        else:
            out[f"time/{key}" if key.endswith("_seconds") else f"train/{key}"] = float(value)
    return out


def final_metrics(results: dict) -> dict[str, float]:
    """results.json as ``final/<split>/<protocol>/<group>/<metric>`` for Overall, Head and Tail, plus
    the best epoch. The five popularity groups would more than double the charts; they stay in
    results.json (an MLflow artifact)."""
    out = {}
    for split in ("valid", "test"):
        for protocol, groups in results.get(split, {}).items():
            for group in FINAL_GROUPS:
                for name, value in groups.get(group, {}).items():
                    if name != "n":
                        out[f"final/{split}/{protocol}/{group}/{name}"] = float(value)
    for key in ("best_epoch", "epochs_run"):
        if results.get(key) is not None:
            out[f"final/{key}"] = float(results[key])
    return out


def flat_config(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"model": {"dim": 64}}`` -> ``{"model.dim": "64"}``: MLflow parameters are strings."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


# ----------------------------------------------------------------------------- TensorBoard
class TensorBoardTracker:
    """Scalars per epoch (step = epoch) in an event folder of this run's own; the final results at
    the best epoch; the configuration as text."""

    name = "tensorboard"

    def __init__(self, log_dir: str | Path):
        self._summary_writer = _require("torch.utils.tensorboard", self.name).SummaryWriter
        self.log_dir = Path(log_dir).resolve()
        self._writer = None

    def start(self, config: dict, run_dir: Path, saved: dict) -> int:
        logged = saved.get("logged_through", 0) if saved.get("log_dir") == str(self.log_dir) else 0
        # Events a killed process wrote after tracking.json last counted them are hidden by readers
        # (TensorBoard's purge step), so the epochs logged again now do not appear twice.
        self._writer = self._summary_writer(str(self.log_dir), purge_step=logged + 1)
        if not logged:
            self._writer.add_text("config", f"```json\n{json.dumps(config, indent=2)}\n```", 0)
        return logged

    def state(self) -> dict:
        return {"log_dir": str(self.log_dir)}

    def log_epoch(self, record: dict) -> None:
        for tag, value in epoch_metrics(record).items():
            self._writer.add_scalar(tag, value, record["epoch"])
        self._writer.flush()  # the writer buffers for 2 minutes; a kill must not lose counted epochs

    def finish(self, results: dict) -> None:
        for tag, value in final_metrics(results).items():
            self._writer.add_scalar(tag, value, results.get("best_epoch") or 0)
        self.close("FINISHED")

    def close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def describe(self) -> str:
        return f"tensorboard --logdir {self.log_dir}"


# ----------------------------------------------------------------------------- MLflow
def default_mlflow_uri(run_dir: str | Path) -> str:
    """MLFLOW_TRACKING_URI when set, else a SQLite store beside the run (``RUN_DIR/../mlflow.db``),
    so that the runs of one folder are compared in one store. Not MLflow's ``./mlruns`` file store:
    MLflow 3 refuses it by default, and it would land in whatever directory the command ran from."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///" + str(Path(run_dir).resolve().parent / "mlflow.db")


def mlflow_name(tag: str) -> str:
    """A tag as an MLflow metric name, which allows letters, digits and ``_-. /`` (``@`` not)."""
    return re.sub(r"[^\w.\-/ ]", "_", tag.replace("@", "_at_"))


class MLflowTracker:
    """One MLflow run per run folder, in an experiment: the flattened configuration as parameters,
    each epoch's metrics (step = epoch), the final results at the best epoch, results.json as an
    artifact. A resumed run continues its MLflow run."""

    name = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT):
        mlflow = _require("mlflow", self.name)
        self._entities = mlflow.entities
        self._error = mlflow.exceptions.MlflowException
        self.tracking_uri, self.experiment = tracking_uri, experiment
        # a bad store or experiment is reported now, before training, not after the first epoch
        try:
            self._client = mlflow.tracking.MlflowClient(tracking_uri)
            found = self._client.get_experiment_by_name(experiment)
            if found is None:
                self._experiment_id = self._client.create_experiment(experiment, artifact_location=self._artifacts())
            elif found.lifecycle_stage == "deleted":
                raise H2RecError(f"MLflow experiment {experiment!r} in {tracking_uri} is deleted: restore it "
                                 "(mlflow experiments restore) or choose another --mlflow-experiment")
            else:
                self._experiment_id = found.experiment_id
        except self._error as err:
            raise H2RecError(f"MLflow store {tracking_uri}: {' '.join(str(err).split())}") from err
        self._run_id: str | None = None
        self._run_dir: Path | None = None

    def _artifacts(self) -> str | None:
        """Artifacts of a local SQLite store go beside its file (MLflow's default is ./mlruns under
        the current directory); other stores decide for themselves."""
        if self.tracking_uri.startswith("sqlite:///"):
            return (Path(self.tracking_uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
        return None

    def start(self, config: dict, run_dir: Path, saved: dict) -> int:
        self._run_dir = run_dir
        run = None
        if saved.get("tracking_uri") == self.tracking_uri and saved.get("experiment") == self.experiment:
            run = self._existing_run(saved.get("run_id"))
        if run is None:
            run = self._client.create_run(self._experiment_id, run_name=run_dir.name,
                                          tags={"h2rec.run_dir": str(run_dir.resolve())})
            logged = 0
        else:
            self._client.update_run(run.info.run_id, status="RUNNING")
            # the store itself says which epochs it holds: "epoch" is the last metric of each epoch's batch
            logged = int(max((m.step for m in self._client.get_metric_history(run.info.run_id, "epoch")), default=0))
        self._run_id = run.info.run_id
        self._log_params(flat_config(config), run.data.params)
        return logged

    def _existing_run(self, run_id: str | None):
        if not run_id:
            return None
        try:
            run = self._client.get_run(run_id)
        except self._error:
            run = None
        if run is None or run.info.lifecycle_stage == "deleted":
            logger.warning("MLflow run %s is gone from %s; starting a new one", run_id, self.tracking_uri)
            return None
        return run

    def _log_params(self, params: dict[str, str], existing: dict[str, str]) -> None:
        # config.json does not change on resume, and MLflow refuses a parameter logged twice
        new = [self._entities.Param(k, v[:MLFLOW_PARAM_CHARS]) for k, v in params.items() if k not in existing]
        for start in range(0, len(new), 100):  # MLflow takes 100 parameters per call
            self._client.log_batch(self._run_id, params=new[start:start + 100])

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._client.log_batch(self._run_id, metrics=[self._entities.Metric(mlflow_name(k), v, now, step)
                                                      for k, v in metrics.items()])

    def state(self) -> dict:
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "run_id": self._run_id}

    def log_epoch(self, record: dict) -> None:
        # one batch (one transaction in a SQL store), "epoch" last: its presence marks a whole epoch
        self._log_metrics({**epoch_metrics(record), "epoch": float(record["epoch"])}, record["epoch"])

    def finish(self, results: dict) -> None:
        self._log_metrics(final_metrics(results), results.get("best_epoch") or 0)
        if self._run_dir is not None and (self._run_dir / "results.json").is_file():
            self._client.log_artifact(self._run_id, str(self._run_dir / "results.json"))
        self.close("FINISHED")

    def close(self, status: str) -> None:
        if self._run_id is not None:
            self._client.set_terminated(self._run_id, status)
            self._run_id = None

    def describe(self) -> str:
        return f"mlflow ui --backend-store-uri {self.tracking_uri}  (experiment {self.experiment!r})"


# ----------------------------------------------------------------------------- composition
class Tracking:
    """Trackers behind one ``on_epoch(record)`` callback and one ``finish(results)`` hook.

    Trackers open at the first epoch (or at ``finish`` when a resumed run has no epoch left), once
    ``train`` has written config.json and, on resume, rewritten metrics.jsonl from its checkpoint.
    A tracker that fails while training (a locked database, a server gone) is dropped with a
    warning: training goes on, metrics.jsonl keeps every epoch, and ``--resume`` with the same
    tracker later copies what it missed."""

    def __init__(self, trackers: list[Tracker], run_dir: str | Path):
        self.trackers = list(trackers)
        self.run_dir = Path(run_dir)
        self._logged: dict[str, int] | None = None  # per tracker, the last epoch it holds; None: not started
        self._saved: dict[str, dict] = {}  # tracking.json: also the entries of trackers not running now

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        status = "FINISHED" if kind is None else "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED"
        for tracker in list(self.trackers):
            self._call(tracker, "close", status)

    def on_epoch(self, record: dict) -> None:
        if not self.trackers:
            return
        self._start()
        self._log(record)

    def finish(self, results: dict) -> None:
        if not self.trackers:
            return
        self._start()
        for tracker in list(self.trackers):
            self._call(tracker, "finish", results)

    def describe(self) -> list[str]:
        """How to look at each destination."""
        return [tracker.describe() for tracker in self.trackers]

    def _start(self) -> None:
        if self._logged is not None:
            return
        self._logged = {}
        config = read_json(self.run_dir / "config.json")
        path = self.run_dir / STATE_FILE
        self._saved = read_json(path) if path.is_file() else {}
        for tracker in list(self.trackers):
            logged = self._call(tracker, "start", config, self.run_dir, self._saved.get(tracker.name, {}))
            if tracker in self.trackers:
                self._logged[tracker.name] = logged
                self._saved[tracker.name] = {**tracker.state(), "logged_through": logged}
        if self._logged:  # now: a kill before the first epoch still finds the MLflow run
            write_json(path, self._saved)
        metrics = self.run_dir / "metrics.jsonl"
        lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
        for line in lines:  # the epochs a destination lacks: after a kill, or tracking first asked for on resume
            self._log(json.loads(line))

    def _log(self, record: dict) -> None:
        wrote = False
        for tracker in list(self.trackers):
            if record["epoch"] > self._logged[tracker.name]:
                self._call(tracker, "log_epoch", record)
                if tracker in self.trackers:
                    self._logged[tracker.name] = record["epoch"]
                    self._saved[tracker.name] = {**tracker.state(), "logged_through": record["epoch"]}
                    wrote = True
        if wrote:  # after the destination has the epoch: a kill in between repeats it, never skips it
            write_json(self.run_dir / STATE_FILE, self._saved)

    def _call(self, tracker: Tracker, method: str, *args: Any) -> Any:
        try:
            return getattr(tracker, method)(*args)
        except Exception as err:  # whatever a tracker raises: a copy of the metrics must not stop training
            if method != "close":
                logger.warning("%s tracking stopped (%s: %s); metrics.jsonl has every epoch, and "
                               "`h2rec train --resume --track %s` copies the missing ones", tracker.name,
                               type(err).__name__, err, tracker.name)
            if tracker in self.trackers:
                self.trackers.remove(tracker)
            return None


def open_tracking(names: list[str] | tuple[str, ...], run_dir: str | Path, tensorboard_dir: str | Path | None = None,
                  mlflow_uri: str | None = None, mlflow_experiment: str = DEFAULT_EXPERIMENT) -> Tracking:
    """The trackers ``names`` (``tensorboard``, ``mlflow``) for the run in ``run_dir``. A missing
    package, an unknown name or a bad MLflow store is an :class:`H2RecError` now, before training."""
    trackers: list[Tracker] = []
    for name in dict.fromkeys(names):  # each once, in the order given
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(tensorboard_dir or Path(run_dir) / "tensorboard"))
        elif name == "mlflow":
            trackers.append(MLflowTracker(mlflow_uri or default_mlflow_uri(run_dir), mlflow_experiment))
        else:
            raise H2RecError(f"unknown tracker {name!r}: expected one of {', '.join(TRACKERS)}")
    return Tracking(trackers, run_dir)


__all__ = ["MLflowTracker", "TensorBoardTracker", "Tracker", "Tracking", "default_mlflow_uri", "open_tracking"]
