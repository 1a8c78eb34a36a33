"""The H2Rec study on real data: the paper's tables, rerun with this toolkit (issue 5).

One command per table. Every run is trained in its own folder under benchmarks/work/runs/
(gitignored: checkpoints, logs); once it finishes, its results are copied into a small record under
benchmarks/results/study/records/ (committed), which is what the report reads. A run with a record is
skipped (delete the record to train it again), an interrupted one resumes from its last checkpoint,
so the study can be completed in pieces across sittings and checkouts. A run being trained holds a
lock file, so several workers can share one command's list (e.g. two single-thread workers on a
2-core machine: `OMP_NUM_THREADS=1 python benchmarks/study.py table3 &` twice).

    python benchmarks/study.py prepare  --datasets beauty yelp      # semantic IDs for each dataset
    python benchmarks/study.py table2   --datasets yelp beauty scientific --seeds 42 43 44
    python benchmarks/study.py table3   --seeds 42 43 44            # ablations (Yelp, Scientific)
    python benchmarks/study.py sweeps   --seeds 42                  # beta, gamma, p, o (Yelp)
    python benchmarks/study.py table6   --seeds 42                  # VQ / PQ / RQ-VAE semantic IDs (Yelp)
    python benchmarks/study.py table7   --seeds 42                  # GRU4Rec and BERT4Rec backbones (Yelp)
    python benchmarks/study.py table8   --seeds 42                  # codebook shapes (Yelp)
    python benchmarks/study.py loss     --datasets beauty --seeds 42 43 44   # full cross-entropy instead of BPR
    python benchmarks/study.py patience --datasets scientific                # early stopping after 30 epochs, not 10
    python benchmarks/study.py table2-defaults --datasets scientific  # Table 2 under h2rec's defaults (CE, ...)
    python benchmarks/study.py table3-defaults --datasets scientific  # Table 3 under h2rec's defaults
    python benchmarks/study.py report                               # docs/results.md + plots from what has run

Options shared by every run sit in BASE below (DEFAULTS for the *-defaults tables); each table adds
its own overrides. Model selection uses validation NDCG@10 under full ranking; test numbers are
reported under full ranking and the paper's 1 + 100 sampled protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from h2rec.config import PRESETS

sys.path.insert(0, str(Path(__file__).parent))
from datasets import DATASETS, DEFAULT_DATA, WORK, interactions_file, items_file  # noqa: E402

RUNS = WORK / "runs"
RESULTS = Path(__file__).parent / "results" / "study"
RECORDS = RESULTS / "records"
PREPARE_THREADS = 2  # the thread count the study's semantic IDs were made with (see prepare)

# shared by every run of the study: the paper preset (BPR, last window, patience in epochs only),
# which is what h2rec's defaults were when the study ran, so its run names and records stay valid
BASE = {
    **PRESETS["paper"],
    "model.dim": 64,
    "model.num_layers": 2,
    "train.epochs": 200,
    "train.patience": 10,
    "train.batch_size": 256,
    "eval.negatives": 100,  # report the paper's protocol beside full ranking
    "eval.select_on": "full",
}
# Tables 2 and 3 again under h2rec's defaults, the settings issue 17 measured best (full cross-entropy,
# every training position, dropout 0.5, patience in epochs and optimizer steps): the study's sizes
# and protocols, nothing of the paper preset.
DEFAULTS = {key: BASE[key] for key in ("model.dim", "model.num_layers", "train.epochs", "train.batch_size",
                                       "eval.negatives", "eval.select_on")}
SETTINGS = {"paper": BASE, "defaults": DEFAULTS}


@dataclass(frozen=True)
class SemanticIDs:
    quantizer: str = "rqvae"
    levels: int = 4
    codebook: int = 128

    @property
    def slug(self) -> str:
        return f"{self.quantizer}-{self.levels}x{self.codebook}"


@dataclass(frozen=True)
class Run:
    table: str
    dataset: str
    name: str  # row label in the table
    seed: int
    overrides: dict = field(default_factory=dict, hash=False)
    sids: SemanticIDs = SemanticIDs()
    settings: str = "paper"  # a key of SETTINGS: what the overrides are applied to

    @property
    def base(self) -> dict:
        return SETTINGS[self.settings]

    @property
    def folder(self) -> Path:
        """Named by what is trained, not by the table: two tables that need the same model (the
        default H2Rec is a row of Tables 2-8) share one run."""
        return RUNS / self.name_path

    @property
    def name_path(self) -> Path:
        # the paper-preset runs keep the names they were recorded under; other settings get a folder
        settings = () if self.settings == "paper" else (self.settings,)
        return Path(self.dataset, self.sids.slug, *settings, f"{config_slug(self.overrides, self.base)}-s{self.seed}")

    @property
    def record(self) -> Path:
        """The committed copy of the finished run's results (see `archive`)."""
        path = RECORDS / self.name_path
        return path.with_name(path.name + ".json")  # not with_suffix: names hold dots, as in 'beta=0.1-s42'


def config_slug(overrides: dict, base: dict = BASE) -> str:
    """The options that differ from ``base``, e.g. 'kind=hid,backbone=gru4rec,num_layers=1'."""
    import h2rec

    config = h2rec.build_config(overrides={**base, **overrides}).to_dict()
    default = h2rec.build_config(overrides=base).to_dict()
    changed = [f"{key}={config[section][key]}" for section in ("model", "train")
               for key in config[section] if config[section][key] != default[section][key]]
    return ",".join(changed) or "h2rec"


def semid_folder(dataset: str, sids: SemanticIDs) -> Path:
    return WORK / dataset / f"semid-{sids.slug}"


# ----------------------------------------------------------------------------- the experiments
def table2(datasets, seeds) -> list[Run]:
    models = {
        "SASRec (hid)": {"model.kind": "hid", "model.backbone": "sasrec"},
        "BERT4Rec (hid)": {"model.kind": "hid", "model.backbone": "bert4rec", "model.num_heads": 2},
        "GRU4Rec (hid)": {"model.kind": "hid", "model.backbone": "gru4rec", "model.num_layers": 1},
        "SID only (sid)": {"model.kind": "sid", "model.backbone": "sasrec"},
        "H2Rec": {"model.kind": "h2rec", "model.backbone": "sasrec"},
    }
    return [Run("table2", d, name, s, o) for d in datasets for s in seeds for name, o in models.items()]


def table3(datasets, seeds) -> list[Run]:
    variants = {
        "H2Rec": {},
        "w/o FN": {"model.fusion": False},
        "w/o L_CA": {"train.beta": 0.0},
        "w/o MCA": {"model.mca": False},
        "w/o L_MSG": {"train.gamma": 0.0},
    }
    return [Run("table3", d, name, s, {"model.kind": "h2rec", **o})
            for d in datasets for s in seeds for name, o in variants.items()]


def table2_defaults(datasets, seeds) -> list[Run]:
    return [replace(run, table="table2-defaults", settings="defaults") for run in table2(datasets, seeds)]


def table3_defaults(datasets, seeds) -> list[Run]:
    return [replace(run, table="table3-defaults", settings="defaults") for run in table3(datasets, seeds)]


def sweeps(datasets, seeds) -> list[Run]:
    runs = []
    for d in datasets:
        for s in seeds:
            for v in (0.1, 0.3, 0.5, 0.7, 0.9):
                runs.append(Run("beta", d, f"beta={v}", s, {"train.beta": v}))
                runs.append(Run("gamma", d, f"gamma={v}", s, {"train.gamma": v}))
            for p in (0, 1, 2, 3):
                runs.append(Run("code_match", d, "removed" if p == 0 else f"p={p}", s, {"train.code_match": p}))
            for o in (0, 1, 3, 5):
                runs.append(Run("window", d, "removed" if o == 0 else f"o={o}", s, {"train.window": o}))
    return runs


def table6(datasets, seeds) -> list[Run]:
    return [Run("table6", d, f"{q.upper()} + H2Rec", s, {}, SemanticIDs(q, 4, 128))
            for d in datasets for s in seeds for q in ("vq", "pq", "rq", "rqvae")]


def table7(datasets, seeds) -> list[Run]:
    runs = []
    for backbone, extra in (("gru4rec", {"model.num_layers": 1}), ("bert4rec", {"model.num_heads": 2})):
        for kind, name in (("hid", f"{backbone} (hid)"), ("h2rec", f"{backbone} + H2Rec")):
            runs += [Run("table7", d, name, s, {"model.kind": kind, "model.backbone": backbone, **extra})
                     for d in datasets for s in seeds]
    return runs


def table8(datasets, seeds) -> list[Run]:
    shapes = [(3, 128), (3, 256), (3, 512), (4, 128), (4, 256)]
    return [Run("table8", d, f"{levels}x{k}", s, {}, SemanticIDs("rqvae", levels, k))
            for d in datasets for s in seeds for levels, k in shapes]


def loss_choice(datasets, seeds) -> list[Run]:
    models = {"SASRec (hid)": {"model.kind": "hid"}, "SID only (sid)": {"model.kind": "sid"},
              "H2Rec": {"model.kind": "h2rec"}}
    return [Run("loss", d, f"{name}, {loss}", s, {**o, "train.loss": loss})
            for d in datasets for s in seeds for name, o in models.items() for loss in ("bpr", "ce")]


def patience_check(datasets, seeds) -> list[Run]:
    """Finding 13 asks whether early stopping decides Tail: the Table 2 models again with a patience
    of 30 epochs instead of 10 (the patience-10 rows are Table 2's own runs)."""
    models = {"SASRec (hid)": {"model.kind": "hid"}, "SID only (sid)": {"model.kind": "sid"},
              "H2Rec": {"model.kind": "h2rec"}}
    return [Run("patience", d, f"{name}, patience {p}", s, {**o, "train.patience": p})
            for d in datasets for s in seeds for name, o in models.items() for p in (10, 30)]


def every_run(datasets, seeds) -> list[Run]:
    """The runs of every experiment; a run shared by two tables appears once per table."""
    return [run for experiment in EXPERIMENTS.values() for run in experiment(list(datasets), list(seeds))]


EXPERIMENTS = {"table2": table2, "table3": table3, "table2-defaults": table2_defaults,
               "table3-defaults": table3_defaults, "sweeps": sweeps, "table6": table6, "table7": table7,
               "table8": table8, "loss": loss_choice, "patience": patience_check}
# the others: Yelp, the paper's domain; the patience check on the smallest catalogue, where it is cheap
DEFAULT_DATASETS = {"table2": ["yelp", "beauty", "scientific"], "table3": ["yelp", "scientific"], "loss": ["beauty"],
                    "table2-defaults": ["scientific", "beauty", "yelp"], "table3-defaults": ["scientific", "yelp"],
                    "patience": ["scientific"]}


# ----------------------------------------------------------------------------- running
def prepare(dataset: str, sids: SemanticIDs, data: Path) -> Path:
    """`semid encode` of the dataset's items with the given quantizer (once; embeddings are cached)."""
    import semid

    out = semid_folder(dataset, sids)
    if (out / "stats.json").is_file():
        return out
    spec = DATASETS[dataset]
    start = time.perf_counter()
    # the text encoder's float sums depend on torch's thread count and the codes inherit it (Beauty
    # 4x128: 1.45% of items collide at 2 threads, 1.32% at 1; benchmarks/semid_threads.py), so the
    # study's codes do not depend on whether a single-thread worker or a 2-thread command made them
    workers_threads = torch.get_num_threads()
    torch.set_num_threads(PREPARE_THREADS)
    try:
        semid.encode_catalogue(
            items_file(dataset, data), out,
            read=semid.ReadConfig(template=spec.template),
            quantizer=semid.QuantizerConfig(kind=sids.quantizer, levels=sids.levels, codebook_size=sids.codebook),
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
    subprocess.run([sys.executable, __file__, "_train", json.dumps(job)], check=True, pass_fds=(lock_fd,))


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


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["prepare", *EXPERIMENTS, "report"])
    ap.add_argument("--datasets", nargs="+", choices=sorted(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and whether they are done")
    ap.add_argument("--rows", nargs="+", metavar="NAME", help="only these rows of the table, e.g. H2Rec 'SASRec (hid)'")
    if len(sys.argv) == 3 and sys.argv[1] == "_train":  # the child process of execute()
        train_job(json.loads(sys.argv[2]))
        return
    args = ap.parse_args()
    # SIGTERM (kill, timeout) then interrupts subprocess.run, which kills the training child: a worker
    # stopped this way leaves no orphan training on (SIGKILL still does, and the child keeps the lock)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    if args.command == "report":
        from study_report import write_report

        write_report(RESULTS)
        return
    if args.command == "prepare":
        for d in args.datasets or ["yelp", "beauty"]:
            prepare(d, SemanticIDs(), args.data)
        return
    datasets = args.datasets or DEFAULT_DATASETS.get(args.command, ["yelp"])
    runs = EXPERIMENTS[args.command](datasets, args.seeds)
    if args.rows:
        unknown = set(args.rows) - {run.name for run in runs}
        if unknown:
            names = sorted({run.name for run in runs})
            ap.error(f"--rows: {sorted(unknown)} not among the rows of {args.command}: {names}")
        runs = [run for run in runs if run.name in args.rows]
    for run in runs:
        if args.dry_run:
            state = ("done" if run.record.is_file() else "running" if lock_held(run.folder)
                     else "trained" if (run.folder / "results.json").is_file()  # archived by the next command
                     else "started" if (run.folder / "config.json").is_file() else "todo")
            print(f"{state:8} {run.name_path.as_posix()}")
            continue
        execute(run, args.data, args.device)


if __name__ == "__main__":
    main()
