"""Where a training step's time goes: hid, sid and h2rec with its parts switched off.

    python -m benchmarks.h2rec_speed [--data ../shared/data] [--dataset beauty] [--steps 60]
                                     [--device auto] [--out benchmarks/results/h2rec_speed]

Times the same 60 bucketed batches of the dataset (batch 256, d = 64, SASRec) for each variant,
three interleaved rounds, and reports the median milliseconds per step and the ratio to `hid`.
Writes OUT.json and OUT.md. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.machine import machine
from benchmarks.shared_data import DATASETS, DEFAULT_DATA, interactions_file
from benchmarks.study.experiments import SemanticIDs
from benchmarks.study.runner import prepare

OUT = Path(__file__).parent / "results"
VARIANTS = {
    "hid (SASRec)": {"model.kind": "hid"},
    "sid": {"model.kind": "sid"},
    "h2rec": {},
    "h2rec without L_MSG": {"train.gamma": 0.0},
    "h2rec without L_CA": {"train.beta": 0.0},
    "h2rec without MCA": {"model.mca": False},
    "h2rec, two branches only": {"train.gamma": 0.0, "train.beta": 0.0, "model.mca": False},
}


def step_timer(overrides: dict, dataset: str, semid_dir: Path, data: Path, device: str, steps: int):
    import h2rec
    from h2rec import assemble, training
    from h2rec.data import training_windows

    config = h2rec.build_config(overrides={"data.interactions": str(interactions_file(dataset, data)),
                                           "data.semid": str(semid_dir), "train.device": device, **overrides},
                                  preset="paper")  # the committed timings are of the paper's BPR objective
    config, sids, ds = assemble.prepare(config)
    gen = assemble.seed_everything(0)
    model = assemble.build_model(config, sids).to(assemble.resolve_device(device)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    matrix = training_windows(ds.train, config.data.max_len, model.causal, config.train.windows,
                              config.train.window_stride).rows
    lengths = (matrix != 0).sum(1)
    batches = training.epoch_batches(lengths, 256, 16, torch.Generator().manual_seed(0))[: steps + 5]
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def run(index) -> None:
        parts = training.training_step(model, matrix[index, : int(lengths[index].max())], config.train, gen)
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
    ap.add_argument("--out", type=Path, default=OUT / "h2rec_speed", help="writes OUT.json and OUT.md")
    args = ap.parse_args()
    semid_dir = prepare(args.dataset, SemanticIDs(), args.data)
    timers = {name: step_timer(o, args.dataset, semid_dir, args.data, args.device, args.steps)
              for name, o in VARIANTS.items()}
    rounds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(3):  # interleaved, so a slow minute of the machine hits every variant
        for name, timer in timers.items():
            rounds[name].append(timer())
    ms = {name: statistics.median(v) for name, v in rounds.items()}
    base = ms["hid (SASRec)"]
    command = " ".join(["python -m benchmarks.h2rec_speed", *sys.argv[1:]])
    lines = [f"# Milliseconds per training step on {args.dataset} (batch 256, d = 64, SASRec backbone)", "",
             f"Machine: {machine()}. Median of 3 interleaved rounds of the same {args.steps} batches. "
             f"Produced by `{command}`.", "",
             "| variant | ms / step | x hid |", "|---|---|---|"]
    lines += [f"| {name} | {v:.1f} | {v / base:.2f} |" for name, v in ms.items()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"dataset": args.dataset, "ms_per_step": ms, "rounds": rounds,
                                                         "machine": machine()}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
