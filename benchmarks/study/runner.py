"""How the study runs: semantic IDs per dataset, one locked worker per run, training in a child
process, and the committed record of each finished run.

A run being trained holds an flock on its folder's worker.lock, so several workers can share one
command's list; the child process shares that lock, so a parent killed alone frees nothing that is
still training.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from benchmarks.machine import machine
from benchmarks.shared_data import DATASETS, REPO, WORK, interactions_file, items_file
from benchmarks.study.experiments import Run, SemanticIDs, every_run, semid_folder

PREPARE_THREADS = 2  # the thread count the study's semantic IDs were made with (see prepare)


def prepare(dataset: str, sids: SemanticIDs, data: Path) -> Path:
    """`semid encode` of the dataset's items with the given quantizer (once; embeddings are cached)."""
    import semid

    out = semid_folder(dataset, sids)
    if (out / "stats.json").is_file():
        return out
    spec = DATASETS[dataset]
    start = time.perf_counter()
    # the study's codes were made at 2 threads before semid capped the threads of short matrix
    # products (docs/semid.md 3.4; Beauty 4x128 then collided 1.45% at 2 threads, 1.32% at 1); the
    # fixed count keeps a rebuild of a missing folder as close to them as semid still allows (the
    # embedding cache keeps the vectors it was made with; a folder made afresh now has the
    # thread-independent codes, and the records' collision rates would show the difference)
    workers_threads = torch.get_num_threads()
    torch.set_num_threads(PREPARE_THREADS)
    try:
        semid.encode_catalogue(
            items_file(dataset, data), out,
            read=semid.ReadConfig(template=spec.template),
            quantizer=semid.QuantizerConfig(kind=sids.quantizer, levels=sids.levels, codebook_size=sids.codebook,
                                            pca_dim=sids.pca_dim),
            cache_dir=WORK / "cache",  # shared with semid_bench.py
        )
    finally:
        torch.set_num_threads(workers_threads)
    print(f"[study] {dataset} {sids.slug}: semantic IDs in {time.perf_counter() - start:.0f} s -> {out}")
    return out


def execute(run: Run, data: Path, device: str) -> dict | None:
    """Trains one run in a child process (its own peak memory, and a crash stops only that run)
    and archives it. Returns None when another live worker is training it."""
    if run.record.is_file():
        return json.loads(run.record.read_text())
    with run_lock(run.folder) as lock_fd:
        if lock_fd is None:
            print(f"[study] {run.table} / {run.dataset} / {run.name} / seed {run.seed}: another worker has it",
                  flush=True)
            return None
        # finished by another worker between the check above and the lock, or before records existed
        if not (run.folder / "results.json").is_file():
            train_in_child(run, data, device, lock_fd)
        return archive(run)


def archive(run: Run) -> dict:
    """Writes the run's record: its results.json with the run's configuration, its training hours,
    the collision statistics of its semantic IDs and the repeat share of its data added. The run
    folder holds checkpoints and is not committed; the record is a few kilobytes and is, so a new
    checkout can rebuild the report and knows what is done."""
    results = json.loads((run.folder / "results.json").read_text())
    epochs = epoch_log(run.folder)
    record = {**results, "run": run.name_path.as_posix(),
              "config": json.loads((run.folder / "config.json").read_text()),
              "hours": round(sum(e.get("train_seconds", 0) + e.get("eval_seconds", 0) for e in epochs) / 3600, 4),
              "valid_NDCG@10_by_epoch": [e.get("valid_NDCG@10") for e in epochs]}  # the training curve
    semid_stats = semid_folder(run.dataset, run.sids) / "stats.json"
    if semid_stats.is_file():
        record["collisions"] = json.loads(semid_stats.read_text())["collisions"]
    record["data"]["repeat_share"] = repeat_share(record["data"]["interactions_file"])
    run.record.parent.mkdir(parents=True, exist_ok=True)
    tmp = run.record.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(run.record)
    return record


def archive_finished(datasets=("yelp", "beauty", "scientific", "games"), seeds=range(40, 50)) -> None:
    """Records for runs that finished without one (trained before records existed, or by a worker
    interrupted between training and archiving)."""
    for run in every_run(datasets, seeds):
        if not run.record.is_file() and (run.folder / "results.json").is_file():
            archive(run)
            print(f"archived {run.record}")


def epoch_log(folder: Path) -> list[dict]:
    """The run's per-epoch log (metrics.jsonl), one entry per epoch in order: an epoch repeated by a
    resumed sitting counts once, as its last record."""
    epochs = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        epochs[record["epoch"]] = record
    return [epochs[e] for e in sorted(epochs)]


@functools.cache  # one file read per dataset when many runs are archived at once
def repeat_share(interactions_file: str) -> float:
    """Share of users whose test item (the last) already occurs earlier in their sequence: repeat
    consumption, which ID models find easy and which popularity buckets do not show."""
    from h2rec.config import DataConfig
    from h2rec.readers import read_interactions

    sequences = read_interactions(DataConfig(interactions=interactions_file)).values()
    return sum(seq[-1] in seq[:-1] for seq in sequences) / len(sequences)


LOCK = "worker.lock"


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[int | None]:
    """An exclusive flock on folder/worker.lock: yields its file descriptor, or None if another
    process holds it. The kernel drops the lock once every process holding it has exited, so a
    killed worker leaves nothing stale behind and two workers can never both take a run (POSIX)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as f:
        held = try_flock(f)
        if not held:
            # a --dry-run probe holds a shared lock for microseconds: ask once more before
            # concluding that another worker is training this run
            time.sleep(0.5)
            held = try_flock(f)
        yield f.fileno() if held else None


def try_flock(f) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def lock_held(folder: Path) -> bool:
    """Whether a live process holds folder/worker.lock (a shared probe, released at once)."""
    try:
        with open(folder / LOCK) as f:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True


def train_in_child(run: Run, data: Path, device: str, lock_fd: int) -> None:
    semid_dir = prepare(run.dataset, run.sids, data)
    overrides = {**run.base, **run.overrides, "data.interactions": str(interactions_file(run.dataset, data)),
                 "data.semid": str(semid_dir), "train.seed": run.seed, "train.device": device}
    resume = (run.folder / "config.json").is_file()  # the folder itself exists once locked
    print(f"[study] {run.table} / {run.dataset} / {run.name} / seed {run.seed}" + (" (resuming)" if resume else ""),
          flush=True)
    job = {"overrides": overrides, "folder": str(run.folder), "resume": resume}
    # the child shares the lock, so a parent killed alone does not free a run still being trained
    subprocess.run([sys.executable, "-m", "benchmarks.study", "_train", json.dumps(job)], check=True,
                   pass_fds=(lock_fd,), cwd=REPO)


def train_job(job: dict) -> None:
    """The child process of `execute`: one h2rec run, then the machine and wall time added to its results."""
    import h2rec

    start = time.perf_counter()
    results = h2rec.train(h2rec.build_config(overrides=job["overrides"]), job["folder"], resume=job["resume"])
    results["wall_seconds_this_sitting"] = round(time.perf_counter() - start, 1)
    results["machine"] = machine()
    path = Path(job["folder"]) / "results.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)
