"""`python -m benchmarks.study <command>`: see the package docstring (benchmarks/study/__init__.py)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from benchmarks.shared_data import DATASETS, DEFAULT_DATA
from benchmarks.study import __doc__ as USAGE
from benchmarks.study.experiments import DEFAULT_DATASETS, EXPERIMENTS, SemanticIDs
from benchmarks.study.runner import archive_finished, execute, lock_held, prepare, train_job


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.study", description=USAGE,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["prepare", *EXPERIMENTS, "report"])
    ap.add_argument("--datasets", nargs="+", choices=sorted(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and whether they are done")
    ap.add_argument("--rows", nargs="+", metavar="NAME",
                    help="only these rows of the table, in this order, e.g. H2Rec 'SASRec (hid)'")
    if len(sys.argv) == 3 and sys.argv[1] == "_train":  # the child process of execute()
        train_job(json.loads(sys.argv[2]))
        return
    args = ap.parse_args()
    # SIGTERM (kill, timeout) then interrupts subprocess.run, which kills the training child: a worker
    # stopped this way leaves no orphan training on (SIGKILL still does, and the child keeps the lock)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    if args.command == "report":
        from benchmarks.study.report import write_report  # scipy and matplotlib: only the report needs them

        archive_finished()  # a run trained but not yet archived (its worker was stopped in between)
        write_report()
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
        # in the order given (a stable sort keeps datasets and seeds in the table's order within a row)
        runs = sorted((run for run in runs if run.name in args.rows), key=lambda run: args.rows.index(run.name))
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
