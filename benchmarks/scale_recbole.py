"""The peer of benchmarks/scale.py (issue 22, item 6): RecBole 1.2.1's SASRec on the same synthetic logs.

For each size n, ``scale.generate`` makes (or reuses) the log under benchmarks/work/scale/n{n}/; this
script writes it as a RecBole atomic file (``user_id:token  item_id:token  timestamp:float``, tab
separated; the conversion is not timed) under benchmarks/work/scale/recbole/n{n}/, and runs one fresh
child process of a separate Python that has RecBole (``--python``, default /work/rbvenv/bin/python;
RecBole is a benchmark-only dependency, never one of the project's) with its working directory there,
so that RecBole's log/ and saved/ folders land there too. The child, single-threaded on the CPU,
measures in turn, each with its seconds and peak RSS (``/proc/self/clear_refs`` then VmHWM, as
scale.py measures ours):

- ``load``: ``create_dataset`` + ``data_preparation`` (read the .inter file, remap the ids, sort by
  time, split leave-one-out, build the training sequences and the three data loaders);
- ``train``: one training epoch (``Trainer._train_epoch``, RecBole's own loop);
- ``eval``: one full-ranking evaluation of the validation split (``Trainer.evaluate``), NDCG@10.

The record's ``peak_rss_of_the_process_mib`` (getrusage, read at the end) is not the lifetime peak:
Linux's getrusage reads the same high-water mark that clear_refs lowers, so the table and the plot
take the highest VmHWM of the three parts as the process's peak after its imports.

A part that runs past ``--timeout`` seconds (default 1,800) is recorded as "did not finish", with
how far it got (training steps done, validation batches done) and the load average; so is a child
whose RSS passes ``--max-rss-gib`` (the machine is shared) or that dies. 10^7 is only attempted when
10^6 finished all three parts within ``--attempt-1e7-under`` seconds (default 900); otherwise the
record says it was not attempted and why.

The settings are the closest RecBole has to scale.py's ``hid`` run: SASRec, hidden_size 64, 2 layers,
1 head, inner_size 64 with ReLU (ours: d-wide feed-forward, ReLU), dropout 0.5 on hidden states and
attention (ours: 0.5), Adam at 1e-3, MAX_ITEM_LIST_LENGTH 50, train_batch_size 256,
eval_batch_size 512 (users per evaluation batch, as ours), split leave-one-out by time
(``eval_args: {split: {LS: valid_and_test}, order: TO, mode: full}``), no k-core filter, repeated
pairs kept, one epoch, NDCG@10 over the full catalogue. Differences that remain:

- loss: RecBole's SASRec has only full cross-entropy ('CE') or BPR; ours runs the sampled softmax
  (1,024 shared negatives, logQ). CE scores the whole catalogue at each training target, so its
  cost per step grows with the catalogue (10^4 items at 10^6 interactions, 10^5 at 10^7) where ours
  does not;
- training examples: RecBole makes one sequence per training target (every prefix of a history,
  the last 50 items, loss at its last position only); ours cuts each history into windows of 50
  and takes the loss at every position, so RecBole runs about as many sequences as there are
  training interactions and ours about as many as there are users;
- layer norm: RecBole's SASRec puts it after each residual branch (post-norm), ours where the
  original SASRec does;
- data pipeline: RecBole reads the text file with pandas and builds tensors of every training
  sequence in memory; ours reads CSV or Parquet with pyarrow and keeps ragged histories
  (scale.py's ``ingest``), and has a dataset cache (RecBole's analogue, ``save_dataset``, is off).

Runtime patches in the child, for RecBole 1.2.1 on torch 2.13 and numpy 2.4: ``np.float_``,
``np.complex_`` and ``np.unicode_``, which numpy 2 removed, are set back to ``np.float64``,
``np.complex128`` and ``np.str_`` before RecBole's ``Config`` runs its own ``compatibility_settings``
(which sets ``np.float = np.float_``, ``np.int``, ``np.long``, ... from them and fails without them),
and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
is set (torch >= 2.6 loads weights only by default; nothing is loaded here, as checkpoints go to a
temporary folder that starts empty and saved datasets/data loaders are off).

    OMP_NUM_THREADS=1 python -m benchmarks.scale_recbole --interactions 1e5 1e6 1e7
    python -m benchmarks.scale_recbole --table

Writes benchmarks/results/scale_recbole.json (sizes measured before are kept unless measured again)
and scale_recbole.png: scale.py's plot of our figures with RecBole's overlaid. ``--table`` prints
the side-by-side Markdown table of benchmarks/README.md from the records.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "scale_recbole.json"
WORK = ROOT / "work" / "scale"
PARTS = ("load", "train", "eval")
PYTHON = "/work/rbvenv/bin/python"
DATASET = "scale"

# RecBole's config, the closest to scale.py's `hid` run (see the docstring for what differs)
CONFIG = {
    "model": "SASRec", "MODEL_TYPE": None,  # set by RecBole from the model
    "hidden_size": 64, "n_layers": 2, "n_heads": 1, "inner_size": 64, "hidden_act": "relu",
    "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "layer_norm_eps": 1e-12, "initializer_range": 0.02,
    "loss_type": "CE", "train_neg_sample_args": None,
    "MAX_ITEM_LIST_LENGTH": 50, "train_batch_size": 256, "eval_batch_size": 512,
    "learner": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "epochs": 1,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "metrics": ["NDCG"], "topk": [10], "valid_metric": "NDCG@10",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
    "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)", "rm_dup_inter": None,
    "filter_inter_by_user_or_item": False,
    "use_gpu": False, "device": "cpu", "worker": 0, "nproc": 1, "seed": 0, "reproducibility": True,
    "show_progress": False, "state": "WARNING", "save_dataset": False, "save_dataloaders": False,
    "log_wandb": False, "shuffle": True,
}
CONFIG.pop("MODEL_TYPE")


# ---------------------------------------------------------------------------------------------
# the child: runs under RecBole's Python, imports nothing of this repository but the file itself


def emit(event: dict) -> None:
    print(json.dumps(event), flush=True)


def child(data_path: Path, threads: int, every: int) -> None:
    """Measures load, train and eval in this process, one JSON line per event on stdout."""
    import numpy as np

    from benchmarks.scale import peak_rss_mib, reset_peak, status_mib  # stdlib + numpy at import

    patched = []
    # RecBole's Config.compatibility_settings sets np.float = np.float_ (and np.int, np.long, np.bool, ...):
    # the three of its sources that numpy 2 removed come back as what they named
    for name, kind in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if name not in np.__dict__:
            setattr(np, name, kind)
            patched.append(name)
    import recbole
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    checkpoints = tempfile.mkdtemp(prefix="recbole-ckpt-", dir=".")
    config = Config(model="SASRec", dataset=DATASET,
                    config_dict={**CONFIG, "data_path": str(data_path), "checkpoint_dir": checkpoints})
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(threads)  # in case anything above reset it
    emit({"event": "versions", "recbole": recbole.__version__, "torch": torch.__version__,
          "numpy": np.__version__, "numpy_aliases_patched": patched, "torch_threads": torch.get_num_threads()})

    emit({"event": "start", "part": "load"})
    reset_peak()
    before = status_mib("VmRSS")
    start = time.perf_counter()
    dataset = create_dataset(config)
    rows = len(dataset.inter_feat)  # before data_preparation turns them into one row per target
    train_data, valid_data, _test_data = data_preparation(config, dataset)
    emit({"event": "done", "part": "load", "seconds": time.perf_counter() - start,
          "peak_rss_mib": status_mib("VmHWM"), "rss_before_mib": before, "users": dataset.user_num - 1,
          "items": dataset.item_num - 1, "interactions": rows,
          "training_sequences": len(train_data.dataset), "validation_users": len(valid_data.dataset),
          "training_steps": len(train_data)})

    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    steps = len(train_data)
    done = [0]
    start = [0.0]

    def counted_loss(interaction):
        loss = model.calculate_loss(interaction)
        done[0] += 1
        if done[0] % every == 0:
            emit({"event": "progress", "part": "train", "steps": done[0], "of": steps,
                  "seconds": time.perf_counter() - start[0]})
        return loss

    emit({"event": "start", "part": "train"})
    reset_peak()
    before = status_mib("VmRSS")
    start[0] = time.perf_counter()
    total_loss = trainer._train_epoch(train_data, 0, loss_func=counted_loss, show_progress=False)
    emit({"event": "done", "part": "train", "seconds": time.perf_counter() - start[0], "steps": done[0],
          "mean_loss": total_loss / max(done[0], 1), "peak_rss_mib": status_mib("VmHWM"), "rss_before_mib": before})

    batches = len(valid_data)
    predict = model.full_sort_predict
    seen = [0]

    def counted_predict(interaction):
        scores = predict(interaction)
        seen[0] += 1
        emit({"event": "progress", "part": "eval", "batches": seen[0], "of": batches,
              "seconds": time.perf_counter() - start[0]})
        return scores

    model.full_sort_predict = counted_predict
    emit({"event": "start", "part": "eval"})
    reset_peak()
    before = status_mib("VmRSS")
    start[0] = time.perf_counter()
    result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    emit({"event": "done", "part": "eval", "seconds": time.perf_counter() - start[0], "batches": seen[0],
          "valid_NDCG@10": float(result["ndcg@10"]), "peak_rss_mib": status_mib("VmHWM"), "rss_before_mib": before})
    emit({"event": "end", "peak_rss_of_the_process_mib": peak_rss_mib()})
    shutil.rmtree(checkpoints, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the parent: data, one child per size, timeouts, the record


def write_inter(parquet: Path, folder: Path) -> Path:
    """folder/scale/scale.inter from the generated Parquet log (kept when it already has the rows)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    target = folder / DATASET / f"{DATASET}.inter"
    stamp = target.with_suffix(".rows")
    table = pq.read_table(parquet)
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == str(table.num_rows):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:  # pyarrow quotes header names; RecBole reads them as written
        out.write(b"user_id:token\titem_id:token\ttimestamp:float\n")
        pacsv.write_csv(table, out, pacsv.WriteOptions(delimiter="\t", quoting_style="none", include_header=False))
    stamp.write_text(str(table.num_rows))
    return target


def vm_rss_gib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run_child(folder: Path, python: str, threads: int, timeout: float, max_rss_gib: float, every: int) -> dict:
    """One child for one size; returns {part: result} with "did not finish" entries where it stopped."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONPATH": str(ROOT.parent)}
    log = folder / "child.jsonl"
    err = folder / "child.stderr"
    args = [python, "-m", "benchmarks.scale_recbole", "--child", str(folder), "--threads", str(threads),
            "--progress-every", str(every)]
    with log.open("w") as out, err.open("w") as errf:
        proc = subprocess.Popen(args, cwd=folder, env=env, stdout=out, stderr=errf, start_new_session=True)
    parts: dict = {}
    current, since, progress, stop = None, time.monotonic(), None, None
    peak_seen = 0.0
    versions: dict = {}
    end: dict = {}
    while True:
        rc = proc.poll()
        for line in log.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            kind, part = event.get("event"), event.get("part")
            if kind == "versions":
                versions = event
            elif kind == "start" and part not in parts and part != current:
                current, since, progress = part, time.monotonic(), None
                print(f"  {folder.name}: {part} ...", flush=True)
            elif kind == "progress" and part == current:
                progress = event
            elif kind == "done" and part not in parts:
                parts[part] = {k: v for k, v in event.items() if k not in ("event", "part")}
                parts[part]["load_average_after"] = os.getloadavg()
                print(f"  {folder.name}: {part} {event['seconds']:.1f} s, peak {event['peak_rss_mib']:.0f} MiB",
                      flush=True)
                if part == current:
                    current = None
            elif kind == "end":
                end = event
        if rc is not None:
            break
        peak_seen = max(peak_seen, vm_rss_gib(proc.pid))
        if current is not None and time.monotonic() - since > timeout:
            stop = f"timeout: over {timeout:.0f} s"
        elif vm_rss_gib(proc.pid) > max_rss_gib:
            stop = f"RSS over {max_rss_gib} GiB (a shared machine)"
        if stop:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(1.0)
    if stop is None and proc.returncode:
        stop = f"child exited with {proc.returncode}: " + err.read_text()[-1500:]
    if stop is not None:
        first = True  # the first part without a result is the one that was stopped (or never started)
        for part in PARTS:
            if part in parts:
                continue
            if not first:
                parts[part] = {"finished": False, "reason": "not reached"}
                continue
            first = False
            entry = {"finished": False, "reason": stop, "seconds_when_stopped": time.monotonic() - since,
                     "load_average_when_stopped": os.getloadavg(), "rss_gib_seen_by_the_parent": peak_seen}
            if progress and part == current:
                entry["progress"] = {k: v for k, v in progress.items() if k not in ("event", "part")}
                done_, of = progress.get("steps", progress.get("batches")), progress["of"]
                entry["projected_seconds"] = progress["seconds"] * of / max(done_, 1)
            parts[part] = entry
    for part in PARTS:
        parts.setdefault(part, {"finished": False, "reason": "not reached"})
        parts[part].setdefault("finished", True)
    return {"parts": parts, "versions": {k: v for k, v in versions.items() if k != "event"},
            "peak_rss_of_the_process_mib": end.get("peak_rss_of_the_process_mib")}


def finished_in(run: dict) -> float | None:
    """Seconds of load + train + eval when all three finished, else None."""
    parts = run.get("parts", {})
    if all(parts.get(p, {}).get("finished") for p in PARTS):
        return sum(parts[p]["seconds"] for p in PARTS)
    return None


# ---------------------------------------------------------------------------------------------
# the plot and the table


def merged_ours(scale_json: Path, train_json: Path | None) -> dict:
    """scale.json's record, with the training entries of train_json added where scale.json has none."""
    record = json.loads(scale_json.read_text(encoding="utf-8"))
    if train_json is not None and train_json.is_file():
        extra = {(r["interactions"], r["data"]["items"]): r for r in json.loads(train_json.read_text())["runs"]}
        for run in record["runs"]:
            key = (run["interactions"], run["data"]["items"])
            if not run.get("training") and extra.get(key, {}).get("training"):
                run["training"] = extra[key]["training"]
        have = {(r["interactions"], r["data"]["items"]) for r in record["runs"]}
        record["runs"] += [r for k, r in extra.items() if k not in have]
        record["runs"].sort(key=lambda r: (r["interactions"], r["data"]["items"]))
    return record


def cell(parts: dict, part: str, key: str = "seconds", digits: int = 1) -> str:
    """One RecBole figure of the table, or why there is none."""
    e = parts[part]
    if e.get("finished"):
        return fmt(e[key], digits)
    if key != "seconds":
        return "—"
    why = "did not finish" if e["reason"] != "not reached" else "not reached"
    if "projected_seconds" in e:
        why += f" (~{e['projected_seconds']:,.0f} s projected)"
    return why


def fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def table(ours: dict, peer: dict) -> str:
    """Markdown: per size, ours (hid) against RecBole's SASRec."""
    rows = ["| interactions (items) | | ingest s | ingest peak MiB | epoch s | full evaluation s | "
            "train + evaluate peak MiB | valid NDCG@10 after 1 epoch |", "|---|---|---|---|---|---|---|---|"]
    by_n = {r["interactions"]: r for r in ours["runs"] if r["data"]["items"] == max(r["interactions"] // 100, 1)}

    for n, run in sorted(peer["runs"].items(), key=lambda kv: int(kv[0])):
        n = int(n)
        mine = by_n.get(n, {})
        csv = {m["mode"]: m for m in mine.get("measurements", {}).get("csv", [])}.get("no_cache")
        pq = {m["mode"]: m for m in mine.get("measurements", {}).get("parquet", [])}.get("no_cache")
        hid = next((m for m in mine.get("training", []) if m["model"] == "hid"), None)
        items = run.get("data", {}).get("items", max(n // 100, 1))
        label = f"10^{len(str(n)) - 1} ({items:,})"
        ingest = (f"{fmt(csv['seconds'], 2)} (CSV), {fmt(pq['seconds'], 2)} (Parquet)" if csv and pq else "—")
        ingest_mem = (f"{fmt(csv['peak_rss_mib'], 0)} (CSV), {fmt(pq['peak_rss_mib'], 0)} (Parquet)"
                      if csv and pq else "—")
        if hid:
            rows.append(f"| {label} | h2rec `hid`, sampled softmax | {ingest} | {ingest_mem} | "
                        f"{fmt(hid['train_seconds'])} ({hid['steps']:,} steps) | {fmt(hid['eval_seconds'])} | "
                        f"{fmt(hid['peak_rss_mib'], 0)} | {hid['valid_NDCG@10']:.4f} |")
        else:
            rows.append(f"| {label} | h2rec `hid`, sampled softmax | {ingest} | {ingest_mem} | — | — | — | — |")
        if not run.get("attempted", True):
            rows.append(f"| | RecBole SASRec, CE | not attempted: {run['reason']} | | | | | |")
            continue
        p = run["parts"]

        peak = max((p[q]["peak_rss_mib"] for q in ("train", "eval") if p[q].get("finished")), default=None)
        ndcg = p["eval"].get("valid_NDCG@10")
        steps = f" ({p['load']['training_steps']:,} steps)" if p["load"].get("finished") else ""
        rows.append(f"| | RecBole SASRec, CE | {cell(p, 'load', digits=2)} | {cell(p, 'load', 'peak_rss_mib', 0)} | "
                    f"{cell(p, 'train')}{steps} | {cell(p, 'eval')} | {fmt(peak, 0)} | "
                    f"{'—' if ndcg is None else f'{ndcg:.4f}'} |")
    return "\n".join(rows)


def plot_with_peer(ours: dict, path: Path) -> None:
    """scale.py's plot of our record, which overlays scale_recbole.json when it lies beside path."""
    from benchmarks.scale import plot

    plot(ours, path)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", nargs="+", type=lambda s: int(float(s)), default=[100_000, 1_000_000])
    ap.add_argument("--python", default=PYTHON, help="a Python with RecBole 1.2.1 (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per part before 'did not finish'")
    ap.add_argument("--max-rss-gib", type=float, default=12.0, help="stop a child whose RSS passes this")
    ap.add_argument("--attempt-1e7-under", type=float, default=900.0,
                    help="attempt 10^7 only if 10^6 finished load + train + eval within this many seconds")
    ap.add_argument("--progress-every", type=int, default=100, help="training steps between progress lines")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--table", action="store_true", help="print the side-by-side table from the records")
    ap.add_argument("--plot", action="store_true", help="only redraw the plot from the records")
    ap.add_argument("--ours", type=Path, help="a scale.py record with our training entries (--parts train)")
    ap.add_argument("--scale-json", type=Path, default=ROOT / "results" / "scale.json")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.threads, args.progress_every)
        return
    if args.table or args.plot:
        ours = merged_ours(args.scale_json, args.ours)
        if args.table:
            print(table(ours, json.loads(args.out.read_text(encoding="utf-8"))))
        if args.plot:
            plot_with_peer(ours, args.out.with_suffix(".png"))
        return

    from benchmarks.machine import machine
    from benchmarks.scale import generate

    old = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {"runs": {}}
    record = {**old, "benchmark": "scale_recbole", "machine": machine(), "cores": os.cpu_count(),
              "threads": args.threads, "python": args.python, "load_average_at_start": os.getloadavg(),
              "timeout_seconds_per_part": args.timeout, "max_rss_gib": args.max_rss_gib,
              "config": {k: v for k, v in CONFIG.items()}}
    for n in args.interactions:
        key = str(n)
        if n >= 10_000_000:
            prev = record["runs"].get(str(n // 10))
            took = finished_in(prev) if prev else None
            if took is None or took > args.attempt_1e7_under:
                why = (f"10^{len(str(n // 10)) - 1} did not finish all three parts" if took is None
                       else f"10^{len(str(n // 10)) - 1} took {took:.0f} s for load + epoch + evaluation, over "
                            f"{args.attempt_1e7_under:.0f} s")
                record["runs"][key] = {"interactions": n, "attempted": False, "reason": why}
                print(f"n={n}: not attempted ({why})", flush=True)
                continue
        folder = WORK / f"n{n}"
        data = generate(n, folder, args.seed)
        target = WORK / "recbole" / f"n{n}"
        start = time.perf_counter()
        write_inter(folder / "interactions.parquet", target)
        convert = time.perf_counter() - start
        print(f"n={n}: {target / DATASET} ({convert:.1f} s to convert, not timed)", flush=True)
        load = os.getloadavg()
        result = run_child(target, args.python, args.threads, args.timeout, args.max_rss_gib, args.progress_every)
        record["runs"][key] = {"interactions": n, "data": data, "attempted": True, "load_average_before": load,
                               "load_average_after": os.getloadavg(), "convert_seconds_untimed": convert, **result}
        record["recbole"] = result["versions"].get("recbole", record.get("recbole"))
        record["torch"] = result["versions"].get("torch", record.get("torch"))
        record["numpy"] = result["versions"].get("numpy", record.get("numpy"))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        tmp.replace(args.out)  # after every size, so a later one that stalls loses nothing
    print(f"wrote {args.out}")
    if args.scale_json.is_file():
        plot_with_peer(merged_ours(args.scale_json, args.ours), args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    sys.exit(main())
