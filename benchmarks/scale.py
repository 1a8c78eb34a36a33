"""h2rec at scale (issue 22, items 1 and 6), on synthetic logs. Two parts, each a fresh process per
measurement:

- ``ingest``: seconds and peak memory of reading a file and splitting it leave-one-out
  (``h2rec.data.build_dataset``), CSV and Parquet, without the dataset cache, with it cold (first run:
  read, split, write the entry) and warm (second run);
- ``train``: one training epoch and one full-ranking evaluation of every validation user, as ``h2rec
  train`` runs them (SASRec ``hid`` and ``h2rec``; d = 64, max length 50, batch 256, every training
  target, the sampled softmax with 1,024 shared negatives and logQ at every size so that sizes compare),
  on a semid folder of 3 x 256 RQ codes of random vectors (semid's own cost is semid_scale.py's).

    OMP_NUM_THREADS=1 python -m benchmarks.scale --interactions 1e5 1e6 1e7 2e7             # ingest
    OMP_NUM_THREADS=1 python -m benchmarks.scale --interactions 1e5 1e6 1e7 --parts train   # epoch + evaluation
    OMP_NUM_THREADS=1 python -m benchmarks.scale --interactions 1e7 --items 1e6 --parts ingest train
    python -m benchmarks.scale --interactions 1e5 --baseline COMMIT       # also the readers of COMMIT

The log of n interactions has n / 10 users (mean history 10) and n / 100 items (2 x 10^5 at 2 x 10^7)
unless ``--items`` says otherwise: item popularity is Zipf-like (weight 1 / rank), user activity
long-tailed (1 / rank^0.6), rows in time order (a log, users interleaved), times with an average gap
of 30 s so that some tie, and repeated (user, item) pairs as the popularity draws give them. Ids are
strings ("u0012345") numbered in random order. Files go to benchmarks/work/scale/ (gitignored); a
folder already holding the log of the same size and seed is reused.

Besides wall seconds, each measurement keeps the CPU seconds of its process (``time.process_time``:
one thread, so the work done), which other jobs on a shared machine inflate far less than the wall
clock: the growth with size (``slopes``, printed at the end and kept in the record) is read from them.

Each ingest measurement imports h2rec (numpy, torch, pyarrow), lowers its peak RSS to its RSS
(``/proc/self/clear_refs``, Linux), then builds the dataset: the record keeps the RSS before and the
peak during the build (VmHWM), so the difference is the build's own memory, and getrusage's peak
(which the reset lowers too on Linux, so it is the same peak, not the imports' transient one); a
training measurement keeps the same three around
``h2rec.train``. ``--baseline COMMIT`` extracts that commit's h2rec (git archive) and measures its
readers the same way (no cache there). The file is read once before its format's measurements, so
every one starts with it in the OS page cache: disk speed is not measured, and CSV and Parquet start
alike (at 2 x 10^7, a Parquet measurement that followed the CSV ones from a cold page cache once took
65 s against CSV's 35 s; from the page cache Parquet takes 20-30 s, CSV 33 s). Writes benchmarks/results/scale.json
(or --out; parts and sizes measured before are kept unless measured again) and a log-log plot of
seconds and memory against size, scale.png, beside it.
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


def generate(n: int, folder: Path, seed: int = 0, n_items: int | None = None) -> dict:
    """Writes interactions.csv, interactions.parquet and items.json (the catalogue, in index order), and
    data.json (what this returns): a folder that holds them for the same arguments is kept as it is."""
    n_items = n_items or max(n // 100, 1)
    stamp = folder / "data.json"
    if stamp.is_file():
        data = json.loads(stamp.read_text(encoding="utf-8"))
        if data.get("arguments") == [n, seed, n_items]:
            return data["data"]
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users = max(n // 10, 1)
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
    data = {"interactions": n, "users": int(len(np.unique(users))), "items": n_items,
            "items_interacted": int(len(np.unique(items))),
            "repeated_pairs": int(n - len(np.unique(users.astype(np.int64) * n_items + items))),
            "tied_times": int(n - len(np.unique(times))),
            "bytes": {fmt: (folder / f"interactions.{fmt}").stat().st_size for fmt in FORMATS}}
    stamp.write_text(json.dumps({"arguments": [n, seed, n_items], "data": data}), encoding="utf-8")
    return data


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
    start, cpu = time.perf_counter(), time.process_time()
    ds = build_dataset(DataConfig(**fields), item_ids)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu, "peak_rss_mib": status_mib("VmHWM"),
            "rss_before_mib": before,
            "peak_rss_of_the_process_mib": peak_rss_mib(), "users": len(ds.user_ids),
            "users_evaluated": len(ds.valid), "code": h2rec.data.__file__}


def semid_folder(folder: Path, n_items: int, seed: int) -> Path:
    """A semid folder over the generated catalogue: 3 x 256 RQ codes of random 32-d vectors (the cost of
    real text embeddings and codes is semid's, measured by benchmarks/semid_scale.py, not here)."""
    import semid

    out = folder / "semid"
    if (out / "stats.json").is_file():
        return out
    rng = np.random.default_rng(seed)
    np.save(folder / "emb.npy", rng.standard_normal((n_items, 32), dtype=np.float32))
    ids = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    (folder / "ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    codebook = min(256, n_items // 4)  # small logs (tests of this script) have few items
    semid.encode_catalogue(None, out, embeddings=folder / "emb.npy", ids=folder / "ids.txt", cache_dir=None,
                           quantizer=semid.QuantizerConfig(kind="rq", levels=3, codebook_size=codebook))
    return out


class FirstEpochDone(Exception):
    """Raised from ``on_epoch`` to end a measured run after its first epoch (h2rec.train lets it through)."""


def stop_after_first_epoch(record: dict) -> None:
    raise FirstEpochDone


def measure_training(folder: Path, kind: str, threads: int) -> dict:
    """One training epoch and one full-ranking evaluation of the validation users, as ``h2rec train``
    runs them: d = 64, max length 50, batch 256, every training target (sliding windows), the sampled
    softmax (1,024 negatives shared by the batch, logQ) at every size so that the sizes compare, and
    the dataset read through a warm cache (``--train`` warms it first)."""
    import h2rec
    import torch

    torch.set_num_threads(threads)
    config = h2rec.build_config(overrides={
        "data.interactions": str(folder / "interactions.parquet"), "data.semid": str(folder / "semid"),
        "model.kind": kind, "train.loss": "sampled_softmax", "train.epochs": 1, "train.device": "cpu",
        "train.seed": 0})
    run = folder / f"run-{kind}"
    shutil.rmtree(run, ignore_errors=True)
    reset_peak()
    before = status_mib("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    try:  # stop after the first epoch's evaluation: the final re-evaluation of the best weights would
        # repeat it (at 10^7 interactions a full evaluation costs more than the epoch)
        # the bars go to the parent's stderr: at 10^7 interactions this child runs for hours
        h2rec.train(config, run, progress=True, test=False, on_epoch=stop_after_first_epoch)
    except FirstEpochDone:
        pass
    seconds = time.perf_counter() - start
    epoch = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    return {"model": kind, "seconds_total": seconds, "cpu_seconds_total": time.process_time() - cpu,
            "train_seconds": epoch["train_seconds"],
            "eval_seconds": epoch["eval_seconds"], "steps": epoch["step"],
            "valid_NDCG@10": epoch["valid_NDCG@10"], "peak_rss_mib": status_mib("VmHWM"),
            "rss_before_mib": before, "peak_rss_of_the_process_mib": peak_rss_mib()}


def run_child(args: list[str], threads: int, cache_dir: Path, source: Path | None = None) -> dict:
    """Runs ``python -m benchmarks.scale ARGS`` in a fresh process; its last stdout line is the result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "H2REC_CACHE_DIR": str(cache_dir)}
    if source is not None:  # another commit's h2rec first on the path
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-m", "benchmarks.scale", *args, "--threads", str(threads)]
    # stderr (progress bars, logs, a traceback) passes through; stdout's last line is the result
    done = subprocess.run(args, env=env, cwd=ROOT.parent, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"measurement failed ({' '.join(args)}; its stderr is above)")
    return json.loads(done.stdout.strip().splitlines()[-1])


def into_page_cache(file: Path) -> None:
    with file.open("rb") as f:
        while f.read(1 << 24):
            pass


def run_measure(file: Path, items_file: Path, mode: str, threads: int, cache_dir: Path,
                source: Path | None = None) -> dict:
    args = ["--measure", str(file), "--items-file", str(items_file)] + (["--use-cache"] if mode != "no_cache" else [])
    return {"mode": mode, **run_child(args, threads, cache_dir, source)}


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


def plot_peer(file: Path, ingest, training, memory) -> dict | None:
    """Overlays RecBole's SASRec (benchmarks/scale_recbole.py's record, when file exists) in black: load +
    split seconds on the ingest panel, epoch and evaluation seconds (a part that did not finish at its
    projected time, hollow), and memory as ours is drawn (load: peak above the RSS before; train +
    evaluate: the process peak)."""
    if not file.is_file():
        return None
    peer = json.loads(file.read_text(encoding="utf-8"))
    runs = sorted((run for run in peer["runs"].values() if run.get("attempted", True)),
                  key=lambda run: run["interactions"])

    def draw(axis, part: str, value, style: str, marker: str, label: str) -> None:
        done = [(run["interactions"], value(run["parts"][part])) for run in runs if run["parts"][part]["finished"]]
        if done:
            axis.plot(*zip(*done), style, color="black", marker=marker, label=label)
        if part == "load":
            return
        projected = [(run["interactions"], run["parts"][part]["projected_seconds"]) for run in runs
                     if "projected_seconds" in run["parts"][part]]
        if projected and axis is training:
            axis.plot(*zip(*projected), "none", color="black", marker=marker, markerfacecolor="none",
                      label=f"{label}, did not finish: projected")

    draw(ingest, "load", lambda m: m["seconds"], "-", "x", "RecBole: load + split (.inter)")
    draw(memory, "load", lambda m: m["peak_rss_mib"] - m["rss_before_mib"], "-", "x", "RecBole: load + split")
    draw(training, "train", lambda m: m["seconds"], "-", "^", "RecBole SASRec (CE): one epoch")
    draw(training, "eval", lambda m: m["seconds"], ":", "v", "RecBole SASRec: full evaluation")
    # the highest VmHWM of its parts (each reset before): getrusage's peak is lowered by the reset too
    peaks = [(run["interactions"], max(run["parts"][p]["peak_rss_mib"] for p in ("load", "train", "eval")))
             for run in runs if all(run["parts"][p]["finished"] for p in ("load", "train", "eval"))]
    if peaks:
        memory.plot(*zip(*peaks), ":", color="black", marker="v",
                    label="RecBole: load + train + evaluate, process peak")
    return peer


def slopes(record: dict) -> list[dict]:
    """The issue's linearity check: for each reading without the cache, d log(seconds) / d log(interactions)
    between consecutive sizes of the default catalogue (n / 100 items), and fitted over all of them (``fit``),
    from wall and from CPU seconds (the second where the sizes have it). 1.0 is linear; the target is at
    most 1.1."""
    default = [run for run in record["runs"] if run["data"]["items"] == max(run["interactions"] // 100, 1)]
    found = []
    for fmt in FORMATS:
        points = [(run["interactions"], m) for run in default for m in run["measurements"].get(fmt, [])
                  if m["mode"] == "no_cache"]
        for (n1, a), (n2, b) in zip(points, points[1:]):
            found.append({"part": f"read {fmt}", "from": n1, "to": n2, "wall": _slope(n1, a, n2, b, "seconds"),
                          "cpu": _slope(n1, a, n2, b, "cpu_seconds")})
        if len(points) > 2:  # the straight line through all sizes: the plot's slope
            found.append({"part": f"read {fmt}", "from": points[0][0], "to": points[-1][0], "fit": True,
                          "wall": _fit(points, "seconds"), "cpu": _fit(points, "cpu_seconds")})
    return found


def _fit(points: list[tuple[int, dict]], key: str) -> float | None:
    """Least-squares slope of log(seconds) on log(interactions) over every size that has ``key``."""
    kept = [(n, m[key]) for n, m in points if key in m]
    if len(kept) < 2:
        return None
    x, y = np.log([n for n, _ in kept]), np.log([v for _, v in kept])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def _slope(n1: int, a: dict, n2: int, b: dict, key: str) -> float | None:
    if key not in a or key not in b:
        return None
    return round(float(np.log(b[key] / a[key]) / np.log(n2 / n1)), 3)


def plot(record: dict, path: Path) -> None:
    """Log-log: read + split seconds, epoch and evaluation seconds, and peak memory, against interactions;
    with RecBole's SASRec overlaid when scale_recbole.json lies beside path (``plot_peer``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ingest, training, memory) = plt.subplots(1, 3, figsize=(15, 4.2))
    default = [run for run in record["runs"] if run["data"]["items"] == max(run["interactions"] // 100, 1)]
    for fmt in FORMATS:
        for mode in (*MODES, "baseline"):
            points = [(run["interactions"], m) for run in default for m in run["measurements"].get(fmt, [])
                      if m["mode"] == mode]
            if not points:
                continue
            x = [n for n, _ in points]
            style = {"csv": "-", "parquet": "--"}[fmt]
            label = f"read {fmt}, {mode.replace('_', ' ')}"
            ingest.plot(x, [m["seconds"] for _, m in points], style, marker="o", label=label)
            memory.plot(x, [m["peak_rss_mib"] - m["rss_before_mib"] for _, m in points], style, marker="o",
                        label=label)
    kinds = sorted({m["model"] for run in default for m in run.get("training", [])})
    for kind in kinds:
        points = [(run["interactions"], m) for run in default for m in run.get("training", []) if m["model"] == kind]
        x = [n for n, _ in points]
        training.plot(x, [m["train_seconds"] for _, m in points], "-", marker="o", label=f"{kind}: one epoch")
        training.plot(x, [m["eval_seconds"] for _, m in points], ":", marker="s", label=f"{kind}: full evaluation")
        memory.plot(x, [m["peak_rss_of_the_process_mib"] for _, m in points], ":", marker="s",
                    label=f"{kind}: train + evaluate, process peak")
    peer = plot_peer(path.with_name("scale_recbole.json"), ingest, training, memory)
    for axis, ylabel in ((ingest, "read + split seconds"), (training, "seconds"),
                         (memory, "MiB (read: peak above the RSS before)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("interactions (items = interactions / 100)")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7)
    machines = sorted({m.get("machine", record["machine"]) for run in default for part in
                       [*run["measurements"].values(), run.get("training", [])] for m in part})
    title = f"h2rec at scale ({record['threads']} thread; {' and '.join(machines)})"
    if peer:
        title += f"; black: RecBole {peer.get('recbole')} SASRec, CE ({peer['threads']} thread; {peer['machine']})"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", nargs="+", type=lambda s: int(float(s)), default=[100_000, 1_000_000],
                    help="sizes n of the generated logs, e.g. 1e5 1e6 1e7")
    ap.add_argument("--items", type=lambda s: int(float(s)), help="catalogue size (default n / 100), e.g. 1e6")
    ap.add_argument("--parts", nargs="+", choices=("ingest", "train"), default=["ingest"],
                    help="ingest: read + split; train: one epoch and one full evaluation (sizes measured "
                         "before keep the parts not measured again)")
    ap.add_argument("--models", nargs="+", default=["hid", "h2rec"], help="train: model kinds")
    ap.add_argument("--threads", type=int, default=1, help="torch and pyarrow threads (default 1)")
    ap.add_argument("--baseline", help="also measure the readers of this git commit (no cache), e.g. HEAD~1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one measurement (a child process)
    ap.add_argument("--measure-training", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--items-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--use-cache", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.items_file, args.use_cache, args.threads)))
        return
    if args.measure_training:
        print(json.dumps(measure_training(args.measure_training, args.kind, args.threads)))
        return

    old = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {"runs": []}
    runs = {(run["interactions"], run["data"]["items"]): run for run in old["runs"]}
    record = {**old, "benchmark": "scale", "machine": machine(), "cores": os.cpu_count(), "threads": args.threads,
              "load_average_at_start": os.getloadavg(), "baseline": args.baseline or old.get("baseline")}
    source = baseline_source(args.baseline) if args.baseline else None
    for n in args.interactions:
        n_items = args.items or max(n // 100, 1)
        folder = WORK / (f"n{n}" if args.items is None else f"n{n}-items{n_items}")
        data = generate(n, folder, args.seed, n_items)
        run = runs.setdefault((n, n_items), {"interactions": n, "data": data, "measurements": {}})
        run["data"] = data
        if "ingest" in args.parts:
            for fmt in FORMATS:
                cache_dir = folder / f"cache-{fmt}"
                shutil.rmtree(cache_dir, ignore_errors=True)  # cold means an empty cache folder
                file = folder / f"interactions.{fmt}"
                into_page_cache(file)
                # each measurement names its machine and load: a file refreshed a size at a time mixes machines
                here = {"machine": machine(), "load_average_at_start": os.getloadavg()}
                results = [{**here, **run_measure(file, folder / "items.json", mode, args.threads, cache_dir)}
                           for mode in MODES]
                if source is not None and fmt == "csv":  # the old readers know no Parquet
                    results.append({**here, **run_measure(file, folder / "items.json", "no_cache", args.threads,
                                                          cache_dir, source), "mode": "baseline"})
                else:  # a baseline measured before stays, until --baseline measures it again
                    results += [m for m in run["measurements"].get(fmt, []) if m["mode"] == "baseline"]
                run["measurements"][fmt] = results
                print(json.dumps({"interactions": n, "format": fmt, "results": results}), flush=True)
        if "train" in args.parts:
            semid_folder(folder, n_items, args.seed)
            cache_dir = folder / "cache-train"  # warmed by the first model's run, not timed apart
            kept = [m for m in run.get("training", []) if m["model"] not in args.models]  # other models' runs stay
            run["training"] = kept + [{"machine": machine(), "load_average_at_start": os.getloadavg(),
                                       **run_child(["--measure-training", str(folder), "--kind", kind], args.threads,
                                                   cache_dir)} for kind in args.models]
            print(json.dumps({"interactions": n, "items": n_items, "training": run["training"]}), flush=True)
        run["load_average_after"] = os.getloadavg()
    record["runs"] = sorted(runs.values(), key=lambda r: (r["interactions"], r["data"]["items"]))
    record["slopes"] = slopes(record)
    for row in record["slopes"]:
        what = "fitted slope" if row.get("fit") else "slope"
        print(f"{row['part']}, {row['from']:.0e} -> {row['to']:.0e} interactions: {what} {row['wall']} (wall), "
              f"{row['cpu']} (CPU)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    plot(record, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
