"""The validation sweep behind three defaults the paper leaves open (docs/model.md), on Amazon Beauty.

    python -m benchmarks.tune_beauty [--data ../shared/data]

Model selection only: every number here is validation NDCG@10 (full ranking, seed 42, at most 30
epochs, patience 5); test data is not looked at. Writes benchmarks/results/tune_beauty.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.machine import machine
from benchmarks.shared_data import DEFAULT_DATA, WORK, interactions_file
from benchmarks.study.experiments import SemanticIDs
from benchmarks.study.runner import prepare

OUT = Path(__file__).parent / "results"
# every choice spelled out, so the rows stay what they were when the defaults change
VARIANTS = {
    "hid": {"model.kind": "hid", "train.rec_reduction": "mean"},
    "hid, PCA-initialised": {"model.kind": "hid", "model.pca_init": True, "train.rec_reduction": "mean"},
    "h2rec, beta=0, gamma=0": {"train.beta": 0.0, "train.gamma": 0.0, "train.rec_reduction": "mean"},
    "h2rec, mean, tau=0.2": {"train.rec_reduction": "mean", "train.tau": 0.2},
    "h2rec, mean, tau=0.2, beta=gamma=0.1": {"train.rec_reduction": "mean", "train.tau": 0.2,
                                             "train.beta": 0.1, "train.gamma": 0.1},
    "h2rec, mean, tau=0.5": {"train.rec_reduction": "mean", "train.tau": 0.5},
    "h2rec, user_sum, tau=0.2": {"train.rec_reduction": "user_sum", "train.tau": 0.2},
    "h2rec, user_sum, tau=0.5": {"train.rec_reduction": "user_sum", "train.tau": 0.5},
    "h2rec, user_sum, tau=1.0": {"train.rec_reduction": "user_sum", "train.tau": 1.0},
    "hid, dropout=0.5": {"model.kind": "hid", "train.rec_reduction": "user_sum", "model.dropout": 0.5},
    "h2rec, user_sum, tau=1.0, dropout=0.5": {"train.rec_reduction": "user_sum", "train.tau": 1.0,
                                              "model.dropout": 0.5},
}


def main() -> None:
    import h2rec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    semid_dir = prepare("beauty", SemanticIDs(), args.data)
    rows = {}
    for i, (name, overrides) in enumerate(VARIANTS.items()):
        folder = WORK / "tuning" / f"beauty-{i}"
        if not (folder / "results.json").is_file():
            config = h2rec.build_config(overrides={
                "data.interactions": str(interactions_file("beauty", args.data)), "data.semid": str(semid_dir),
                "train.epochs": 30, "train.patience": 5, "train.seed": 42, **overrides},
                preset="paper")  # the sweep ran under the paper's BPR objective, then the default
            h2rec.train(config, folder, resume=(folder / "config.json").is_file())
        res = json.loads((folder / "results.json").read_text())
        rows[name] = {"valid_NDCG@10": res["valid"]["full"]["overall"]["NDCG@10"], "best_epoch": res["best_epoch"]}
    lines = ["# Validation sweep on Amazon Beauty (model selection only)", "",
             f"Machine: {machine()}. Seed 42, full ranking, at most 30 epochs, patience 5. "
             "Produced by `python -m benchmarks.tune_beauty`.", "",
             "| variant | valid NDCG@10 | best epoch |", "|---|---|---|"]
    lines += [f"| {name} | {r['valid_NDCG@10']:.4f} | {r['best_epoch']} |" for name, r in rows.items()]
    OUT.mkdir(exist_ok=True)
    (OUT / "tune_beauty.json").write_text(json.dumps(rows, indent=2) + "\n")
    (OUT / "tune_beauty.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
