"""Do the semantic IDs depend on torch's CPU thread count? (docs/semid.md, section 3.4)

    python -m benchmarks.semid_threads --dataset beauty --threads 1 2     # 22 min on 2 cores at load 4

For each thread count: embed the dataset's item texts with no cache (the encoder runs at that count)
and fit the study's default quantizer (rqvae 4x128, seed 42), then fit the quantizer once more at
the last count on the embeddings of the first, to tell the encoder's share from the quantizer's.
All of it twice: as semid runs (`capped`: a matrix product of few rows gets at most one thread per 8
rows, semid.devices.threads_for_rows), then as it ran before issue 23 item 5 (`uncapped`: the cap
replaced by a no-op in this process).

Each row: collision rate, reconstruction error, seconds to embed and fit, and against the mode's
first count the largest embedding difference, the rows that differ and the share of items whose code
tuple differs (code numbers are arbitrary labels, so a refit that moves any centroid can relabel
every item; the collision rate says whether the partition of the catalogue changed too).
`capped_vs_uncapped` compares the two modes count by count: what the cap changed in files made before.

Results: benchmarks/results/semid_threads.json (with the machine and its load averages).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

import numpy as np
import semid
import semid.embed
import semid.quantize.base
import semid.quantize.kmeans
import semid.quantize.rqvae
import torch
from safetensors.numpy import load_file

from benchmarks.machine import machine
from benchmarks.shared_data import DATASETS, REPO, WORK, items_file

RESULTS = REPO / "benchmarks" / "results" / "semid_threads.json"
MODES = ("capped", "uncapped")


def uncap() -> None:
    """semid as before issue 23 item 5, in this process: short products run on every thread."""
    for module in (semid.embed, semid.quantize.base, semid.quantize.rqvae, semid.quantize.kmeans):
        module.threads_for_rows = lambda rows: contextlib.nullcontext()


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
            "reconstruction_error": stats["reconstruction_error"],
            "embed_s": stats["timings_s"].get("embed"), "fit_s": stats["timings_s"]["fit"]}


def vectors(out: Path) -> np.ndarray:
    return load_file(out / "embeddings.safetensors")["embeddings"]


def codes(out: Path) -> np.ndarray:
    return np.array([json.loads(line)["sid"] for line in (out / "semantic_ids.jsonl").read_text().splitlines()])


def compare(folder: Path, reference: Path) -> dict:
    difference = np.abs(vectors(folder) - vectors(reference))
    return {"max_abs_embedding_difference": float(difference.max()),
            "rows_with_other_embeddings": int((difference > 0).any(axis=1).sum()),
            "items_with_other_codes": float((codes(folder) != codes(reference)).any(axis=1).mean())}


def run_mode(dataset: str, work: Path, threads: list[int]) -> dict[str, tuple[dict, Path]]:
    """{folder name: (row, folder)}: one per thread count, then the refit."""
    runs = {}
    for t in threads:
        folder = work / f"threads-{t}"
        runs[folder.name] = (encode(dataset, folder, t), folder)
    first = work / f"threads-{threads[0]}"
    refit = work / f"refit-{threads[0]}-at-{threads[-1]}"
    runs[refit.name] = (encode(dataset, refit, threads[-1], embeddings=first / "embeddings.safetensors"), refit)
    for row, folder in runs.values():
        row.update(compare(folder, first))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="beauty", choices=sorted(DATASETS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    cpu = machine().split(", ", 1)[0]
    result = {"dataset": args.dataset, "quantizer": "rqvae 4x128, seed 42", "reference": f"threads-{args.threads[0]}",
              "machine": f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}", "modes": {}}
    folders = {}
    for mode in MODES:  # capped first: uncap() cannot be undone in this process
        if mode == "uncapped":
            uncap()
        runs = run_mode(args.dataset, WORK / "semid-threads" / args.dataset / mode, args.threads)
        result["modes"][mode] = {name: row for name, (row, _) in runs.items()}
        folders[mode] = {name: folder for name, (_, folder) in runs.items()}
    result["capped_vs_uncapped"] = {name: compare(folders["capped"][name], folder)
                                    for name, folder in folders["uncapped"].items()}
    result["load_average_1min"] = {"start": round(load_start, 1), "end": round(os.getloadavg()[0], 1)}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
