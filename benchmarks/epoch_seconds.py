"""Seconds per epoch of study runs, training and evaluation apart, read from their metrics.jsonl.

    python -m benchmarks.epoch_seconds RUN_DIR... [--machine TEXT] [--out FILE.json]

Works on finished runs and on runs cut short (gpu.sh stops its study runs after a time box). The
median skips epoch 1, which pays for warm-up (allocator, kernel choice). A finished run also gets
its best epoch and the minutes of training and validation up to it and in all. --machine defaults
to this machine; give it when the runs were trained elsewhere (a results.json that names its
machine overrides it).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.machine import machine


def summarise(run_dir: Path, default_machine: str) -> dict:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = lines[1:] or lines
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
    out = {
        "epochs": len(lines),
        "train_seconds_median": round(statistics.median(r["train_seconds"] for r in steady), 2),
        "eval_seconds_median": round(statistics.median(r["eval_seconds"] for r in steady), 2),
        "machine": results.get("machine", default_machine),
    }
    if "best_epoch" in results:  # a finished run: how long it took to reach the epoch it keeps
        best = results["best_epoch"]
        out["best_epoch"] = best
        out["minutes_to_best_epoch"] = round(sum(r["train_seconds"] + r["eval_seconds"] for r in lines[:best]) / 60, 1)
        out["minutes_in_all"] = round(sum(r["train_seconds"] + r["eval_seconds"] for r in lines) / 60, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--machine", default=None, help="where the runs were trained (default: here)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    table = {f"{run.parent.parent.name}/{run.parent.name}/{run.name}": summarise(run, args.machine or machine())
             for run in args.runs}
    text = json.dumps(table, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
