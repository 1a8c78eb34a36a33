"""h2rec's interaction ingest at scale (issue 22, item 1), on synthetic logs: seconds and peak memory of
reading a file and splitting it leave-one-out (``h2rec.data.build_dataset``), CSV and Parquet, without the
dataset cache, with it cold (first run: read, split, write the entry) and warm (second run).

    OMP_NUM_THREADS=1 python -m benchmarks.scale --interactions 1e5 1e6   # what results/scale.json holds
    OMP_NUM_THREADS=1 python -m benchmarks.scale --interactions 1e7       # adds the 10^7 size to it
    python -m benchmarks.scale --interactions 1e5 --baseline COMMIT       # also the readers of COMMIT

The log of n interactions has n / 10 users (mean history 10) and n / 100 items (2 x 10^5 at 2 x 10^7):
item popularity is Zipf-like (weight 1 / rank), user activity long-tailed (1 / rank^0.6), rows in
time order (a log, users interleaved), times with an average gap of 30 s so that some tie, and
repeated (user, item) pairs as the popularity draws give them. Ids are strings ("u0012345") numbered
in random order. Files go to benchmarks/work/scale/ (gitignored).

Each measurement is a fresh Python process (``--measure``) that imports h2rec (numpy, torch, pyarrow),
lowers its peak RSS to its RSS (``/proc/self/clear_refs``, Linux), then builds the dataset: the record
keeps the RSS before and the peak during the build (VmHWM), so the difference is the build's own
memory, and the process's lifetime peak (getrusage, imports included). ``--baseline COMMIT``
extracts that commit's h2rec (git archive) and measures its readers the same way (no cache there).
Writes benchmarks/results/scale.json (or --out; sizes measured before are kept unless measured
again) and a log-log plot of seconds and memory against size, scale.png, beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "scale.json"
WORK = ROOT / "work" / "scale"
MODES = ("no_cache", "cache_cold", "cache_warm")
FORMATS = ("csv", "parquet")


# ---------------------------------------------------------------------------------------------
# the synthetic log


def zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Weights 1 / rank^exponent over n ids in random order (the id number says nothing of popularity)."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights) / weights.sum()


def generate(n: int, folder: Path, seed: int = 0) -> dict:
    """Writes interactions.csv, interactions.parquet and items.json (the catalogue, in index order)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users, n_items = max(n // 10, 1), max(n // 100, 1)
    users = rng.choice(n_users, size=n, p=zipf_weights(n_users, 0.6, rng))
    items = rng.choice(n_items, size=n, p=zipf_weights(n_items, 1.0, rng))
    times = np.sort(rng.integers(1_500_000_000, 1_500_000_000 + 30 * n, size=n))  # a log: rows in time order
    user_names = np.char.add("u", np.char.zfill(rng.permutation(n_users).astype(str), 7))
    item_names = np.char.add("i", np.char.zfill(rng.permutation(n_items).astype(str), 6))
    table = pa.table({"user_id": pa.array(user_names[users]), "item_id": pa.array(item_names[items]),
                      "timestamp": pa.array(times)})
    folder.mkdir(parents=True, exist_ok=True)
    # unquoted, as `h2rec prepare` (csv.writer) and pandas write plain ids
    pacsv.write_csv(table, folder / "interactions.csv", pacsv.WriteOptions(quoting_style="none"))
    pq.write_table(table, folder / "interactions.parquet")
    (folder / "items.json").write_text(json.dumps(item_names.tolist()), encoding="utf-8")
    return {"interactions": n, "users": int(len(np.unique(users))), "items": n_items,
            "items_interacted": int(len(np.unique(items))),
            "repeated_pairs": int(n - len(np.unique(users.astype(np.int64) * n_items + items))),
            "tied_times": int(n - len(np.unique(times))),
            "bytes": {fmt: (folder / f"interactions.{fmt}").stat().st_size for fmt in FORMATS}}


# ---------------------------------------------------------------------------------------------
# one measurement, in its own process


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak) from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> None:
    """Lowers the peak RSS (VmHWM) to the RSS now (Linux >= 4.0), so that the peak read after the work
    is the work's own: the imports' transient peak (torch) would otherwise hide anything below it."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(file: Path, items_file: Path, use_cache: bool, threads: int) -> dict:
    import h2rec.data
    import pyarrow
    import torch
    from h2rec.config import DataConfig
    from h2rec.data import build_dataset

    try:  # the readers' imports (pyarrow.compute: ~0.2 s) are paid by any h2rec command, not counted here
        import h2rec.columnar  # noqa: F401
    except ImportError:  # a baseline from before it
        pass
    torch.set_num_threads(threads)
    pyarrow.set_cpu_count(threads)
    pyarrow.set_io_thread_count(threads)
    item_ids = json.loads(items_file.read_text(encoding="utf-8"))
    fields = {"interactions": str(file)}
    if use_cache:  # a baseline's DataConfig has no such field
        fields["cache"] = True
    elif "cache" in DataConfig.__dataclass_fields__:
        fields["cache"] = False
    reset_peak()
    before = status_mib("VmRSS")
    start = time.perf_counter()
    ds = build_dataset(DataConfig(**fields), item_ids)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mib": status_mib("VmHWM"), "rss_before_mib": before,
            "peak_rss_of_the_process_mib": peak_rss_mib(), "users": len(ds.user_ids),
            "users_evaluated": len(ds.valid), "code": h2rec.data.__file__}


def run_measure(file: Path, items_file: Path, mode: str, threads: int, cache_dir: Path,
                source: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "H2REC_CACHE_DIR": str(cache_dir)}
    if source is not None:  # another commit's h2rec first on the path
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-m", "benchmarks.scale", "--measure", str(file), "--items-file", str(items_file),
            "--threads", str(threads)] + (["--use-cache"] if mode != "no_cache" else [])
    done = subprocess.run(args, env=env, cwd=ROOT.parent, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"measurement failed ({' '.join(args)}):\n{done.stderr}")
    return {"mode": mode, **json.loads(done.stdout.strip().splitlines()[-1])}


def baseline_source(commit: str) -> Path:
    """That commit's packages/h2rec/src, extracted once under benchmarks/work/scale/."""
    target = WORK / f"h2rec-{commit}"
    if not target.is_dir():
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit, "packages/h2rec/src"], cwd=ROOT.parent,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "packages" / "h2rec" / "src"


# ---------------------------------------------------------------------------------------------
# the record and its plot


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for fmt in FORMATS:
        for mode in (*MODES, "baseline"):
            points = [(run["interactions"], m) for run in record["runs"] for m in run["measurements"].get(fmt, [])
                      if m["mode"] == mode]
            if not points:
                continue
            x = [n for n, _ in points]
            style = {"csv": "-", "parquet": "--"}[fmt]
            label = f"{fmt}, {mode.replace('_', ' ')}"
            left.plot(x, [m["seconds"] for _, m in points], style, marker="o", label=label)
            right.plot(x, [m["peak_rss_mib"] - m["rss_before_mib"] for _, m in points], style,
                       marker="o", label=label)
    for axis, ylabel in ((left, "read + split seconds"), (right, "peak RSS above the RSS before (MiB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("interactions")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle(f"h2rec build_dataset at scale ({record['threads']} thread; {record['machine']})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", nargs="+", type=lambda s: int(float(s)), default=[100_000, 1_000_000],
                    help="sizes n of the generated logs, e.g. 1e5 1e6 1e7")
    ap.add_argument("--threads", type=int, default=1, help="torch and pyarrow threads (default 1)")
    ap.add_argument("--baseline", help="also measure the readers of this git commit (no cache), e.g. HEAD~1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one measurement (a child process)
    ap.add_argument("--items-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--use-cache", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.items_file, args.use_cache, args.threads)))
        return

    old = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {"runs": []}
    record = {"benchmark": "scale", "machine": machine(), "cores": os.cpu_count(), "threads": args.threads,
              "load_average_at_start": os.getloadavg(), "baseline": args.baseline,
              "runs": [run for run in old["runs"] if run["interactions"] not in args.interactions]}
    source = baseline_source(args.baseline) if args.baseline else None
    for n in args.interactions:
        folder = WORK / f"n{n}"
        run = {"interactions": n, "data": generate(n, folder, args.seed), "measurements": {}}
        for fmt in FORMATS:
            cache_dir = folder / f"cache-{fmt}"
            shutil.rmtree(cache_dir, ignore_errors=True)  # cold means an empty cache folder
            file = folder / f"interactions.{fmt}"
            results = [run_measure(file, folder / "items.json", mode, args.threads, cache_dir) for mode in MODES]
            if source is not None and fmt == "csv":  # the old readers know no Parquet
                results.append({**run_measure(file, folder / "items.json", "no_cache", args.threads, cache_dir,
                                              source), "mode": "baseline"})
            run["measurements"][fmt] = results
            print(json.dumps({"interactions": n, "format": fmt, "results": results}), flush=True)
        run["load_average_after"] = os.getloadavg()
        record["runs"].append(run)
    record["runs"].sort(key=lambda r: r["interactions"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    plot(record, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
