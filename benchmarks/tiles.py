"""What tiling the (positions x items) score matrix buys on a CPU (h2rec.softmax, h2rec.evaluate):
the training softmax's forward and backward, full-ranking evaluation's counting and ``recommend``'s
top 10, with and without tiles, at two catalogue sizes.

    OMP_NUM_THREADS=1 python -m benchmarks.tiles [--threads 1] [--items 12101 100000] [--out PATH]

Random inputs, d = 64, seeded: 1,500 positions for the softmax (a Beauty batch of 256 users has about
that many targets); 512 users, each with 8 seen items left out, for evaluation. Three ways for the
softmax: the plain autograd expression (logsumexp of the (P, n) scores), the tiled Function with one
tile of every row by ``item_chunk`` items (as on a GPU), and its CPU tiles (softmax.tile_shape); two
for evaluation and for the top 10 (one tile of every row, CPU tiles), whose results must agree.
Median of 5 after a warm-up. Run it on an otherwise idle machine. Writes OUT.json and OUT.md
(default benchmarks/results/tiles).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import machine

OUT = Path(__file__).parent / "results" / "tiles"
ONE_TILE = 10**15  # tile_elements that put every row in one tile


def median_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 1)


def softmax_cases(n: int, positions: int = 1500, dim: int = 64) -> dict[str, float]:
    from h2rec import softmax
    from h2rec.softmax import ScoreFactor, softmax_cross_entropy

    g = torch.Generator().manual_seed(0)
    u = torch.randn(positions, dim, generator=g).requires_grad_()
    e = torch.randn(n, dim, generator=g).requires_grad_()
    targets = torch.randint(0, n, (positions,), generator=g)

    def plain():
        scores = u @ e.T
        (torch.logsumexp(scores, 1) - scores.gather(1, targets[:, None])[:, 0]).mean().backward()

    def tiled(tile_elements):
        def step():
            target_scores = (u * e[targets]).sum(1)
            softmax_cross_entropy([ScoreFactor(u, e)], n, target_scores, tile_elements=tile_elements).mean().backward()
        return step

    out = {"plain autograd": median_ms(plain), "one tile": median_ms(tiled(ONE_TILE)),
           "CPU tiles": median_ms(tiled(None))}
    # the tile's width in items (softmax.CPU_TILE_ITEMS), rows making 2^19 scores: why 16,384
    width = softmax.CPU_TILE_ITEMS
    try:
        for items in (8192, 65536):
            softmax.CPU_TILE_ITEMS = items
            out[f"CPU tiles {items} items wide"] = median_ms(tiled(None))
    finally:
        softmax.CPU_TILE_ITEMS = width
    return out


def evaluation_cases(n: int, users: int = 512, dim: int = 64) -> dict[str, dict[str, float]]:
    """Full-ranking evaluation's counting and the top 10 of ``recommend``, with and without CPU tiles."""
    from h2rec.config import ModelConfig
    from h2rec.evaluate import count_in_catalogue, top_items
    from h2rec.model import H2Rec, UserState

    torch.manual_seed(0)
    model = H2Rec(ModelConfig(kind="hid", dim=dim), n, 50).eval()
    g = torch.Generator().manual_seed(1)
    state = UserState(u_sid=None, u_hid=torch.randn(users, dim, generator=g), alpha=None)
    targets = torch.randint(1, n + 1, (users, 1), generator=g)
    histories = [np.random.default_rng(i).integers(1, n + 1, 8) for i in range(users)]
    ways = (("one tile", ONE_TILE), ("CPU tiles", None))
    with torch.no_grad():
        counts = {name: count_in_catalogue(model, state, targets, histories, 65536, te) for name, te in ways}
        if not torch.equal(counts["one tile"], counts["CPU tiles"]):
            raise SystemExit("the tiled evaluation counts differ from the untiled ones")
        tops = {name: top_items(model, histories, 50, 10, tile_elements=te)[0] for name, te in ways}
        if not torch.equal(tops["one tile"], tops["CPU tiles"]):
            raise SystemExit("the tiled top 10 differ from the untiled ones")
        return {"evaluation_ms_512_users": {
                    name: median_ms(lambda te=te: count_in_catalogue(model, state, targets, histories, 65536, te))
                    for name, te in ways},
                "top10_ms_512_users": {name: median_ms(lambda te=te: top_items(model, histories, 50, 10,
                                                                               tile_elements=te))
                                       for name, te in ways}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--items", type=int, nargs="+", default=[12101, 100000])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {"benchmark": "tiles", "machine": machine(), "threads": args.threads,
               "load_average_at_start": list(__import__("os").getloadavg()), "sizes": {}}
    for n in args.items:
        results["sizes"][n] = {"softmax_ms_forward_backward_1500_positions": softmax_cases(n), **evaluation_cases(n)}
        print(n, json.dumps(results["sizes"][n]), flush=True)
    lines = [f"# Tiles of the score matrix on a CPU ({results['machine']}, {args.threads} threads)", "",
             "`python -m benchmarks.tiles`: d = 64, random inputs; median ms of 5. Softmax: forward and backward "
             "of the full cross-entropy, 1,500 positions. Evaluation: counting each of 512 users' target rank "
             "over the catalogue, 8 seen items each left out. Top 10: `recommend`'s top 10 items of each of the "
             "512 users (encoder included, the same for both; both ways give the same counts and top 10s).", "",
             "| items | softmax: plain autograd | softmax: one tile | softmax: CPU tiles | evaluation: one tile "
             "| evaluation: CPU tiles | top 10: one tile | top 10: CPU tiles |", "|---|---|---|---|---|---|---|---|"]
    for n, r in results["sizes"].items():
        s, e, t = (r["softmax_ms_forward_backward_1500_positions"], r["evaluation_ms_512_users"],
                   r["top10_ms_512_users"])
        lines.append(f"| {n:,} | {s['plain autograd']} | {s['one tile']} | {s['CPU tiles']} | {e['one tile']} "
                     f"| {e['CPU tiles']} | {t['one tile']} | {t['CPU tiles']} |")
    lines += ["", "The softmax in CPU tiles of other widths (rows making 2^19 scores; the default is "
              "16,384 items):", "", "| items | 8,192 items wide | 16,384 | 65,536 |", "|---|---|---|---|"]
    for n, r in results["sizes"].items():
        s = r["softmax_ms_forward_backward_1500_positions"]
        lines.append(f"| {n:,} | {s['CPU tiles 8192 items wide']} | {s['CPU tiles']} | "
                     f"{s['CPU tiles 65536 items wide']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
