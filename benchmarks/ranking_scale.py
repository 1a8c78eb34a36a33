"""Full-ranking evaluation at catalogue scale (issue 22): seconds and peak memory to rank every item
of a 10^5- or 10^6-item catalogue for a set of users, as `h2rec evaluate` does.

    python -m benchmarks.ranking_scale [--items 1e5 1e6] [--users 2048] [--threads 1]

Four ways to score H2Rec's Eq. 9 against the catalogue, each case in a fresh process (its peak RSS
is its own):

- ``tiles, factorised``: h2rec's path (``evaluate.count_in_catalogue`` as `h2rec evaluate` calls it):
  on the CPU tiles of rows x items small enough to stay in the cache (``softmax.tile_shape``); the SID
  part is u^sid against each level's codebook, summed into items through the sparse item x code
  matrix (``H2Rec.score_range``);
- ``chunked, factorised``: the same scores, eval.item_chunk items by every row of the batch at a time
  (h2rec's path before the tiles, and still its path off the CPU);
- ``chunked, dense``: those chunks, with each item's level embeddings gathered and multiplied with
  u^sid level by level, as a plain implementation would;
- ``one pass, factorised``: the whole catalogue at once (no chunks), where memory allows.

Users are ranked in batches of eval.batch_size (512), histories of 20 random items, h2rec with d = 64,
4 x 256 codes, random weights (ranking cost does not depend on training). Writes
benchmarks/results/ranking_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import machine
from benchmarks.shared_data import REPO

OUT = Path(__file__).parent / "results" / "ranking_scale"
METHODS = ("tiles, factorised", "chunked, factorised", "chunked, dense", "one pass, factorised")
LEVELS, CODEBOOK, DIM, HISTORY, BATCH, CHUNK = 4, 256, 64, 20, 512, 65536


def build(n_items: int):
    from h2rec.config import ModelConfig
    from h2rec.model import H2Rec
    from semid.code_embedding import CodeEmbedding

    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, CODEBOOK, (n_items, LEVELS), generator=g)
    embedding = CodeEmbedding(codes, [CODEBOOK] * LEVELS, [None] * LEVELS, dim=DIM, combine="levels",
                              padding_idx0=True, init_std=0.02)
    return H2Rec(ModelConfig(kind="h2rec", dim=DIM), n_items, 50, embedding).eval()


def dense_counts(model, state, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """The ``chunked, dense`` baseline: per chunk, gather every item's level embeddings and score them."""
    w = model.candidate_weights(state)  # (B, L)

    def dense_scores(items: torch.Tensor, pattern: str) -> torch.Tensor:
        levels = model.codes(items)  # the items' level embeddings (..., L, d)
        hid = model.hid(items)
        if pattern == "pairs":  # (B,) items, one per user
            return torch.einsum("bl,bd,bld->b", w, state.u_sid, levels) + (state.u_hid * hid).sum(1)
        return torch.einsum("bl,bd,cld->bc", w, state.u_sid, levels) + state.u_hid @ hid.T

    target_score = dense_scores(targets[:, 0], "pairs")[:, None]
    count = torch.zeros(len(targets), dtype=torch.long)
    for start in range(0, model.n_items + 1, chunk):
        count += (dense_scores(torch.arange(start, min(start + chunk, model.n_items + 1)), "all")
                  >= target_score).sum(1)
    return count


def run_case(n_items: int, users: int, method: str, threads: int) -> dict:
    from h2rec.evaluate import count_in_catalogue, next_item_states

    torch.set_num_threads(threads)
    model = build(n_items)
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, n_items + 1, HISTORY) for _ in range(users)]
    targets = torch.as_tensor(rng.integers(1, n_items + 1, users))[:, None]
    chunk = n_items + 1 if method.startswith("one pass") else CHUNK
    # scores per tile: None = h2rec's cache-sized tiles; otherwise every row of the batch by `chunk` items
    tile_elements = None if method.startswith("tiles") else BATCH * chunk
    start = time.perf_counter()
    with torch.no_grad():
        for b in range(0, users, BATCH):
            state = next_item_states(model, histories[b : b + BATCH], 50)
            if method == "chunked, dense":
                dense_counts(model, state, targets[b : b + BATCH], chunk)
            else:
                count_in_catalogue(model, state, targets[b : b + BATCH], histories[b : b + BATCH], chunk,
                                   tile_elements)
    seconds = time.perf_counter() - start
    return {"items": n_items, "users": users, "method": method, "seconds": round(seconds, 2),
            "users_per_second": round(users / seconds, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", nargs="+", type=float, default=[1e5, 1e6])
    ap.add_argument("--users", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--_case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._case:  # the child process of one case
        case = json.loads(args._case)
        print(json.dumps(run_case(case["items"], case["users"], case["method"], case["threads"])))
        return
    rows = []
    for n in (int(x) for x in args.items):
        for method in args.methods:
            case = json.dumps({"items": n, "users": args.users, "method": method, "threads": args.threads})
            done = subprocess.run([sys.executable, "-m", "benchmarks.ranking_scale", "--_case", case], cwd=REPO,
                                  capture_output=True, text=True)
            if done.returncode:
                row = {"items": n, "users": args.users, "method": method, "failed": done.stderr.strip()[-300:]}
            else:
                row = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    torch.set_num_threads(args.threads)
    result = {"machine": machine(), "levels": LEVELS, "codebook": CODEBOOK, "dim": DIM, "batch": BATCH,
              "item_chunk": CHUNK, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Full ranking at catalogue scale ({machine()})", "",
             f"`python -m benchmarks.ranking_scale`: H2Rec (d = {DIM}, {LEVELS} x {CODEBOOK} codes), "
             f"{args.users} users in batches of {BATCH}, each case in its own process.", "",
             "| items | method | seconds | users / s | peak RSS (MiB) |", "|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['items']:,} | {r['method']} | failed | | |")
        else:
            lines.append(f"| {r['items']:,} | {r['method']} | {r['seconds']} | {r['users_per_second']} "
                         f"| {r['peak_rss_mib']:,} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
