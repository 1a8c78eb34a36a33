"""semid's embedding in shards (issue 23, items 1-2): speed and peak memory before and after, and a
run killed half way, then resumed.

    python -m benchmarks.semid_stream                                 # 20,000 synthetic titles
    python -m benchmarks.semid_stream --items 2000 --out /tmp/s.json  # a smoke run, kept out of results/

Every run is a fresh process (DRIVER below) embedding the same generated catalogue (short product
titles, seeded) with the bundled all-MiniLM-L6-v2, one torch thread, no cache, through
`semid.pipeline.embed_to_folder` (what `semid embed` runs); it reports the seconds of that call. The
parent samples the child's /proc/PID/status every 0.1 s for the peak of RssAnon (heap: what the
chunking bounds; the memory-mapped matrix is file-backed, RssFile, which the OS may drop) and takes
ru_maxrss (every resident page) from wait4.

1. before: semid as committed at --base (default HEAD), from `git archive`, first on PYTHONPATH;
2. after: this working tree, default chunk size (50,000: the catalogue is one shard);
3. after, --chunk N (default 2,000: 10 shards);
4. run 3 again, SIGKILLed once half its embedding time has passed, then rerun: the shards reused,
   the items embedded twice, and whether the files equal run 3's byte for byte.

Writes benchmarks/results/semid_stream.json (or --out) with the machine and load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "semid_stream.json"

# Runs in the child: prints "ready" once imports are done, then one JSON line with the embedding seconds.
DRIVER = """
import dataclasses, json, sys, time
import torch
torch.set_num_threads(1)
import semid
from semid.pipeline import embed_to_folder
items, out, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
options = dict(device="cpu")
if "chunk_size" in {f.name for f in dataclasses.fields(semid.EmbedConfig)}:
    options["chunk_size"] = chunk
config = semid.EmbedConfig(**options)
print("ready", flush=True)
start = time.perf_counter()
catalogue = embed_to_folder(items, out, read=semid.ReadConfig(template="{title}"), embed=config, cache_dir=None)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": int(catalogue.embeddings.shape[0]),
                  "shards": catalogue.info.get("embedding_shards")}), flush=True)
"""

BRANDS = ["Olay", "Nivea", "L'Oreal Paris", "Neutrogena", "Maybelline", "Revlon", "Dove", "Clinique", "OPI",
          "Burt's Bees", "CeraVe", "Garnier", "Aveeno", "Essie", "NYX", "Cetaphil"]
KINDS = ["moisturizing cream", "nail polish", "shampoo", "conditioner", "lipstick", "mascara", "eye shadow palette",
         "sunscreen lotion", "face wash", "body butter", "hair oil", "night serum", "lip balm", "foundation"]
WORDS = ["hydrating", "matte", "glossy", "fragrance free", "sensitive skin", "long lasting", "waterproof", "vitamin C",
         "with shea butter", "SPF 30", "travel size", "for dry hair", "anti-aging", "organic", "pack of 2", "deep red",
         "nude", "coral", "1.7 oz", "8 fl oz", "with argan oil", "volumizing", "gentle", "daily"]


def catalogue(path: Path, n: int, seed: int = 0) -> None:
    """n product titles of 4 to 14 words (Beauty's titles are about that long)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            extra = rng.sample(WORDS, rng.randint(1, 5))
            title = f"{rng.choice(BRANDS)} {rng.choice(KINDS)}, " + ", ".join(extra)
            handle.write(json.dumps({"id": f"S{i:07d}", "title": title}) + "\n")


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(items: Path, out: Path, chunk: int, pythonpath: str | None = None, kill_after_s: float | None = None) -> dict:
    """One DRIVER process; with kill_after_s, SIGKILLed that long after it said "ready"."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    errors = open(out.parent / f"{out.name}.stderr", "w")  # noqa: SIM115 (closed below, after the child)
    child = subprocess.Popen([sys.executable, "-c", DRIVER, str(items), str(out), str(chunk)], env=env,
                             stdout=subprocess.PIPE, stderr=errors, text=True)
    if child.stdout.readline().strip() != "ready":
        child.wait()
        errors.close()
        raise RuntimeError((out.parent / f"{out.name}.stderr").read_text())
    ready = time.perf_counter()
    peak_anon, killed = 0, False
    while True:  # wait4, not Popen.poll: it reaps the child and keeps its resource usage
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, _status_kib(child.pid, "RssAnon"))
        if kill_after_s is not None and not killed and time.perf_counter() - ready >= kill_after_s:
            os.kill(child.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.1)
    child.returncode = os.waitstatus_to_exitcode(status)
    if not killed and child.returncode != 0:
        errors.close()
        raise RuntimeError((out.parent / f"{out.name}.stderr").read_text())
    record = {"wall_s": time.perf_counter() - ready, "peak_rss_mib": usage.ru_maxrss / 1024,
              "peak_anon_mib": peak_anon / 1024, "killed": killed}
    if not killed:
        record.update(json.loads(child.stdout.read().strip().splitlines()[-1]))
    child.stdout.close()
    errors.close()
    return record


def add_rates(runs: dict, items: int, chunk: int) -> None:
    """items_per_s of each finished run, over the items it embedded (a resumed run skips reused shards,
    which in one process are the first ones)."""
    for record in runs.values():
        if "seconds" in record:
            reused = (record.get("shards") or {}).get("reused", 0)
            record["items_embedded"] = items - reused * chunk
            record["items_per_s"] = record["items_embedded"] / record["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=2_000, help="chunk size of runs 3 and 4")
    parser.add_argument("--base", default="HEAD", help="the commit whose semid is 'before'")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="semid-stream-") as tmp:
        tmp = Path(tmp)
        items = tmp / "items.jsonl"
        catalogue(items, args.items)
        before_src = tmp / "before"
        before_src.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "packages/semid/src"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before_src)], input=archive, check=True)
        load = {"start": os.getloadavg()}
        runs = {
            "before": run(items, tmp / "before-out", args.chunk, str(before_src / "packages/semid/src")),
            "after_default_chunk": run(items, tmp / "after-out", 50_000),
            "after_chunked": run(items, tmp / "chunked-out", args.chunk),
        }
        half = runs["after_chunked"]["seconds"] / 2
        killed = run(items, tmp / "killed-out", args.chunk, kill_after_s=half)
        shards_on_disk = len(list((tmp / "killed-out/.embed-work").glob("shard-*.safetensors")))
        resumed = run(items, tmp / "killed-out", args.chunk)
        embedded_before_kill = args.items * half / runs["after_chunked"]["seconds"]  # at run 3's speed
        runs["killed_at_half"] = {**killed, "shards_on_disk": shards_on_disk}
        runs["resumed"] = resumed
        load["end"] = os.getloadavg()
        same = {name: (tmp / "killed-out" / name).read_bytes() == (tmp / "chunked-out" / name).read_bytes()
                for name in ("embeddings.safetensors", "texts.jsonl")}
        before_equals_after = (tmp / "before-out/embeddings.safetensors").read_bytes() == \
            (tmp / "after-out/embeddings.safetensors").read_bytes()
    add_rates(runs, args.items, args.chunk)
    report = {
        "machine": machine(), "threads": 1, "items": args.items, "chunk": args.chunk, "base": args.base,
        "load_average": load, "runs": runs,
        "resume": {"shards_reused": resumed["shards"]["reused"], "shards": resumed["shards"]["shards"],
                   "items_embedded_again_est": max(0.0, embedded_before_kill - shards_on_disk * args.chunk),
                   "files_equal_uninterrupted": same},
        "before_and_after_default_chunk_byte_equal": before_equals_after,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
