"""Every committed benchmark record says which setting it trained, and its row must still build that
setting today. A default that changes under a table otherwise mixes settings silently: the
long-history rows once averaged seed 42 at dropout 0.2 with seeds 43-44 at 0.5."""

from __future__ import annotations

import dataclasses
import json

import h2rec
import pytest
from h2rec.assemble import catalogue_sized_loss

from benchmarks import accuracy
from benchmarks.record_settings import ADDED_LATER
from benchmarks.study import experiments

# ADDED_LATER: settings added after some records were written, with the value that trains as those
# records did; a row that rebuilds anything else for a record without the field trains something new
# under its name.
PER_MACHINE = {("data", "interactions"), ("data", "semid"), ("train", "device")}


def rebuild(overrides: dict, preset: str | None = None) -> dict:
    """The configuration a run of these overrides records in config.json: as built, then the loss and
    label smoothing resolved as training resolves them (catalogues here are below train.ce_max_items)."""
    config = h2rec.build_config(overrides=overrides, preset=preset)
    return dataclasses.replace(config, train=catalogue_sized_loss(config.train, n_items=0)).to_dict()


def differences(recorded: dict, rebuilt: dict) -> list[str]:
    found = []
    for section, values in rebuilt.items():
        for key, value in values.items():
            value = list(value) if isinstance(value, tuple) else value
            if (section, key) in PER_MACHINE:
                continue
            if key not in recorded.get(section, {}):
                expected = ADDED_LATER.get((section, key), value)
                if value != expected:
                    found.append(f"{section}.{key}: record predates it, row builds {value!r}, not {expected!r}")
                continue
            if section == "model" and key == "pca_init" and value is None:
                continue  # None (by model kind) is recorded as what it resolved to
            if recorded[section][key] != value:
                found.append(f"{section}.{key}: recorded {recorded[section][key]!r}, row builds {value!r}")
    return found


def test_accuracy_records_rebuild_from_their_rows():
    seeds = [42, 43, 44]
    runs = (accuracy.beauty_runs(list(accuracy.BEAUTY_ROWS), seeds)
            + accuracy.long_runs(list(accuracy.LONG_ROWS), seeds) + accuracy.demo_runs(list(accuracy.DEMO_ROWS), seeds)
            + accuracy.other_runs(list(accuracy.OTHER_DATASETS), list(accuracy.OTHER_ROWS), seeds)
            + accuracy.selection_runs(list(accuracy.SELECTION_ROWS), seeds))
    by_record = {run.record: run for run in runs}
    orphans = [path for path in accuracy.RECORDS.rglob("*.json") if path not in by_record]
    assert not orphans, f"records no row builds: {orphans}"
    problems = []
    for path, run in by_record.items():
        if not path.is_file():
            continue
        overrides = {key: value for key, value in run.overrides.items() if key != "preset"}
        rebuilt = rebuild({**overrides, "train.seed": run.seed}, run.overrides.get("preset"))
        problems += [f"{path.name}: {d}" for d in differences(json.loads(path.read_text())["config"], rebuilt)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dataset", ["yelp", "beauty", "scientific", "games"])
def test_study_records_rebuild_from_their_runs(dataset):
    problems = []
    for run in experiments.every_run([dataset], [42, 43, 44]):
        if not run.record.is_file():
            continue
        rebuilt = rebuild({**run.base, **run.overrides, "train.seed": run.seed})
        recorded = json.loads(run.record.read_text())["config"]
        problems += [f"{run.record.name}: {d}" for d in differences(recorded, rebuilt)]
    assert not problems, "\n".join(problems)
