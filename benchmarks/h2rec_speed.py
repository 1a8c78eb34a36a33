"""Where a training step's time goes: hid, sid and h2rec with its parts switched off.

    python -m benchmarks.h2rec_speed [--data ../shared/data] [--dataset beauty] [--steps 60]
                                     [--device auto] [--threads N] [--baseline COMMIT]
                                     [--preset paper|defaults] [--compile]
                                     [--out benchmarks/results/h2rec_speed]

Times the same 60 bucketed batches of the dataset (batch 256, d = 64, SASRec) for each variant,
three interleaved rounds, and reports the median milliseconds per step and the ratio to `hid`.
``--baseline COMMIT`` also times that commit's h2rec (its packages/h2rec/src, extracted with git
archive and imported under another name) in the same rounds, so a before/after comparison is not
an artefact of the machine's load. Writes OUT.json and OUT.md. Run it on an otherwise idle machine;
on a busy one, ``--threads 1`` keeps the threads of a step from waiting on each other.
``--compile`` adds `hid` and `h2rec` with ``train.compile`` (their blocks through torch.compile; the
warm-up steps pay the compile). ``--preset paper`` (the default, and the committed h2rec_speed.md)
times the paper's objective (BPR, one negative); ``--preset defaults`` times what `h2rec train` runs
without flags (full cross-entropy over the catalogue, dropout 0.5), where the catalogue-wide softmax
is a cost every model shares.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.machine import machine
from benchmarks.shared_data import DATASETS, DEFAULT_DATA, interactions_file
from benchmarks.study.experiments import SemanticIDs
from benchmarks.study.runner import prepare

OUT = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work"
VARIANTS = {
    "hid (SASRec)": {"model.kind": "hid"},
    "sid": {"model.kind": "sid"},
    "h2rec": {},
    "h2rec without L_MSG": {"train.gamma": 0.0},
    "h2rec without L_CA": {"train.beta": 0.0},
    "h2rec without MCA": {"model.mca": False},
    "h2rec, two branches only": {"train.gamma": 0.0, "train.beta": 0.0, "model.mca": False},
}
BASELINE_VARIANTS = ("hid (SASRec)", "h2rec")  # timed again with --baseline's code


def load(average) -> str:
    return ", ".join(f"{x:.1f}" for x in average)


def baseline_package(commit: str):
    """That commit's h2rec package (packages/h2rec/src, extracted once under benchmarks/work/h2rec_speed/),
    imported as ``h2rec_at_<commit>``: its modules import each other relatively, so it lives beside
    the working tree's ``h2rec`` (both use the working tree's semid and srs_backbones)."""
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    target = WORK / "h2rec_speed" / f"h2rec-{sha}"
    if not (target / "packages").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "packages/h2rec/src"], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    source = target / "packages" / "h2rec" / "src" / "h2rec"
    name = f"h2rec_at_{sha}"
    spec = importlib.util.spec_from_file_location(name, source / "__init__.py",
                                                  submodule_search_locations=[str(source)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return sha, package


def step_timer(overrides: dict, dataset: str, semid_dir: Path, data: Path, device: str, steps: int, h2rec=None,
               preset: str | None = "paper", compiled: bool = False):
    """A function that times ``steps`` training steps of the variant, after 5 of warm-up (which, with
    ``compiled``, also compile the blocks as ``train.compile`` does); ``h2rec``: the package to time
    (default: the working tree's)."""
    if h2rec is None:
        import h2rec
    assemble, training = h2rec.assemble, h2rec.training
    training_windows = h2rec.data.training_windows

    config = h2rec.build_config(overrides={"data.interactions": str(interactions_file(dataset, data)),
                                           "data.semid": str(semid_dir), "train.device": device, **overrides},
                                  preset=preset)
    config, sids, ds = assemble.prepare(config)
    gen = assemble.seed_everything(0)
    model = assemble.build_model(config, sids).to(assemble.resolve_device(device)).train()
    if compiled:
        h2rec.compiled.compile_blocks(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    matrix = training_windows(ds.train, config.data.max_len, model.causal, config.train.windows,
                              config.train.window_stride).rows
    lengths = (matrix != 0).sum(1)
    batches = training.epoch_batches(lengths, 256, 16, torch.Generator().manual_seed(0))[: steps + 5]
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def run(index) -> None:
        parts = h2rec.step.training_step(model, matrix[index, : int(lengths[index].max())], config.train, gen)
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        optimizer.step()

    for index in batches[:5]:
        run(index)

    def timed() -> float:
        sync()
        start = time.perf_counter()
        for index in batches[5:]:
            run(index)
        sync()
        return (time.perf_counter() - start) / steps * 1000

    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--dataset", default="beauty", choices=sorted(DATASETS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS), metavar="VARIANT",
                    help="time these variants only (hid is always timed: the ratios are to it)")
    ap.add_argument("--preset", choices=["paper", "defaults"], default="paper",
                    help="paper: BPR with one negative (the committed timings); defaults: h2rec train's defaults")
    ap.add_argument("--baseline", help="also time this commit's h2rec (e.g. HEAD~1) in the same rounds")
    ap.add_argument("--compile", action="store_true",
                    help="also time hid and h2rec with train.compile (torch.compile of the blocks) in the same rounds")
    ap.add_argument("--out", type=Path, default=OUT / "h2rec_speed", help="writes OUT.json and OUT.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()
    semid_dir = prepare(args.dataset, SemanticIDs(), args.data)
    names = [name for name in VARIANTS if not args.only or name in args.only or name == "hid (SASRec)"]
    preset = None if args.preset == "defaults" else args.preset
    timers = {name: step_timer(VARIANTS[name], args.dataset, semid_dir, args.data, args.device, args.steps,
                               preset=preset) for name in names}
    if args.compile:
        for name in [name for name in BASELINE_VARIANTS if name in names]:
            timers[f"{name}, compiled"] = step_timer(VARIANTS[name], args.dataset, semid_dir, args.data, args.device,
                                                     args.steps, preset=preset, compiled=True)
    if args.baseline:
        sha, old = baseline_package(args.baseline)
        for name in [name for name in BASELINE_VARIANTS if name in names]:
            timers[f"{name} at {sha}"] = step_timer(VARIANTS[name], args.dataset, semid_dir, args.data, args.device,
                                                    args.steps, old, preset)
    rounds: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(3):  # interleaved, so a slow minute of the machine hits every variant
        for name, timer in timers.items():
            rounds[name].append(timer())
    ms = {name: statistics.median(v) for name, v in rounds.items()}
    base = ms["hid (SASRec)"]
    command = " ".join(["python -m benchmarks.h2rec_speed", *sys.argv[1:]])
    objective = {"paper": "the paper's objective: BPR, one negative",
                 "defaults": "h2rec train's defaults: full cross-entropy, dropout 0.5"}[args.preset]
    lines = [f"# Milliseconds per training step on {args.dataset} (batch 256, d = 64, SASRec backbone; {objective})",
             "",
             f"Machine: {machine()}. Median of 3 interleaved rounds of the same {args.steps} batches. "
             f"Load average (1, 5, 15 min) {load(load_at_start)} at the start, {load(os.getloadavg())} at the end. "
             f"Produced by `{command}`.", "",
             "| variant | ms / step | x hid |", "|---|---|---|"]
    lines += [f"| {name} | {v:.1f} | {v / base:.2f} |" for name, v in ms.items()]
    if args.baseline and f"h2rec at {sha}" in ms:
        old_h2rec, old_hid, new_h2rec = ms[f"h2rec at {sha}"], ms[f"hid (SASRec) at {sha}"], ms.get("h2rec")
        if new_h2rec is not None:
            lines += ["", f"Before ({sha}) and after, in the same rounds: `h2rec` {old_h2rec:.1f} -> "
                      f"{new_h2rec:.1f} ms per step ({old_h2rec / new_h2rec:.2f}x faster); "
                      f"against each one's own `hid`: {old_h2rec / old_hid:.2f}x -> {new_h2rec / base:.2f}x."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"dataset": args.dataset, "preset": args.preset, "ms_per_step": ms, "rounds": rounds,
              "machine": machine(), "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
              "baseline": args.baseline and sha}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
