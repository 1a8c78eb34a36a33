"""The per-step costs of training that grow with the catalogue, not with the batch (issue 22): the
AdamW step (torch's foreach path against its fused kernel, which h2rec uses since this was measured),
`train.sparse_ids`'s lazy step (fused AdamW on the rest, SparseAdam on the table), the weight average's
update (every row, or with `train.sparse_ids` the table rows read only), and the item table's gradient,
dense and sparse, at growing catalogue sizes.

    OMP_NUM_THREADS=1 python -m benchmarks.optimizer_step [--items 12101 100000 1000000] [--threads 1]

The model is `h2rec train --model hid`'s SASRec (d = 64, 2 blocks, max length 50) with an item table of
n rows; its gradients are random (seeded), as the optimizer sees them. "table gradient" is the backward
of a sampled-softmax step's reads of the table (256 users x 50 positions and 1,024 shared negatives):
dense, a zeroed (n, 64) tensor with those rows added in; sparse (`train.sparse_ids`), the rows alone,
on which SparseAdam steps. A full softmax touches every row anyway.
Rounds alternate foreach and fused so that a change of the machine's load hits both; the median of
the rounds after a warm-up. Writes OUT.json and OUT.md (default benchmarks/results/optimizer_step).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.machine import machine

OUT = Path(__file__).parent / "results" / "optimizer_step"
ROWS_TOUCHED = 256 * 50 + 1024  # a batch's input and target positions plus the shared negatives


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sasrec(n_items: int) -> torch.nn.Module:
    from h2rec.config import ModelConfig
    from h2rec.model import H2Rec

    torch.manual_seed(0)
    model = H2Rec(ModelConfig(kind="hid"), n_items, max_len=50)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return model


def measure(n_items: int, rounds: int) -> dict:
    import torch.nn.functional as F
    from h2rec.optim import LazyTableAverage, make_average

    model = sasrec(n_items)
    params = [p for p in model.parameters() if p.requires_grad]
    table = model.hid.weight
    rest = [p for p in params if p is not table]
    optimizers = {"AdamW step, foreach": torch.optim.AdamW(params, lr=1e-3, foreach=True),
                  "AdamW step, fused": torch.optim.AdamW(params, lr=1e-3, fused=True),
                  # train.sparse_ids: fused AdamW on the rest, SparseAdam on the table's rows read
                  "lazy step (AdamW rest + SparseAdam table)": None}
    rest_adamw = torch.optim.AdamW(rest, lr=1e-3, fused=True)
    sparse_adam = torch.optim.SparseAdam([table], lr=1e-3)
    average = make_average(model, 0.999, warmup=True)
    lazy_average = LazyTableAverage(make_average(model, 0.999, warmup=True), model, 0.999, warmup=True)
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, len(table), (ROWS_TOUCHED,), generator=g)
    row_grads = torch.randn(ROWS_TOUCHED, table.shape[1], generator=g)
    dense_grads = {p: p.grad for p in params}

    def table_gradient(sparse: bool):
        def backward():
            table.grad = None
            F.embedding(rows, table, sparse=sparse).backward(row_grads)
        return backward

    def lazy_step():
        rest_adamw.step()
        sparse_adam.step()

    times: dict[str, list[float]] = {name: [] for name in optimizers}
    times.update({"weight average update": [], "weight average update, lazy table": [],
                  "table gradient, dense": [], "table gradient, sparse": []})
    unique_rows = rows.unique()
    for _ in range(rounds + 1):  # the first round warms up (first steps allocate the moments)
        for p, grad in dense_grads.items():
            p.grad = grad
        for name, opt in optimizers.items():
            if opt is None:
                table_gradient(sparse=True)()  # SparseAdam steps on a sparse gradient
                t = seconds(lazy_step)
            else:
                table.grad = dense_grads[table]
                t = seconds(opt.step)
            times[name].append(t)
        times["weight average update"].append(seconds(lambda: average.update_parameters(model)))
        before = table.detach()[unique_rows].clone()  # what LazyTableAverage.rows_read hands over
        times["weight average update, lazy table"].append(
            seconds(functools.partial(lazy_average.update, model, unique_rows, before)))
        times["table gradient, dense"].append(seconds(table_gradient(sparse=False)))
        times["table gradient, sparse"].append(seconds(table_gradient(sparse=True)))
    return {"items": n_items, "parameters": sum(p.numel() for p in params), "table_parameters": table.numel(),
            "ms": {k: round(1000 * statistics.median(v[1:]), 1) for k, v in times.items()}}


def write(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    names = list(results["sizes"][0]["ms"])
    lines = ["# Per-step costs that grow with the catalogue (SASRec, d = 64)", "",
             f"Machine: {results['machine']}. Load average (1, 5, 15 min) at the start "
             f"{', '.join(f'{x:.1f}' for x in results['load_average_at_start'])}. Median of "
             f"{results['rounds']} rounds, the ways interleaved. Produced by `{results['command']}`. "
             "Per step, the parts that grow with the table: dense = fused AdamW + average + dense gradient "
             "(the default); lazy = `train.sparse_ids`'s step + its average (table rows read only) + sparse "
             "gradient.", "",
             "| items | parameters | " + " | ".join(f"{n} (ms)" for n in names) + " | dense (ms) | lazy (ms) |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for size in results["sizes"]:
        ms = size["ms"]
        dense = ms["AdamW step, fused"] + ms["weight average update"] + ms["table gradient, dense"]
        lazy = (ms["lazy step (AdamW rest + SparseAdam table)"] + ms["weight average update, lazy table"]
                + ms["table gradient, sparse"])
        lines.append(f"| {size['items']:,} | {size['parameters']:,} | "
                     + " | ".join(f"{ms[n]:g}" for n in names) + f" | {dense:.1f} | {lazy:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=float, nargs="+", default=[12101, 1e5, 1e6])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    results = {"benchmark": "optimizer_step", "machine": machine(), "load_average_at_start": load,
               "rounds": args.rounds,
               "command": "python -m benchmarks.optimizer_step --items " + " ".join(f"{int(n)}" for n in args.items)
                          + f" --threads {args.threads} --rounds {args.rounds}",
               "sizes": []}
    for n in args.items:
        results["sizes"].append(measure(int(n), args.rounds))
        print(json.dumps(results["sizes"][-1]), flush=True)
    write(results, args.out)


if __name__ == "__main__":
    main()
