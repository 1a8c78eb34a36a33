"""Do the semantic IDs depend on torch's CPU thread count? (docs/semid.md, "Same seed, same codes")

    python -m benchmarks.semid_threads --dataset beauty --threads 1 2     # ~3 min on 2 CPU cores

For each thread count: embed the dataset's item texts with no cache (the encoder runs at that count)
and fit the study's default quantizer (rqvae 4x128, seed 42), then fit the quantizer once more at
the last count on the embeddings of the first, to tell the encoder's share from the quantizer's.
Reports collision rate, reconstruction error, the largest embedding difference to the first count
and the share of items whose code tuple differs from the first count's (code numbers are arbitrary
labels, so a refit that moves any centroid can relabel every item; the collision rate says whether
the partition of the catalogue changed too).

Results: benchmarks/results/semid_threads.json (with the machine it ran on).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import semid
import torch
from safetensors.numpy import load_file

from benchmarks.shared_data import DATASETS, REPO, WORK, items_file

RESULTS = REPO / "benchmarks" / "results" / "semid_threads.json"


def encode(dataset: str, out: Path, threads: int, embeddings: Path | None = None) -> dict:
    torch.set_num_threads(threads)
    semid.encode_catalogue(
        items_file(dataset), out,
        read=semid.ReadConfig(template=DATASETS[dataset].template),
        quantizer=semid.QuantizerConfig(kind="rqvae", levels=4, codebook_size=128),
        embeddings=embeddings, cache_dir=None,
    )
    stats = json.loads((out / "stats.json").read_text())
    return {"threads": threads, "embedded_here": embeddings is None,
            "collision_rate": stats["collisions"]["collision_rate"],
            "reconstruction_error": stats["reconstruction_error"]}


def codes(out: Path) -> np.ndarray:
    return np.array([json.loads(line)["sid"] for line in (out / "semantic_ids.jsonl").read_text().splitlines()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="beauty", choices=sorted(DATASETS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    args = ap.parse_args()
    work = WORK / "semid-threads" / args.dataset
    folders = {t: work / f"threads-{t}" for t in args.threads}
    rows = [encode(args.dataset, folder, t) for t, folder in folders.items()]
    first = folders[args.threads[0]]
    last = args.threads[-1]
    refit = work / f"refit-{args.threads[0]}-at-{last}"
    rows.append(encode(args.dataset, refit, last, embeddings=first / "embeddings.safetensors"))
    reference_vectors = next(iter(load_file(first / "embeddings.safetensors").values()))
    for row, folder in zip(rows, [*folders.values(), refit]):
        vectors = next(iter(load_file(folder / "embeddings.safetensors").values()))
        row["max_abs_embedding_difference"] = float(np.abs(vectors - reference_vectors).max())
        row["items_with_other_codes"] = float((codes(folder) != codes(first)).any(axis=1).mean())
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    result = {"dataset": args.dataset, "quantizer": "rqvae 4x128, seed 42", "reference": f"threads-{args.threads[0]}",
              "machine": f"{cpu}, torch {torch.__version__}", "rows": rows}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
