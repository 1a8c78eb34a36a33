"""Do the semantic IDs depend on torch's CPU thread count? (docs/semid.md, section 3.4)

    python -m benchmarks.semid_threads --dataset beauty --threads 1 2     # 22 min on 2 cores at load 4

For each thread count: embed the dataset's item texts with no cache (the encoder runs at that count)
and fit the study's default quantizer (rqvae 4x128, seed 42), then fit the quantizer once more at
the last count on the embeddings of the first, to tell the encoder's share from the quantizer's.
All of it in up to four modes, each in its own process (MKL fixes its mode at its first call):

- `semid`: as semid runs (a matrix product of few rows gets at most one thread per 8 rows,
  semid.devices.threads_for_rows; on Intel CPUs MKL's strict reproducible mode, MKL_CBWR=AUTO,STRICT);
- `no-row-cap`: the cap replaced by a no-op;
- `mkl-default`: the cap, MKL in its own default mode (MKL_CBWR set empty): semid before the strict
  mode (on AMD CPUs semid leaves MKL's mode alone, so there it is `semid` again);
- `neither`: no cap, MKL's default mode: semid before issue 23 item 5.

Each row: collision rate, reconstruction error, seconds to embed and fit, and against the mode's
first count the largest embedding difference, the rows that differ and the share of items whose code
tuple differs (code numbers are arbitrary labels, so a refit that moves any centroid can relabel
every item; the collision rate says whether the partition of the catalogue changed too).
`against_semid` compares each mode with `semid` count by count: what semid's choices changed in files
made before them.

Results: benchmarks/results/semid_threads_<cpu vendor>.json, with the machine and its load averages
(benchmarks/results/semid_threads.json is the AMD EPYC's run of this script's first version, whose two
modes `capped` and `uncapped` are `semid` and `neither` there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import semid
import semid.devices
import semid.embed
import semid.quantize.base
import semid.quantize.kmeans
import semid.quantize.rqvae
import torch
from safetensors.numpy import load_file
from semid.io import atomic_write_bytes

from benchmarks.machine import machine
from benchmarks.shared_data import DATASETS, REPO, WORK, items_file

RESULTS = REPO / "benchmarks" / "results"
# mode -> (the row cap on, MKL_CBWR for its process: None leaves semid's choice)
MODES = {"semid": (True, None), "no-row-cap": (False, None), "mkl-default": (True, ""), "neither": (False, "")}


def uncap() -> None:
    """No row cap in this process: short products run on every thread."""
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


def run_child(mode: str, dataset: str, threads: list[int]) -> None:
    """One mode, in this process (started by main with the mode's MKL_CBWR): rows.json in its work folder."""
    capped, _ = MODES[mode]
    if not capped:
        uncap()
    work = WORK / "semid-threads" / dataset / mode
    runs = run_mode(dataset, work, threads)
    rows = {"mkl_strict": semid.devices.mkl_strict(), "mkl_cbwr": os.environ.get("MKL_CBWR"),
            "runs": {name: row for name, (row, _) in runs.items()}}
    (work / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="beauty", choices=sorted(DATASETS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    ap.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child, args.dataset, args.threads)
        return
    load_start = os.getloadavg()[0]
    cpu = machine().split(", ", 1)[0]
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(semid.devices.cpu_vendor(), "other")
    result = {"dataset": args.dataset, "quantizer": "rqvae 4x128, seed 42", "reference": f"threads-{args.threads[0]}",
              "machine": f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}", "modes": {}}
    folders = {}
    for mode in args.modes:
        env = dict(os.environ)
        mkl = MODES[mode][1]
        if mkl is not None:
            env["MKL_CBWR"] = mkl
        command = [sys.executable, "-m", "benchmarks.semid_threads", "--child", mode, "--dataset", args.dataset,
                   "--threads", *map(str, args.threads)]
        subprocess.run(command, env=env, check=True)
        work = WORK / "semid-threads" / args.dataset / mode
        result["modes"][mode] = json.loads((work / "rows.json").read_text())
        folders[mode] = {name: work / name for name in result["modes"][mode]["runs"]}
    if "semid" in folders:
        reference = folders["semid"]
        result["against_semid"] = {mode: {name: compare(folder, reference[name]) for name, folder in runs.items()}
                                   for mode, runs in folders.items() if mode != "semid"}
    result["load_average_1min"] = {"start": round(load_start, 1), "end": round(os.getloadavg()[0], 1)}
    out = RESULTS / f"semid_threads_{vendor}.json"
    atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
