"""hid (SASRec), sid and h2rec on Amazon Beauty: full ranking, seed 42, against published anchors.

    python -m benchmarks.h2rec_beauty [--data ../shared/data] [--device auto]

The three runs are the seed-42 Beauty runs of `benchmarks.study table2` (same folders, so neither script
trains them twice). Writes benchmarks/results/h2rec_beauty.json and .md: test Overall / Head /
Tail HR@10 and NDCG@10, epochs, seconds per training epoch and peak memory of each run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.shared_data import DEFAULT_DATA
from benchmarks.study.experiments import table2
from benchmarks.study.runner import execute

OUT = Path(__file__).parent / "results"
MODELS = ("SASRec (hid)", "SID only (sid)", "H2Rec")
# Full-ranking, leave-one-out NDCG@10 on this exact Beauty split, as published.
ANCHORS = {"SASRec, BPR/BCE (TIGER paper, Rajput et al. 2023)": 0.0318,
           "TIGER (Rajput et al. 2023)": 0.0384,
           "SASRec, full cross-entropy (Klenitskiy & Vasilev, RecSys 2023)": 0.0327}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    rows = {}
    for run in table2(["beauty"], [42]):
        if run.name in MODELS:
            rows[run.name] = execute(run, args.data, args.device)

    table = ["| model | Overall HR@10 | Overall NDCG@10 | Head HR@10 | Head NDCG@10 | Tail HR@10 | Tail NDCG@10 "
             "| best / run epochs | s per epoch | peak RSS MB |", "|---" * 10 + "|"]
    summary = {}
    for name, res in rows.items():
        test = res["test"]["full"]
        cells = [test[g][m] for g in ("overall", "head", "tail") for m in ("HR@10", "NDCG@10")]
        by_group = {g: {m: test[g][m] for m in ("HR@10", "NDCG@10")} for g in ("overall", "head", "tail")}
        summary[name] = {"test_full": by_group,
                         "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"],
                         "seconds_per_epoch": res["seconds_per_epoch"], "peak_rss_mb": res["peak_rss_mb"],
                         "machine": res.get("machine")}
        cost = f"{res['best_epoch']} / {res['epochs_run']} | {res['seconds_per_epoch']} | {res['peak_rss_mb']}"
        table.append(f"| {name} | " + " | ".join(f"{c:.4f}" for c in cells) + f" | {cost} |")
    ratio = summary["H2Rec"]["seconds_per_epoch"] / summary["SASRec (hid)"]["seconds_per_epoch"]
    machine = next(iter(summary.values()))["machine"]
    lines = ["# hid / sid / h2rec on Amazon Beauty (full ranking, leave-one-out, seed 42)", "",
             f"Machine: {machine}. Produced by `python -m benchmarks.h2rec_beauty`.", "", *table, "",
             f"h2rec seconds per epoch / hid seconds per epoch: {ratio:.2f}", "",
             "Published anchors (overall NDCG@10, full ranking, same split; whether they rank the user's seen "
             "items was not checked, while the runs above do: reference points, not a like-for-like "
             "comparison. The like-for-like one is benchmarks/results/accuracy.md):", ""]
    lines += [f"- {k}: {v}" for k, v in ANCHORS.items()]
    OUT.mkdir(exist_ok=True)
    (OUT / "h2rec_beauty.json").write_text(json.dumps({"runs": summary, "anchors": ANCHORS,
                                                        "h2rec_over_hid_seconds": ratio}, indent=2) + "\n")
    (OUT / "h2rec_beauty.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
