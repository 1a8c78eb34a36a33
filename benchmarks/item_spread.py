"""How far apart a trained model keeps its items' scoring vectors, Head against Tail.

    python -m benchmarks.item_spread RUN [RUN ...] [--out benchmarks/results/item_spread]

For each run folder, the item side of the model's score (``model.item_vectors()``: the vectors whose
inner product with a user's is the score, as ``h2rec export`` writes them) is split into Head (the
top 20% of items by training interactions, ``data.head_share``) and Tail, and two numbers are
reported per group: the mean cosine between two distinct items of the group, and the mean cosine of
an item with the direction of the group's mean. Near 0: the items point every way and full ranking
can tell them apart; near 1: they collapse onto one direction, and a user state that scores one
Tail item high scores the others about as high, so a Tail target is hard to rank above them.
Written to OUT.json and OUT.md with the machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.machine import machine

OUT = Path(__file__).parent / "results" / "item_spread"


def spread(vectors: torch.Tensor) -> dict:
    """Mean pairwise cosine (distinct pairs) and mean cosine to the mean direction of ``vectors`` (m, D)."""
    unit = F.normalize(vectors.double(), dim=1)
    m = len(unit)
    total = unit.sum(0)
    pairwise = (total @ total - m) / (m * m - m)  # sum over all ordered pairs of u_i . u_j, less the diagonal
    to_mean = (unit @ F.normalize(total, dim=0)).mean()
    return {"items": m, "mean_pairwise_cosine": float(pairwise), "mean_cosine_to_mean": float(to_mean)}


def run_spread(folder: Path) -> dict:
    import h2rec

    recommender = h2rec.load(folder, "cpu")
    model, ds = recommender.model, recommender.dataset
    with torch.no_grad():
        vectors = model.item_vectors().float()  # (n, D): items 1..n
    head = torch.from_numpy(np.asarray(ds.head[1 : model.n_items + 1], dtype=bool))  # Dataset.head, (n,)
    return {"run": str(folder), "kind": model.cfg.kind, "head": spread(vectors[head]), "tail": spread(vectors[~head])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="h2rec run folders")
    ap.add_argument("--out", type=Path, default=OUT, help="writes OUT.json and OUT.md")
    args = ap.parse_args()
    rows = [run_spread(folder) for folder in args.runs]
    lines = ["# Spread of the items' scoring vectors, Head against Tail", "",
             f"`python -m benchmarks.item_spread` ({machine()}). Mean cosine between two distinct items of the "
             "group, and of an item with the group's mean direction: near 1, the group has collapsed onto "
             "one direction.", "",
             "| run | kind | Head pairwise | Head to mean | Tail pairwise | Tail to mean | Tail items |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | {r['kind']} | {r['head']['mean_pairwise_cosine']:.3f} | "
                     f"{r['head']['mean_cosine_to_mean']:.3f} | {r['tail']['mean_pairwise_cosine']:.3f} | "
                     f"{r['tail']['mean_cosine_to_mean']:.3f} | {r['tail']['items']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "runs": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
