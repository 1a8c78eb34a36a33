"""semid benchmarks on Amazon Beauty (12,101 titles) and Yelp (20,033 name + categories).

    python -m benchmarks.semid_bench            # everything: ~15 min on 2 CPU cores, then the rqkmeans part
    python -m benchmarks.semid_bench --only tables
    python -m benchmarks.semid_bench --only rqkmeans   # alone: adds its table to the existing results

1. stages: `semid encode` on Beauty in a fresh process with an empty cache: time per stage (read,
   embed, fit, encode, from stats.json) and the process's peak RSS (os.wait4).
2. encoder speed: the length-sorted batching of semid.Embedder against a naive loop over the same
   model and tokenizer (file order, each batch padded to its longest text), same batch size.
3. tables: the paper's Table 8 analogue (rqvae at 3x128, 3x256, 3x512, 4x128, 4x256) and Table 6
   analogue (vq, pq, rq, rqvae at 4x128) on both datasets: collision rate, utilisation, per-level
   perplexity, reconstruction error, fit time. Embeddings come from the cache, one embedding per dataset.
4. rqkmeans: residual k-means (semid's fifth quantizer, added after the tables were measured) at the
   Table 8 shapes on both datasets, beside rqvae 4x128 fitted again in the same process, so that the
   two compare on one machine and thread count. `--only rqkmeans` alone merges it into an existing
   semid_bench.json (the other parts are kept; this part names its own machine).

Results: benchmarks/results/semid_bench.json and semid_tables.md (with the machine they ran on).
Item files come from benchmarks/shared_data.py (the shared readers of ../shared/data; written once to
benchmarks/work/<dataset>/items.jsonl, gitignored). Item text: Beauty = title, Yelp = name + categories.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import semid
import torch
from semid import EmbedConfig, QuantizerConfig, ReadConfig
from semid.embed import Embedder, pool

from benchmarks.shared_data import DATASETS, REPO, WORK, items_file

NAMES = ("beauty", "yelp")
RESULTS = REPO / "benchmarks" / "results"
CACHE = WORK / "cache"
TABLE8 = [(3, 128), (3, 256), (3, 512), (4, 128), (4, 256)]
TABLE6 = ["vq", "pq", "rq", "rqvae"]  # at 4x128, plus classic single-codebook vq (1x128) for reference


def machine() -> dict:
    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "semid": semid.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def read_dataset(name: str) -> semid.ItemSet:
    return semid.read_items(items_file(name), ReadConfig(template=DATASETS[name].template))


def stages(name: str) -> dict:
    """`semid encode` in a fresh process, no cache: stage timings and peak RSS of that process."""
    items = items_file(name)
    out = WORK / name / "out-default"
    command = [sys.executable, "-m", "semid.cli", "encode", str(items), "-o", str(out),
               "--template", DATASETS[name].template, "--no-cache", "--quiet"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"semid encode failed: {command}")
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    collisions = stats["collisions"]
    return {
        "items": stats["items"],
        "command": " ".join(["semid", *command[3:]]),
        "timings_s": stats["timings_s"],
        "wall_s": wall,
        # CPU seconds of the process: wall far above cpu / cores means another job shared the cores
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "fit_plus_encode_s": stats["timings_s"]["fit"] + stats["timings_s"]["encode"],
        "collision_rate": collisions["collision_rate"],
        "reconstruction_error": stats["reconstruction_error"],
        "load_average_after": os.getloadavg(),
    }


@torch.inference_mode()
def naive_embed(embedder: Embedder, texts: list[str]) -> torch.Tensor:
    """The baseline: file order, tokenizer pads each batch to its longest text."""
    size, out = embedder.config.batch_size, []
    for start in range(0, len(texts), size):
        batch = embedder.tokenizer(texts[start:start + size], padding=True, truncation=True,
                                   max_length=embedder.config.max_length, return_tensors="pt")
        hidden = embedder.model(**batch).last_hidden_state
        out.append(pool(hidden.float(), batch["attention_mask"], "mean", True))
    return torch.cat(out)


def padded_tokens(lengths: list[int], size: int) -> int:
    return sum(max(lengths[i:i + size]) * len(lengths[i:i + size]) for i in range(0, len(lengths), size))


def encoder_speed(name: str) -> dict:
    texts = read_dataset(name).texts
    embedder = Embedder(EmbedConfig(device="cpu"))
    lengths = [len(r["input_ids"]) for r in embedder.tokenize(texts)]
    start, cpu = time.perf_counter(), time.process_time()
    fast = embedder.embed(texts)
    sorted_s, sorted_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    slow = naive_embed(embedder, texts)
    naive_s, naive_cpu = time.perf_counter() - start, time.process_time() - cpu
    size = embedder.config.batch_size
    return {
        "items": len(texts),
        "batch_size": size,
        "sorted_items_per_s": len(texts) / sorted_s,
        "naive_items_per_s": len(texts) / naive_s,
        "speedup": naive_s / sorted_s,
        "sorted_s": sorted_s,
        "naive_s": naive_s,
        "sorted_cpu_s": sorted_cpu,
        "naive_cpu_s": naive_cpu,
        "real_tokens": sum(lengths),
        "padded_tokens_sorted": padded_tokens(sorted(lengths, reverse=True), size),
        "padded_tokens_naive": padded_tokens(lengths, size),
        "max_abs_difference": float((fast - slow).abs().max()),
        "load_average_after": os.getloadavg(),
    }


def quantizer_row(x: torch.Tensor, config: QuantizerConfig) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    model = semid.build_quantizer(config).fit(x)
    fit_s, fit_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    codes = model.encode(x)
    encode_s = time.perf_counter() - start
    error = semid.relative_error(x, model.decode(codes))
    stats = semid.collision_stats(codes, config.codebook_sizes, reconstruction_error=error)
    return {
        "quantizer": config.kind,
        "setting": f"{config.levels}x{config.codebook_sizes[0]}",
        "fit_s": fit_s,
        "fit_cpu_s": fit_cpu_s,
        "encode_s": encode_s,
        "collision_rate": stats["collision_rate"],
        "colliding_items_share": stats["colliding_items_share"],
        "largest_group": stats["largest_group"],
        "utilisation": stats["utilisation"],
        "perplexity": [round(level["perplexity"], 1) for level in stats["per_level"]],
        "used": [level["used"] for level in stats["per_level"]],
        "distinct_prefixes": stats["distinct_prefixes"],
        "reconstruction_error": error,
    }


def tables(name: str) -> dict:
    texts = read_dataset(name).texts
    x = semid.embed_texts(texts, EmbedConfig(), cache_dir=CACHE, progress=True)  # embedded once, then cached
    table8 = []
    for levels, size in TABLE8:
        table8.append(quantizer_row(x, QuantizerConfig(kind="rqvae", levels=levels, codebook_size=size)))
        print(name, table8[-1], flush=True)
    default = next(row for row in table8 if row["setting"] == "4x128")
    table6 = [quantizer_row(x, QuantizerConfig(kind="vq", levels=1))]
    table6 += [quantizer_row(x, QuantizerConfig(kind=kind)) if kind != "rqvae" else default for kind in TABLE6]
    for row in table6[:-1]:
        print(name, row, flush=True)
    # Items whose text repeats another item's text get the same embedding, hence the same codes:
    # no quantizer can go below this collision rate without --dedup.
    floor = 1 - len(set(texts)) / len(texts)
    return {"items": len(texts), "embedding_dim": int(x.shape[1]), "duplicate_text_collision_floor": floor,
            "table8": table8, "table6": table6, "load_average_after": os.getloadavg()}


def rqkmeans_table(name: str) -> dict:
    """rqkmeans at every Table 8 shape, and the default rqvae again beside it (same process and threads)."""
    x = semid.embed_texts(read_dataset(name).texts, EmbedConfig(), cache_dir=CACHE, progress=True)
    rows = [quantizer_row(x, QuantizerConfig(kind="rqkmeans", levels=levels, codebook_size=size))
            for levels, size in TABLE8]
    rows.append(quantizer_row(x, QuantizerConfig(kind="rqvae")))
    # Does the dimension k-means works in explain the gap? The RQ-VAE quantizes a 32-d latent: the same
    # residual k-means on the embeddings' first 32 principal components (semid's --pca-dim; its
    # reconstruction error is measured back in the embedding space, like every other row's)
    for levels, size in ((4, 128), (3, 256)):
        config = QuantizerConfig(kind="rqkmeans", levels=levels, codebook_size=size, pca_dim=32)
        rows.append({**quantizer_row(x, config), "quantizer": "rqkmeans --pca-dim 32"})
    for row in rows:
        print(name, row, flush=True)
    return {"items": int(x.shape[0]), "rows": rows, "load_average_after": os.getloadavg()}


def percent(share: float) -> str:
    """Three significant digits, never exponent notation (utilisation spans 100 % down to 1e-5 %)."""
    return f"{100 * share:.3g}" if 100 * share >= 1e-4 else f"{100 * share:.1e}"


def machine_line(m: dict) -> str:
    return (f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), torch {m['torch']}, "
            f"Python {m['python']}, semid {m['semid']}.")


def quantizer_table(rows: list[dict]) -> list[str]:
    lines = ["| quantizer | setting | Coll. % | Util. % | perplexity per level | recon. err | fit s |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['quantizer']} | {row['setting']} | {100 * row['collision_rate']:.2f} | "
            f"{percent(row['utilisation'])} | {' / '.join(f'{p:.0f}' for p in row['perplexity'])} | "
            f"{row['reconstruction_error']:.3f} | {row['fit_s']:.1f} |"
        )
    return lines + [""]


def markdown(results: dict) -> str:
    lines = [machine_line(results["machine"]), ""]
    if "stages" in results:
        s = results["stages"]
        t = s["timings_s"]
        lines += ["| stage (Beauty, 12,101 items, fresh process, no cache) | seconds |", "|---|---|",
                  *[f"| {k} | {v:.1f} |" for k, v in t.items()],
                  f"| whole command (incl. imports, model load, writing) | {s['wall_s']:.1f} |",
                  f"| CPU seconds of the whole command | {s['cpu_s']:.1f} |",
                  f"| peak RSS of the process | {s['peak_rss_mib']:.0f} MiB |", ""]
    if "speed" in results:
        v = results["speed"]
        lines += ["| encoder (Beauty) | items/s | padded tokens |", "|---|---|---|",
                  f"| length-sorted batches (semid) | {v['sorted_items_per_s']:.0f} | {v['padded_tokens_sorted']:,} |",
                  f"| naive file-order loop | {v['naive_items_per_s']:.0f} | {v['padded_tokens_naive']:,} |",
                  f"| speed-up | {v['speedup']:.2f}x | real tokens {v['real_tokens']:,} |", ""]
    for name in NAMES:
        if name not in results:
            continue
        r = results[name]
        for key, title in (("table8", "Table 8 analogue (rqvae)"), ("table6", "Table 6 analogue (4x128)")):
            lines += [f"**{name}: {title}, {r['items']:,} items** (duplicate texts alone give a collision rate of "
                      f"{100 * r['duplicate_text_collision_floor']:.2f} %)", ""]
            lines += quantizer_table(r[key])
    if "rqkmeans" in results:
        part = results["rqkmeans"]
        lines += [f"rqkmeans against rqvae, fitted in one process. {machine_line(part['machine'])}", ""]
        for name in NAMES:
            if name in part:
                lines += [f"**{name}: rqkmeans at the Table 8 shapes, rqvae 4x128 beside it, "
                          f"{part[name]['items']:,} items**", ""]
                lines += quantizer_table(part[name]["rows"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["stages", "speed", "tables", "rqkmeans"], action="append")
    parser.add_argument("--render", type=Path, help="only re-render the tables of an existing results json")
    args = parser.parse_args()
    if args.render:
        results = json.loads(args.render.read_text(encoding="utf-8"))
        args.render.with_name(args.render.name.replace("semid_bench", "semid_tables")).with_suffix(".md").write_text(
            markdown(results) + "\n", encoding="utf-8")
        return
    if args.only == ["rqkmeans"]:
        add_rqkmeans()
        return
    parts = args.only or ["stages", "speed", "tables", "rqkmeans"]
    results: dict = {"machine": machine()}
    if "stages" in parts:
        results["stages"] = stages("beauty")
        print("stages", results["stages"], flush=True)
    if "speed" in parts:
        results["speed"] = encoder_speed("beauty")
        print("speed", results["speed"], flush=True)
    if "tables" in parts:
        for name in NAMES:
            results[name] = tables(name)
    if "rqkmeans" in parts:
        results["rqkmeans"] = rqkmeans_part()
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.only is None else "_" + "_".join(parts)
    (RESULTS / f"semid_bench{suffix}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (RESULTS / f"semid_tables{suffix}.md").write_text(markdown(results) + "\n", encoding="utf-8")
    print(markdown(results))


def rqkmeans_part() -> dict:
    return {"machine": machine(), **{name: rqkmeans_table(name) for name in NAMES}}


def add_rqkmeans() -> None:
    """The rqkmeans part, merged into semid_bench.json: the parts measured before are kept as they are."""
    path = RESULTS / "semid_bench.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    results["rqkmeans"] = rqkmeans_part()
    for target, text in ((path, json.dumps(results, indent=2) + "\n"),
                         (RESULTS / "semid_tables.md", markdown(results) + "\n")):
        partial = target.with_suffix(target.suffix + ".tmp")  # a stopped run leaves the old file whole
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
    print(markdown(results))


if __name__ == "__main__":
    main()
