"""Hyper-parameter search with Optuna: ``h2rec tune --space SPACE.yaml -o OUT --trials 30``.

The search space is a YAML mapping from a dotted configuration key to one distribution::

    # dotted config key -> distribution
    train.lr: {float: [1.0e-4, 3.0e-3], log: true}   # float in [low, high]; log: true samples its log
    model.dropout: {float: [0.1, 0.7], step: 0.1}     # step: a grid (not with log)
    model.num_layers: {int: [1, 3]}                    # int in [low, high], both included; log/step as above
    train.loss: {categorical: [ce, sampled_softmax]}   # one of a list of plain values

Keys come from the ``model`` and ``train`` sections, plus ``data.max_len``; the rest of ``data`` and
all of ``eval`` fix the dataset and the metric, so they come from the base configuration. Every
bound and choice is checked against the configuration before anything runs.

Each trial trains the base configuration with its sampled values into ``OUT/trials/<number>/``,
reading validation only (``train(test=False)``), and Optuna's TPE sampler (seeded from
``train.seed``) maximises the validation NDCG@10 of its best checkpoint, under the protocol that
selects checkpoints (``eval.select_on``, ``eval.exclude_history``). A median pruner stops a trial
whose validation NDCG@10 falls below the median of earlier trials at the same epoch (after 3
completed trials, from epoch 5 or ``prune_warmup_epochs``).

Budget: ``trials`` counts finished (complete or pruned) trials in the whole study, earlier runs of
the command included; ``minutes`` is this invocation's wall clock (no trial starts after it; the
running one finishes). The study lives in ``OUT/study.db`` (SQLite): the same command, run again
after a crash or kill -9, keeps every finished trial and finishes the one that was running from its
run folder's last checkpoint (same parameters, ``train(resume=True)``): the interrupted trial is
marked FAIL and its continuation is a new trial number with ``run_dir`` pointing at the old folder.

Files in OUT: ``best.yaml`` (the best trial's full configuration, for ``h2rec train --config``),
``trials.csv`` (a row per trial: number, state, value, best_epoch, epochs_run, seconds, run_dir and
each searched key; a pruned trial's value is its last reported one), ``trials.png`` (validation
NDCG@10 per trial and the running best) and ``best_test.json`` (validation and test metrics of the
best trial's best checkpoint: the only time the search reads the test split).

Runs trained before the search (e.g. the base configuration itself) join it with ``add_runs``
(``--add-run RUN``): each must be the base configuration with values of the searched keys inside the
space; it becomes a completed trial whose ``run_dir`` is that folder (relative to OUT, so another
checkout with the same layout finds it; its configuration is kept in the study, so ``best.yaml`` can
be written without it), and the sampler and the pruner learn from it without training it again. A
setting whose None means another's value (``model.emb_dropout``, ``model.attn_dropout``: None =
``model.dropout``) is compared by the value the model uses. Where no such run is at hand,
``start_from_base`` (``--start-from-base``) trains the base configuration as a new study's first trial.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from semid.io import one_writer

from . import runfolder, training
from .assemble import prepare, resolve_config
from .checkpoint import atomic_write, read_json, write_json, write_text
from .config import SECTIONS, Config, build_config
from .errors import H2RecError
from .evaluate import selection_name
from .runfolder import read_run_config

if typing.TYPE_CHECKING:
    import semid

try:
    import optuna
    from optuna.trial import TrialState
except ImportError:  # the optional extra: pip install 'h2rec[tune]'
    optuna = None

log = logging.getLogger(__name__)

STUDY_NAME = "h2rec"
KINDS = ("float", "int", "categorical")
# what a trial may change: the model, the training, and the history length (a model choice)
SEARCHABLE_SECTIONS = ("model", "train")
SEARCHABLE_DATA_KEYS = ("data.max_len",)


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` float/int with bounds (``log`` or ``step``), or categorical ``choices``."""

    key: str  # dotted config key, also Optuna's parameter name
    kind: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, list(self.choices))

    def values_to_check(self) -> tuple:
        return self.choices if self.kind == "categorical" else (self.low, self.high)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """What :meth:`suggest` draws from, for a trial added from a finished run."""
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.kind == "int" and value != int(value):
            return False
        grid = (value - self.low) / self.step if self.step else 0.0
        return math.isclose(grid, round(grid), abs_tol=1e-6)


@dataclass(frozen=True)
class SearchSettings:
    space: tuple[Param, ...]
    trials: int | None = None  # finished (complete or pruned) trials wanted in the study, all sessions together
    minutes: float | None = None  # wall clock of this session; no trial starts after it
    seed: int = 42  # of the TPE sampler (offset by the study's trial count when a search continues)
    prune_startup_trials: int = 3  # MedianPruner: no pruning before this many completed trials
    prune_warmup_epochs: int = 5  # MedianPruner: no pruning before this epoch
    max_failures_in_a_row: int = 3  # trials failing with a configuration error; then the search stops


# ----------------------------------------------------------------------------- the search space
def load_space(path: str | Path, base: Config) -> tuple[Param, ...]:
    """Reads and checks a search-space file; every error names the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise H2RecError(f"{path}: cannot read the search space: {err}") from err
    if not isinstance(raw, dict) or not raw:
        raise H2RecError(f"{path}: a search space is a mapping of dotted config keys to distributions, "
                         "e.g. 'train.lr: {float: [1.0e-4, 3.0e-3], log: true}'")
    space = tuple(_parse_param(path, str(key), spec) for key, spec in raw.items())
    base_values = base.to_dict()
    for param in space:
        for value in param.values_to_check():  # bounds and choices must make valid configurations
            build_config(base_values, {param.key: value}, source=f"{path}: {param.key} = {value!r}")
    return space


def _field_types(cls: type, name: str) -> set[type]:
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return {typing.get_origin(a) or a for a in args} - {type(None)}


def _parse_param(path: Path, key: str, spec: Any) -> Param:
    where = f"{path}: {key}"
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise H2RecError(f"{where}: not a config key; keys look like 'section.key' with a section in "
                         f"{list(SEARCHABLE_SECTIONS)} (or data.max_len)")
    fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
    if name not in fields:
        raise H2RecError(f"{where}: unknown config key; valid keys in section {section!r}: {sorted(fields)}")
    if section not in SEARCHABLE_SECTIONS and key not in SEARCHABLE_DATA_KEYS:
        raise H2RecError(f"{where}: cannot be searched: data and eval settings fix the dataset and the metric; "
                         f"set them in the base configuration (searchable: model.*, train.*, data.max_len)")
    field_types = _field_types(SECTIONS[section], name)
    if field_types & {tuple, dict, list}:
        raise H2RecError(f"{where}: a list or mapping setting cannot be searched")
    kinds = [k for k in KINDS if isinstance(spec, dict) and k in spec]
    if len(kinds) != 1:
        raise H2RecError(f"{where}: a distribution is one of {{float: [low, high]}}, {{int: [low, high]}} "
                         f"or {{categorical: [a, b, ...]}}, with optional log: true or step: s; got {spec!r}")
    kind = kinds[0]
    extra = sorted(set(spec) - {kind, "log", "step"})
    if extra or (kind == "categorical" and len(spec) > 1):
        raise H2RecError(f"{where}: unknown option(s) {sorted(set(spec) - {kind})} for a {kind} distribution")
    if kind == "categorical":
        choices = spec[kind]
        if not isinstance(choices, list) or not choices:
            raise H2RecError(f"{where}: categorical takes a non-empty list of values, got {choices!r}")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise H2RecError(f"{where}: categorical values must be plain numbers, strings, booleans or null")
        return Param(key, "categorical", choices=tuple(choices))

    bounds = spec[kind]
    number = int if kind == "int" else (int, float)
    if not (isinstance(bounds, list) and len(bounds) == 2
            and all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)):
        raise H2RecError(f"{where}: {kind} takes [low, high] as two {'integers' if kind == 'int' else 'numbers'}, "
                         f"got {bounds!r}")
    low, high = bounds
    if not all(math.isfinite(b) for b in bounds):
        raise H2RecError(f"{where}: bounds must be finite, got {bounds!r}")
    if low >= high:
        raise H2RecError(f"{where}: low ({low}) must be below high ({high})")
    use_log, step = spec.get("log", False), spec.get("step")
    if not isinstance(use_log, bool):
        raise H2RecError(f"{where}: log must be true or false, got {use_log!r}")
    if use_log and low <= 0:
        raise H2RecError(f"{where}: log: true needs low > 0, got {low}")
    if step is not None:
        if not isinstance(step, number) or isinstance(step, bool) or step <= 0:
            raise H2RecError(f"{where}: step must be a positive {'integer' if kind == 'int' else 'number'}, "
                             f"got {step!r}")
        if use_log:
            raise H2RecError(f"{where}: step and log: true cannot be combined")
    if not field_types & {int, float}:
        raise H2RecError(f"{where}: {key} is not a numeric setting; use {{categorical: [...]}}")
    if kind == "float" and field_types == {int}:
        raise H2RecError(f"{where}: {key} is an integer setting; use {{int: [low, high]}}")
    if kind == "float":
        low, high, step = float(low), float(high), None if step is None else float(step)
    return Param(key, kind, low=low, high=high, log=use_log, step=step)


# ----------------------------------------------------------------------------- the study
def _exclusive(out: Path):
    """One search per folder at a time: a trial found RUNNING at start is then one a dead process left."""
    return one_writer(out, "`h2rec tune`")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, as stored and as YAML wants them


def _comparable(config: Config) -> dict:
    """A base configuration as two sessions of one search compare it: data paths resolved (another
    checkout, or a symlinked one, names the same files) and the device left out (it may change)."""
    values = runfolder.absolute_paths(config).to_dict()
    values["train"] = {k: v for k, v in values["train"].items() if k != "device"}
    return _plain(values)


def _open_study(out: Path, settings: SearchSettings, base: Config) -> optuna.Study:
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", load_if_exists=True)
    space = _plain([dataclasses.asdict(p) for p in settings.space])
    base_values = _comparable(base)
    if "space" not in study.user_attrs:
        study.set_user_attr("space", space)
        study.set_user_attr("base_config", base_values)
    else:
        # the stored base is rebuilt as a run folder's config.json is: a setting added to the toolkit
        # since the search began takes its default, which leaves the trials' training as it was
        stored = _comparable(build_config(study.user_attrs["base_config"], source=f"{out / 'study.db'}"))
        for name, then, now in (("space", study.user_attrs["space"], space), ("base_config", stored, base_values)):
            if then != now:
                what = "search space" if name == "space" else "base configuration"
                raise H2RecError(f"{out}: this search was started with another {what}; "
                                 "use the same one to continue it, or another output folder")
    # a sampler seeded by the study's size: a continued search does not redraw the first session's values
    n_trials = len(study.get_trials(deepcopy=False))
    sampler = optuna.samplers.TPESampler(seed=settings.seed + n_trials)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=settings.prune_startup_trials,
                                         n_warmup_steps=settings.prune_warmup_epochs)
    return optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)


# settings whose None means "the value of another": a run is matched with a trial by the values its model uses
FOLLOWS = {"model.emb_dropout": "model.dropout", "model.attn_dropout": "model.dropout"}


def _effective(values: dict) -> dict:
    values = {section: dict(keys) for section, keys in values.items()}
    for key, leader in FOLLOWS.items():
        section, name = key.split(".")
        if values[section][name] is None:
            lead_section, lead_name = leader.split(".")
            values[section][name] = values[lead_section][lead_name]
    return values


def _searched_values(settings: SearchSettings, values: dict) -> tuple[dict, list[str]]:
    """The searched keys' values in a configuration (``_effective(_comparable(config))``), and those the
    space does not hold, as "key = value"."""
    params = {p.key: values[p.key.split(".")[0]][p.key.split(".")[1]] for p in settings.space}
    return params, [f"{p.key} = {params[p.key]!r}" for p in settings.space if not p.contains(params[p.key])]


def _add_runs(study: optuna.Study, settings: SearchSettings, base: Config, sids: semid.SemanticIDs, out: Path,
              runs: typing.Sequence[str | Path]) -> None:
    """Finished runs join the search as completed trials (``h2rec tune --add-run``): each must be the base
    configuration with values of the searched keys that the space holds. TPE and the pruner then learn
    from them (no need to train the starting point again), and the best trial may be one of them. A run
    is added once, whatever later commands name it again."""
    added = list(study.user_attrs.get("added_runs", []))
    metric = selection_name(base)
    for given in runs:
        run = Path(given).expanduser().resolve()
        # the folder as seen from the search's: another checkout with the same layout finds it again
        where = Path(os.path.relpath(run, out.resolve())).as_posix()
        if where in added:
            continue
        config = read_run_config(run)
        values = _effective(_comparable(config))
        params, outside = _searched_values(settings, values)
        if outside:
            raise H2RecError(f"{run}: cannot join the search: outside its space: {', '.join(outside)}")
        # as the trial's run folder would record it: resolved against the semantic IDs (e.g. pca_init)
        expected = _effective(_comparable(resolve_config(build_config(base.to_dict(), params, source=f"{run}"), sids)))
        differ = [f"{section}.{key} = {values[section].get(key)!r} (the search's: {value!r})"
                  for section, keys in expected.items() for key, value in keys.items()
                  if values[section].get(key) != value]
        if differ:
            raise H2RecError(f"{run}: cannot join the search: not its base configuration: {'; '.join(differ)}")
        if not (run / "results.json").is_file():
            raise H2RecError(f"{run}: cannot join the search: the run has not finished (no results.json)")
        value = read_json(run / "results.json")["valid"][metric]["overall"]["NDCG@10"]
        state = read_json(run / "checkpoints" / "last.json")
        history = {r["epoch"]: r["valid_NDCG@10"] for r in state["history"] if "valid_NDCG@10" in r}
        # with its configuration, so that best.yaml can be written where the folder is not
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={p.key: p.distribution() for p in settings.space}, value=value,
            intermediate_values=history,
            user_attrs={"run_dir": where, "added_run": True, "epochs_run": state["epoch"],
                        "best_epoch": state["best_epoch"], "config": _plain(config.to_dict())}))
        added.append(where)
        study.set_user_attr("added_runs", added)
        log.info("added %s as a completed trial: %s %.5f (%s)", run, metric, value, _format_params(params))


def _enqueue_base(study: optuna.Study, settings: SearchSettings, base: Config) -> None:
    """A new study's first trial is the base configuration itself (``h2rec tune --start-from-base``), where
    no finished run of it can join with ``add_runs``: TPE's random start-up trials then have a known
    setting to beat, and the search's best is never worse than the base it started from (on validation)."""
    if study.get_trials(deepcopy=False):
        return
    params, outside = _searched_values(settings, _effective(_comparable(base)))
    if outside:
        raise H2RecError(f"the base configuration cannot be the first trial: outside the space: {', '.join(outside)}")
    study.enqueue_trial(params, user_attrs={"base": True})
    log.info("the first trial is the base configuration: %s", _format_params(params))


def _retry_interrupted(study: optuna.Study) -> None:
    """Trials left RUNNING by a dead process: enqueue their parameters and run folder, then mark them failed
    (in that order, so a kill in between loses nothing: a trial already enqueued is not enqueued twice)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        run_dir = t.user_attrs.get("run_dir", f"trials/{t.number}")
        if t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"run_dir": run_dir, "retry_of": t.number})
        study.tell(t.number, state=TrialState.FAIL)
        log.info("trial %d was interrupted: it continues from %s as the next trial (%s)",
                 t.number, run_dir, _format_params(t.params))


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value, default=None)


def _format_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# ----------------------------------------------------------------------------- one trial
def _report_history(trial: optuna.Trial, run_dir: Path) -> None:
    """A continued trial reports the epochs its run folder already holds, so the pruner sees them all."""
    for record in read_json(run_dir / "checkpoints" / "last.json")["history"]:
        if "valid_NDCG@10" in record:
            trial.report(record["valid_NDCG@10"], record["epoch"])


def _run_trial(study: optuna.Study, settings: SearchSettings, base: Config, out: Path,
               progress: bool) -> tuple[optuna.trial.FrozenTrial, H2RecError | None]:
    trial = study.ask()
    params = {p.key: p.suggest(trial) for p in settings.space}
    run_rel = trial.user_attrs.get("run_dir", f"trials/{trial.number}")
    trial.set_user_attr("run_dir", run_rel)
    run_dir = out / run_rel
    resume = (run_dir / "config.json").is_file()
    start = time.perf_counter()
    value, state, error = None, TrialState.COMPLETE, None
    try:
        config = build_config(base.to_dict(), params, source=f"trial {trial.number}")
        metric = selection_name(config)
        if resume and (run_dir / "checkpoints" / "last.json").is_file():
            _report_history(trial, run_dir)

        def on_epoch(record: dict) -> None:
            if "valid_NDCG@10" in record:
                trial.report(record["valid_NDCG@10"], record["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

        results = training.train(config, run_dir, resume=resume, progress=progress, on_epoch=on_epoch, test=False)
        value = results["valid"][metric]["overall"]["NDCG@10"]
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except H2RecError as err:  # e.g. a combination of values the model refuses: the search goes on
        state, error = TrialState.FAIL, err
        trial.set_user_attr("error", str(err))
    except KeyboardInterrupt:
        raise  # left RUNNING, as after kill -9: the next run of the command finishes it
    except Exception as err:
        trial.set_user_attr("error", f"{type(err).__name__}: {err}")
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))
    last = run_dir / "checkpoints" / "last.json"
    if last.is_file():
        progress_state = read_json(last)
        trial.set_user_attr("epochs_run", progress_state["epoch"])
        trial.set_user_attr("best_epoch", progress_state["best_epoch"])
    return study.tell(trial, value, state=state), error


# ----------------------------------------------------------------------------- outputs
def _write_trials_csv(study: optuna.Study, settings: SearchSettings, path: Path) -> None:
    keys = [p.key for p in settings.space]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", "best_epoch", "epochs_run", "seconds", "run_dir", *keys])
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        attrs = t.user_attrs
        writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                         *(attrs.get(k, "") for k in ("best_epoch", "epochs_run", "seconds", "run_dir")),
                         *(t.params.get(k, "") for k in keys)])
    write_text(path, buffer.getvalue())


def _write_best_config(out: Path, best: optuna.trial.FrozenTrial, metric: str) -> None:
    folder = out / best.user_attrs["run_dir"]
    if (folder / "config.json").is_file():
        config = read_run_config(folder)  # resolved, as the trial trained
    else:  # an added run whose folder this checkout lacks: the configuration it was added with
        config = build_config(best.user_attrs["config"], source=f"{out / 'study.db'}: trial {best.number}")
    header = (f"# h2rec tune: best trial {best.number} ({_format_params(best.params)}), "
              f"{metric} = {best.value:.5f}\n# h2rec train --config best.yaml -o RUN_DIR\n")
    write_text(out / "best.yaml", header + yaml.safe_dump(_plain(config.to_dict()), sort_keys=False))


def _plot(study: optuna.Study, metric: str, path: Path) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed: no %s (pip install 'h2rec[plots]')", path.name)
        return False
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    done, best_x, best_y, best = [], [], [], -math.inf
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            done.append((t.number, t.value))
            best = max(best, t.value)
            best_x.append(t.number)
            best_y.append(best)
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)])
              for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.intermediate_values]
    if done:
        ax.plot(*zip(*done), "o", color="tab:blue", label="complete")
        ax.step(best_x, best_y, where="post", color="tab:orange", label="best so far")
    if pruned:
        ax.plot(*zip(*pruned), "x", color="tab:gray", label="pruned (last value)")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return True


def _test_best(out: Path, best: optuna.trial.FrozenTrial, base: Config) -> dict | None:
    """Validation and test metrics of the best trial's best checkpoint, computed once per best trial."""
    from .api import load

    path = out / "best_test.json"
    if path.is_file():
        saved = read_json(path)
        if saved.get("trial") == best.number:
            return saved
    folder = out / best.user_attrs["run_dir"]
    if not (folder / "config.json").is_file():
        log.warning("the best trial, %d, is a run this checkout lacks (%s): not tested; train best.yaml, or "
                    "add its folder with --add-run", best.number, folder)
        return None
    log.info("evaluating trial %d on the test split", best.number)
    results = load(folder, device=base.train.device).evaluate()
    saved = {"trial": best.number, "run_dir": best.user_attrs["run_dir"], "params": best.params, **results}
    write_json(path, saved)
    return saved


# ----------------------------------------------------------------------------- the command
def tune(space_path: str | Path, out_dir: str | Path, base_config: Config, trials: int | None = None,
         minutes: float | None = None, progress: bool = True, add_runs: typing.Sequence[str | Path] = (),
         prune_warmup_epochs: int = 5, start_from_base: bool = False) -> dict:
    """Searches ``space_path`` around ``base_config`` into ``out_dir``; see the module docstring.
    ``add_runs``: finished run folders that join the study as completed trials (see :func:`_add_runs`).
    ``start_from_base``: a new study trains the base configuration as its first trial (see
    :func:`_enqueue_base`); with ``add_runs`` it has nothing to do, the study holds them already.
    ``prune_warmup_epochs``: no trial is pruned before this epoch. Early epochs mostly say how fast a
    trial learns (a low learning rate starts slowly and may end best), so a search whose runs peak late
    should wait longer than the default 5.

    Returns ``{"metric", "best_trial", "best_value", "best_params", "finished_trials", "files", "test"}``
    (best and test are None while no trial has completed). ``progress`` shows each trial's epochs.
    """
    if optuna is None:
        raise H2RecError("h2rec tune needs Optuna: pip install 'h2rec[tune]'")
    if trials is None and minutes is None:
        raise H2RecError("tune needs a budget: trials (finished trials in the study) and/or minutes (this run)")
    if trials is not None and trials < 1:
        raise H2RecError(f"trials must be at least 1, got {trials}")
    if minutes is not None and not minutes > 0:
        raise H2RecError(f"minutes must be positive, got {minutes}")
    if prune_warmup_epochs < 0:
        raise H2RecError(f"prune_warmup_epochs must be 0 or more, got {prune_warmup_epochs}")
    settings = SearchSettings(load_space(space_path, base_config), trials, minutes, seed=base_config.train.seed,
                              prune_warmup_epochs=prune_warmup_epochs)
    # data and semantic-ID errors now, not in every trial
    resolved, sids, ds = prepare(runfolder.absolute_paths(base_config))
    # the selection protocol left to the data is fixed once for the whole search, as its trials record it
    base_config = dataclasses.replace(base_config, eval=resolved.eval)
    metric = f"valid NDCG@10 ({selection_name(base_config)})"
    runfolder.check_catalogue_coverage(base_config, ds)
    runfolder.check_before_training(base_config, ds)
    out = Path(out_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with _exclusive(out):
        study = _open_study(out, settings, base_config)
        log.info("search in %s: %d finished trial(s) so far; maximising %s over %s", out, _finished(study), metric,
                 ", ".join(p.key for p in settings.space))
        _add_runs(study, settings, base_config, sids, out, add_runs)
        if start_from_base:
            _enqueue_base(study, settings, base_config)
        _retry_interrupted(study)
        deadline = None if minutes is None else time.monotonic() + minutes * 60
        failures = 0
        while trials is None or _finished(study) < trials:
            if deadline is not None and time.monotonic() >= deadline:
                log.info("time budget of %g minute(s) spent", minutes)
                break
            frozen, error = _run_trial(study, settings, base_config, out, progress)
            best = _best(study)
            attrs = frozen.user_attrs
            outcome = (f"{metric} {frozen.value:.5f}" if frozen.state == TrialState.COMPLETE
                       else frozen.state.name.lower() + (f" ({error})" if error else ""))
            log.info("trial %d: %s | best %s | %s epoch(s), %.1f s | %s", frozen.number, outcome,
                     f"{best.value:.5f} (trial {best.number})" if best else "-", attrs.get("epochs_run", 0),
                     attrs.get("seconds", 0.0), _format_params(frozen.params))
            _write_trials_csv(study, settings, out / "trials.csv")
            if best is not None:
                _write_best_config(out, best, metric)
            failures = failures + 1 if error else 0
            if failures >= settings.max_failures_in_a_row:
                raise H2RecError(f"{failures} trials in a row failed; the last one: {error}")

        _write_trials_csv(study, settings, out / "trials.csv")
        plotted = _plot(study, metric, out / "trials.png")
        best = _best(study)
        files = {"trials_csv": str(out / "trials.csv"), "plot": str(out / "trials.png") if plotted else None,
                 "best_config": None, "best_test": None}
        summary = {"metric": metric, "best_trial": None, "best_value": None, "best_params": None,
                   "finished_trials": _finished(study), "files": files, "test": None}
        if best is None:
            log.warning("no trial has completed yet; run the same command again to continue the search")
            return summary
        _write_best_config(out, best, metric)
        summary["test"] = _test_best(out, best, base_config)
        files.update(best_config=str(out / "best.yaml"),
                     best_test=str(out / "best_test.json") if summary["test"] is not None else None)
        summary.update(best_trial=best.number, best_value=best.value, best_params=dict(best.params))
        return summary


__all__ = ["Param", "SearchSettings", "load_space", "tune"]
