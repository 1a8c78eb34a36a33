"""Does each quantizer fit the same weights and codes at 1 and 2 torch threads, with and without MKL's
strict mode? (docs/semid.md 3.4; seconds)

    python -m benchmarks.quantizer_threads

Every quantizer (rqvae, rq, pq, vq, rqkmeans; 2 levels of 16 codes, 3 epochs, torch k-means) is fit on
1,029 seeded random unit vectors of 48 dimensions (a last rqvae batch of 5) at 1 and at 2 threads, in
two processes: `semid` (semid's choice of MKL mode: strict on Intel CPUs) and `mkl-default`
(MKL_CBWR set empty). Each row: whether the codes and every weight tensor are equal, and which differ.
Results: benchmarks/results/quantizer_threads_<cpu vendor>.json, with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import semid
import semid.devices
import torch
from semid.io import atomic_write_bytes

from benchmarks.machine import machine
from benchmarks.shared_data import REPO

RESULTS = REPO / "benchmarks" / "results"
KINDS = ("rqvae", "rq", "pq", "vq", "rqkmeans")
MODES = {"semid": None, "mkl-default": ""}  # mode -> MKL_CBWR for its process (None: semid's choice)


def check() -> dict:
    """This process's rows: each quantizer fit at 1 and 2 threads."""
    x = torch.nn.functional.normalize(torch.randn(1029, 48, generator=torch.Generator().manual_seed(5)), dim=-1)
    rows = {}
    for kind in KINDS:
        config = semid.QuantizerConfig(kind=kind, levels=2, codebook_size=16, epochs=3, kmeans_backend="torch")
        fitted = []
        for count in (1, 2):
            torch.set_num_threads(count)
            quantizer = semid.build_quantizer(config).fit(x)
            fitted.append((quantizer.module.state_dict(), quantizer.encode(x)))
        (one, codes_one), (two, codes_two) = fitted
        rows[kind] = {"codes_equal": bool(torch.equal(codes_one, codes_two)),
                      "weights_differing": [name for name in one if not torch.equal(one[name], two[name])],
                      "weights": len(one)}
    return {"mkl_cbwr": os.environ.get("MKL_CBWR"), "mkl_strict": semid.devices.mkl_strict(), "kinds": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    if ap.parse_args().child:
        print(json.dumps(check()))
        return
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(semid.devices.cpu_vendor(), "other")
    result = {"machine": f"{machine().split(', ', 1)[0]}, {os.cpu_count()} cores, torch {torch.__version__}",
              "modes": {}}
    for mode, mkl in MODES.items():
        env = dict(os.environ) if mkl is None else {**os.environ, "MKL_CBWR": mkl}
        child = subprocess.run([sys.executable, "-m", "benchmarks.quantizer_threads", "--child"], env=env,
                               check=True, capture_output=True, text=True)
        result["modes"][mode] = json.loads(child.stdout.splitlines()[-1])
    out = RESULTS / f"quantizer_threads_{vendor}.json"
    atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
