"""semid at catalogue scale, on synthetic data: dedup and collision statistics of n code rows, and an
RQ-KMeans and an RQ-VAE fit + encode of n vectors (docs/semid.md, sections 3 and 4).

    python -m benchmarks.semid_scale --sizes 100000 1000000          # one thread by default
    python -m benchmarks.semid_scale --sizes 1000000 --quantizers rqvae   # one part of one size again
    python -m benchmarks.semid_scale --sizes 10000 --out /tmp/s.json  # a smoke run, kept out of results/

For each size n:
1. dedup: `semid.dedup_codes` and `semid.collision_stats` on n random rows of 3 codes, once with K = 256
   per level (16.7M possible tuples: few collisions) and once with K = 16 (4,096 tuples: every item
   collides, groups of about n / 4,096).
2. rqkmeans: fit and encode n random unit vectors of 384 dimensions (all-MiniLM-L6-v2's width) at
   3 x 256 codes (GRID's default), with the default fit_sample (100,000): from 10^5 items on, the fit
   sees a seeded sample of 10^5 and the encode all n. Random vectors have no clusters, so k-means
   runs all its Lloyd iterations: a worst case for time. Reported beside the seconds: the items the
   fit saw, the k-means backend, collision rate and relative reconstruction error.
3. rqvae: the same vectors through semid's default quantizer, the RQ-VAE, at the same 3 x 256 codes
   and its other defaults (50 epochs over the fit sample, batch 1,024, TIGER's MLP widths).

Writes benchmarks/results/semid_scale.json (or --out) with the machine, thread count and load average;
the sizes and parts measured before and not again are kept. Peak RSS is the process's high-water mark
after each size (it only grows, so it covers every part measured in that process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import semid
import torch
from semid.quantize import reconstruction_error

from benchmarks.machine import machine

RESULTS = Path(__file__).resolve().parent / "results" / "semid_scale.json"
LEVELS, CODEBOOK, DIM = 3, 256, 384  # GRID's 3 x 256; MiniLM's embedding width
QUANTIZERS = ("rqkmeans", "rqvae")


def timed(job):
    start = time.perf_counter()
    result = job()
    return result, time.perf_counter() - start


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def dedup_run(n: int, k: int, seed: int) -> dict:
    codes = torch.randint(0, k, (n, LEVELS), generator=torch.Generator().manual_seed(seed))
    deduped, dedup_s = timed(lambda: semid.dedup_codes(codes))
    stats, stats_s = timed(lambda: semid.collision_stats(codes, [k] * LEVELS))
    return {"codebook_size": k, "dedup_s": dedup_s, "collision_stats_s": stats_s,
            "collision_rate": stats["collision_rate"], "largest_group": int(deduped[:, -1].max()) + 1}


def quantizer_run(kind: str, n: int, seed: int, backend: str) -> dict:
    x = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))
    x = torch.nn.functional.normalize(x, dim=1)
    config = semid.QuantizerConfig(kind=kind, levels=LEVELS, codebook_size=CODEBOOK, seed=seed,
                                   kmeans_backend=backend, device="cpu")
    quantizer, fit_s = timed(lambda: semid.build_quantizer(config).fit(x))
    codes, encode_s = timed(lambda: quantizer.encode(x))
    error = reconstruction_error(quantizer, x, codes)
    stats = semid.collision_stats(codes, [CODEBOOK] * LEVELS)
    settings = {"lloyd_iters": config.lloyd_iters} if kind == "rqkmeans" else \
        {"epochs": config.epochs, "batch_size": config.batch_size, "kmeans_iters": config.kmeans_iters}
    return {"fit_s": fit_s, "encode_s": encode_s, "fit": quantizer.fit_info, **settings,
            "fit_sample": config.fit_sample, "collision_rate": stats["collision_rate"],
            "reconstruction_error": error}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000], help="item counts n")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--backend", choices=["auto", "faiss", "torch"], default="torch",
                    help="rqkmeans k-means backend (default torch, the one every install has)")
    ap.add_argument("--quantizers", nargs="*", choices=QUANTIZERS, default=list(QUANTIZERS),
                    help="quantizers to fit and encode (none: dedup and statistics only)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    old = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {"runs": []}
    runs = {run["items"]: run for run in old["runs"]}
    record = {**old, "benchmark": "semid_scale", "machine": machine(), "cores": os.cpu_count(),
              "semid": semid.__version__, "load_average_at_start": os.getloadavg(), "levels": LEVELS,
              "codebook_size": CODEBOOK, "dim": DIM}
    for n in args.sizes:
        run = runs.setdefault(n, {"items": n})
        run["dedup"] = [dedup_run(n, k, args.seed) for k in (CODEBOOK, 16)]
        for kind in args.quantizers:
            run[kind] = quantizer_run(kind, n, args.seed, args.backend)
        run["peak_rss_mib"] = peak_rss_mib()
        run["load_average_after"] = os.getloadavg()
        print(json.dumps(run), flush=True)
    record["runs"] = sorted(runs.values(), key=lambda run: run["items"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
