"""What a run folder records about its data, and the checks that keep it honest.

A run folder must mean one thing: these weights, trained on this data. ``config.json`` stores the
data paths as absolute paths (so ``evaluate`` and ``recommend`` work from any directory) and
``data.json`` stores a fingerprint of the data: size and SHA-256 of the interactions file, and a
SHA-256 of the semantic-ID folder's item ids and codes (the only parts the model depends on), plus
the index maps of the split (item index i -> item id, user row -> user id) that the leave-one-out
split is rebuilt from. ``evaluate``, ``recommend`` and ``--resume`` rebuild the dataset, compare, and
refuse with a message naming what changed rather than score a model against other data.

Only a few settings may change when a run continues (``RESUMABLE``): how long it runs, where it
runs, and how it is reported. The rest define the model and its training and are refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import semid

from .checkpoint import check_run_folder, read_json, write_json
from .config import SECTIONS, Config, build_config
from .data import Dataset
from .errors import H2RecError
from .fingerprint import file_digest

log = logging.getLogger(__name__)

DATA_FILE = "data.json"
# Settings that may change on --resume (the rest are refused): stopping, placement, compiling, reporting, the
# data paths, whose content the fingerprint still pins (data moved to another disk), and whether the
# prepared interactions come from the cache (the same table either way).
RESUMABLE = ("data.interactions", "data.semid", "data.cache", "train.epochs", "train.patience",
             "train.patience_steps", "train.eval_every", "train.device", "train.compile", "eval.batch_size",
             "eval.item_chunk", "eval.negatives", "eval.negatives_seed", "eval.ks")


def read_run_config(run_dir: Path):
    """The resolved :class:`~h2rec.config.Config` a run folder was trained with."""
    meta = check_run_folder(run_dir)
    return build_config({k: meta[k] for k in SECTIONS if k in meta}, source=str(run_dir / "config.json"))


def absolute_paths(config: Config) -> Config:
    """The configuration with its data paths made absolute (a run folder must not depend on the cwd)."""
    data = config.data
    resolved = {name: str(Path(getattr(data, name)).expanduser().resolve())
                for name in ("interactions", "semid") if getattr(data, name)}
    config = dataclasses.replace(config, data=dataclasses.replace(data, **resolved))
    if config.train.melt_init:  # MELT's starting run folder
        init = str(Path(config.train.melt_init).expanduser().resolve())
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, melt_init=init))
    return config


def semid_digest(sids: semid.SemanticIDs) -> dict[str, Any]:
    """SHA-256 of the item ids (in row order) and their codes: what the model's item indices mean."""
    digest = hashlib.sha256()
    digest.update("\n".join(sids.ids).encode("utf-8"))
    digest.update(np.ascontiguousarray(sids.codes.numpy(), dtype="<i8").tobytes())
    return {"items": len(sids.ids), "levels": int(sids.codes.shape[1]), "sha256": digest.hexdigest()}


def data_record(config: Config, sids: semid.SemanticIDs, ds: Dataset) -> dict[str, Any]:
    return {
        "interactions": {"path": config.data.interactions, **file_digest(config.data.interactions)},
        "semid": {"path": config.data.semid, **semid_digest(sids)},
        # the split's index maps: item index i is item_ids[i - 1]; user row u is user_ids[u]
        "item_ids": ds.item_ids,
        "user_ids": ds.user_ids,
    }


def write_data_record(run_dir: Path, config: Config, sids: semid.SemanticIDs, ds: Dataset) -> None:
    write_json(run_dir / DATA_FILE, data_record(config, sids, ds))


def data_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """What data.json says identifies the training data (the files' digests, not the split's index
    maps), for records that travel without the run; None for a run folder older than data.json."""
    path = run_dir / DATA_FILE
    if not path.is_file():
        return None
    saved = read_json(path)
    return {key: saved[key] for key in ("interactions", "semid")}


def check_data(run_dir: Path, config: Config, sids: semid.SemanticIDs, ds: Dataset) -> None:
    """Refuses (H2RecError naming what changed) when the data differ from what the run trained on.
    Run folders older than data.json carry no fingerprint: they are used as they are, with a warning."""
    path = run_dir / DATA_FILE
    if not path.is_file():
        log.warning("%s: no %s (an older run folder): the data cannot be checked against the training data",
                    run_dir, DATA_FILE)
        return
    saved = read_json(path)
    changed = []
    now = file_digest(config.data.interactions)
    if now != {k: saved["interactions"][k] for k in ("bytes", "sha256")}:
        changed.append(f"the interactions file {config.data.interactions} ({now['bytes']} bytes, sha256 "
                       f"{now['sha256'][:12]}…; the run trained on {saved['interactions']['path']}, "
                       f"{saved['interactions']['bytes']} bytes, sha256 {saved['interactions']['sha256'][:12]}…)")
    now = semid_digest(sids)
    if now != {k: saved["semid"][k] for k in ("items", "levels", "sha256")}:
        changed.append(f"the semantic IDs in {config.data.semid} ({now['items']} items, sha256 {now['sha256'][:12]}…; "
                       f"the run trained on {saved['semid']['path']}, {saved['semid']['items']} items, "
                       f"sha256 {saved['semid']['sha256'][:12]}…): re-encoded or another catalogue")
    if not changed and (ds.item_ids != saved["item_ids"] or ds.user_ids != saved["user_ids"]):
        changed.append("the split rebuilt from the same files (another version of the readers?)")
    if changed:
        raise H2RecError(f"{run_dir}: the data no longer match the run's training data: " + "; ".join(changed)
                         + ". Evaluate against the original files, or train a new run")


def flatten(config: Config) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.to_dict().items() for key, value in values.items()}


def resume_config(saved: Config, given: Config | None) -> tuple[Config, dict[str, tuple[Any, Any]]]:
    """The configuration a resumed run continues with: the saved one, with the ``RESUMABLE`` settings
    of ``given`` (None: none). Returns it and the changes {key: (old, new)}; any other difference is
    refused, naming the settings."""
    if given is None:
        return saved, {}
    old, new = flatten(saved), flatten(absolute_paths(given))
    changes = {key: (old[key], new[key]) for key in old if old[key] != new[key]}
    refused = sorted(key for key in changes if key not in RESUMABLE)
    if refused:
        listed = ", ".join(f"{key} ({changes[key][0]!r} -> {changes[key][1]!r})" for key in refused)
        raise H2RecError(f"--resume continues the run as it started; these settings differ from it: {listed}. "
                         f"Only {', '.join(RESUMABLE)} may change; train another folder to change the rest")
    if not changes:
        return saved, {}
    overrides = {key: new for key, (_, new) in changes.items()}
    return build_config(saved.to_dict(), overrides, source="--resume"), changes


def check_before_training(config: Config, ds: Dataset) -> None:
    """What can fail at the end of a run, checked before its first file is written."""
    where = config.data.interactions
    if not len(ds.valid):
        raise H2RecError(f"{where}: no user has 3 or more items, so there is nothing to validate and test on "
                         "(leave-one-out needs a training item, a validation item and a test item)")
    k = config.eval.negatives
    if k:
        touched = max(len(np.unique(ds.sequences[u])) for u in ds.valid.users)
        if ds.n_items - touched < k:
            raise H2RecError(f"eval.negatives is {k}, but a user has touched {touched} of the {ds.n_items} items, "
                             f"leaving {ds.n_items - touched} to sample negatives from; use at most that many")


def check_catalogue_coverage(config: Config, ds: Dataset) -> None:
    """A semantic-ID folder made for another catalogue can share ids with the interactions: refuse
    when too few of its items occur in them (``data.min_catalogue_coverage``)."""
    used, n = ds.stats["items_interacted"], ds.stats["catalogue_items"]
    share = used / max(n, 1)
    if share < config.data.min_catalogue_coverage:
        raise H2RecError(
            f"{config.data.interactions}: only {used} of the {n} items in {config.data.semid} ({share:.1%}) occur "
            f"in the interactions, below data.min_catalogue_coverage = {config.data.min_catalogue_coverage}; "
            "is the semid folder made for this catalogue? The model would rank all of its items. To train "
            "anyway, pass --min-catalogue-coverage 0")
    if used < n:
        log.info("%d of the %d catalogue items (%.1f%%) occur in the interactions", used, n, 100 * share)
