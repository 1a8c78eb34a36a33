"""Codes that know about behaviour (issue 23 item 4): text-only against text + collaborative Semantic IDs.

    python -m benchmarks.collab_codes codes    # Beauty: text codes, the SASRec run, its export, collab codes
    python -m benchmarks.collab_codes train    # SID-only and H2Rec on each code set, seed 42, test read once
    python -m benchmarks.collab_codes report   # benchmarks/results/collab_codes.md from the records
    python -m benchmarks.collab_codes all      # codes, train, report
    python -m benchmarks.collab_codes smoke    # the code building alone, on a generated catalogue (seconds)

The steps, on Beauty (leave-one-out; every run has h2rec's defaults and seed 42):

1. text embeddings: the study's `semid encode` folder (MiniLM, item text = title; benchmarks.study.runner.prepare);
2. text codes: rqvae 4 x 128, seed 42, fit on those embeddings (`--embeddings`);
3. a `hid` run (SASRec) on the same split. Its training sees only training interactions (each user's
   last two items are held out for validation and test), so the vectors below hold no test item;
4. `h2rec export` of that run; the item vectors of items with at least one training interaction are
   kept (an item without one still has its random initial row, which is noise, not behaviour: it is
   left out and becomes a cold item, zeros in the collaborative part);
5. collab codes: the same embeddings, quantizer and seed, with `--collab` (weight 1.0, the default);
6. SID-only and H2Rec trained on each code set (the hid run itself is reported as the reference);
   no setting is chosen among these rows, so each run's test split is read once, right after it trains.

Steps 1-5 are what `semid encode --collab` does for a user; the collision rate, per-level perplexity
and coverage of both code sets go to benchmarks/results/collab_codes/codes.json. Runs go to
benchmarks/work/collab_codes/ (gitignored) and resume when interrupted; each finished run writes
benchmarks/results/collab_codes/records/<row>-s42.json (committed), and a run with a record is not
trained again. Two single-thread workers can share `train` (each run holds a lock while it trains):

    OMP_NUM_THREADS=1 nohup python -m benchmarks.collab_codes all > w1.log 2>&1 &
    OMP_NUM_THREADS=1 nohup python -m benchmarks.collab_codes train > w2.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.accuracy import write_record
from benchmarks.machine import machine
from benchmarks.shared_data import DEFAULT_DATA, WORK, interactions_file
from benchmarks.study.experiments import SemanticIDs
from benchmarks.study.runner import PREPARE_THREADS, prepare, run_lock

RESULTS = Path(__file__).parent / "results"
RECORDS = RESULTS / "collab_codes" / "records"
CODES_RECORD = RESULTS / "collab_codes" / "codes.json"
ROOT = WORK / "collab_codes"
DATASET = "beauty"
SEED = 42
SIDS = SemanticIDs()  # rqvae 4 x 128: the study's (and the paper's) default codes
WEIGHT = 1.0  # semid's default --collab-weight: meaning and behaviour weighed alike
CODE_SETS = {"text": "text only", "collab": "text + collaborative (SASRec IDs)"}

# row -> (model.kind, code set); the hid row is the source of the collaborative vectors
ROWS = {
    "SASRec (hid): the vectors' source": ("hid", "text"),
    "SID-only, text codes": ("sid", "text"),
    "SID-only, text + collaborative codes": ("sid", "collab"),
    "H2Rec, text codes": ("h2rec", "text"),
    "H2Rec, text + collaborative codes": ("h2rec", "collab"),
}
SOURCE_ROW = "SASRec (hid): the vectors' source"


@dataclass(frozen=True)
class Run:
    row: str

    @property
    def kind(self) -> str:
        return ROWS[self.row][0]

    @property
    def codes(self) -> str:
        return ROWS[self.row][1]

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-." else "_" for c in self.row).strip("_") + f"-s{SEED}"

    @property
    def folder(self) -> Path:
        return ROOT / "runs" / self.slug

    @property
    def record(self) -> Path:
        return RECORDS / f"{self.slug}.json"


# ----------------------------------------------------------------------------- codes
def quantizer():
    import semid

    return semid.QuantizerConfig(kind=SIDS.quantizer, levels=SIDS.levels, codebook_size=SIDS.codebook, seed=SEED)


def build_codes(text_embeddings: Path, out: Path, config, collab: Path | None = None, weight: float = WEIGHT) -> dict:
    """`semid encode --embeddings TEXT [--collab DIR]` into `out` (once); returns its stats.json."""
    import semid

    if not (out / "stats.json").is_file():
        # the study's thread count: the quantizer's float sums, hence the codes, depend on it
        threads = torch.get_num_threads()
        torch.set_num_threads(PREPARE_THREADS)
        try:
            semid.encode_catalogue(None, out, embeddings=text_embeddings, quantizer=config,
                                   collab=semid.CollabConfig(collab, weight=weight) if collab else None)
        finally:
            torch.set_num_threads(threads)
    return json.loads((out / "stats.json").read_text())


def code_summary(stats: dict) -> dict:
    """What codes.json and the report keep of a stats.json."""
    collisions = stats["collisions"]
    return {"items": stats["items"], "collision_rate": collisions["collision_rate"],
            "colliding_items_share": collisions["colliding_items_share"],
            "largest_group": collisions["largest_group"],
            "perplexity_per_level": [level["perplexity"] for level in collisions["per_level"]],
            "used_per_level": [level["used"] for level in collisions["per_level"]],
            "reconstruction_error": stats["reconstruction_error"], "collab": stats.get("collab"),
            "fit_seconds": stats["timings_s"]["fit"]}


def text_codes(data: Path) -> Path:
    """Steps 1-2: the study's embeddings, quantized alone."""
    embeddings = prepare(DATASET, SIDS, data) / "embeddings.safetensors"
    out = ROOT / "codes" / "text"
    build_codes(embeddings, out, quantizer())
    return out


def warm_vectors(run_folder: Path, device: str) -> Path:
    """Step 4: `h2rec export` of the hid run, then its rows of items with >= 1 training interaction."""
    import h2rec

    export = ROOT / "hid-export"
    warm = ROOT / "hid-vectors-trained-items"
    if (warm / "item_ids.json").is_file():
        return warm
    recommender = h2rec.load(run_folder, device)
    if not (export / "manifest.json").is_file():
        recommender.export(export, overwrite=True)
    ids = json.loads((export / "item_ids.json").read_text())
    vectors = np.load(export / "item_vectors.npy")
    trained = recommender.dataset.popularity[1:] > 0  # item index i -> row i - 1, as in the export
    warm.mkdir(parents=True, exist_ok=True)
    np.save(warm / "item_vectors.npy", vectors[trained])
    (warm / "manifest.json").write_text((export / "manifest.json").read_text())  # the layout: ["hid"]
    tmp = warm / "item_ids.json.tmp"  # written last: its presence says the folder is whole
    tmp.write_text(json.dumps([item for item, keep in zip(ids, trained) if keep]))
    tmp.replace(warm / "item_ids.json")
    print(f"[collab_codes] {int(trained.sum())} of {len(ids)} items have a training interaction -> {warm}",
          flush=True)
    return warm


def make_codes(data: Path, device: str) -> dict[str, Path]:
    """Steps 1-5; records both code sets' statistics in codes.json."""
    folders = {"text": text_codes(data)}
    source = Run(SOURCE_ROW)
    execute(source, folders, data, device)
    if not source.record.is_file():
        raise SystemExit(f"[collab_codes] {source.row} is being trained by another worker; run `codes` again later")
    embeddings = prepare(DATASET, SIDS, data) / "embeddings.safetensors"
    folders["collab"] = ROOT / "codes" / "collab"
    stats = {"text": build_codes(embeddings, folders["text"], quantizer()),
             "collab": build_codes(embeddings, folders["collab"], quantizer(), warm_vectors(source.folder, device))}
    write_record(CODES_RECORD, {"dataset": DATASET, "quantizer": stats["text"]["quantizer"], "weight": WEIGHT,
                              "machine": machine(), "threads": PREPARE_THREADS,
                              "codes": {name: code_summary(s) for name, s in stats.items()}})
    return folders


def code_folders() -> dict[str, Path]:
    return {name: ROOT / "codes" / name for name in CODE_SETS}


# ----------------------------------------------------------------------------- runs
def execute(run: Run, folders: dict[str, Path], data: Path, device: str) -> None:
    """Trains the run and reads its test split once (no choice is made among these rows), unless it has a
    record or another worker has it."""
    if run.record.is_file():
        return
    with run_lock(run.folder) as lock:
        if lock is None:
            print(f"[collab_codes] {run.row}: another worker has it", flush=True)
            return
        import h2rec

        # selected with seen items ranked, as the recorded rows were (the default now leaves them out on Beauty)
        overrides = {"model.kind": run.kind, "data.interactions": str(interactions_file(DATASET, data)),
                     "data.semid": str(folders[run.codes]), "train.seed": SEED, "train.device": device,
                     "eval.exclude_history": False}
        config = h2rec.build_config(overrides=overrides)
        resume = (run.folder / "config.json").is_file()
        print(f"[collab_codes] {run.row}" + (" (resuming)" if resume else ""), flush=True)
        start = time.perf_counter()
        results = h2rec.train(config, run.folder, resume=resume, progress=False, test=True)
        epochs = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
        write_record(run.record, {
            **results, "row": run.row, "codes": run.codes, "semid": str(folders[run.codes]),
            "config": config.to_dict(), "machine": machine(),
            "wall_seconds_last_sitting": round(time.perf_counter() - start, 1),
            "hours": round(sum(e["train_seconds"] + e.get("eval_seconds", 0) for e in epochs) / 3600, 4)})


def train(data: Path, device: str) -> None:
    folders = code_folders()
    missing = [name for name, folder in folders.items() if not (folder / "stats.json").is_file()]
    if missing:
        raise SystemExit(f"[collab_codes] no {', '.join(missing)} codes yet: run `python -m benchmarks.collab_codes "
                         "codes` first")
    for row in ROWS:
        execute(Run(row), folders, data, device)


# ----------------------------------------------------------------------------- report
def codes_table(codes: dict[str, dict], codebook: int = SIDS.codebook, labels: dict[str, str] = CODE_SETS) -> list[str]:
    lines = [f"| codes | Coll. % | items in a collision % | perplexity per level (of {codebook}) | items with a "
             "collaborative vector | quantizer input | recon. err | fit s |", "|---|---|---|---|---|---|---|---|"]
    for name, c in codes.items():
        collab = c.get("collab")
        coverage = f"{collab['covered_items']:,} ({100 * collab['coverage']:.1f} %)" if collab else "-"
        width = f"{collab['quantizer_input_dim']} dims" if collab else "text"
        lines.append(f"| {labels.get(name, name)} | {100 * c['collision_rate']:.2f} "
                     f"| {100 * c['colliding_items_share']:.2f} "
                     f"| {' / '.join(f'{p:.0f}' for p in c['perplexity_per_level'])} | {coverage} | {width} "
                     f"| {c['reconstruction_error']:.3f} | {c['fit_seconds']:.1f} |")
    return lines


def report() -> str:
    lines = ["# Codes that know about behaviour (issue 23 item 4)", "",
             "Written by `python -m benchmarks.collab_codes report` from `benchmarks/results/collab_codes/`. "
             f"Beauty, leave-one-out, h2rec's defaults, seed {SEED}; codes rqvae {SIDS.levels} x {SIDS.codebook} "
             "(seed 42) from the same MiniLM title embeddings, without and with the SASRec run's item vectors "
             f"(`semid encode --collab`, weight {WEIGHT:g}). Test NDCG@10 under full ranking; each row's test split "
             "read once, right after it trained (no setting is chosen among these rows).", ""]
    if CODES_RECORD.is_file():
        record = json.loads(CODES_RECORD.read_text())
        lines += [f"## Codes (machine: {record['machine']}, {record['threads']} threads)", "",
                  *codes_table(record["codes"]), ""]
    else:
        lines += ["No codes yet: `python -m benchmarks.collab_codes codes`.", ""]
    records = {r["row"]: r for r in (json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json")))} \
        if RECORDS.is_dir() else {}
    if records:
        lines += ["## Recommenders", "", f"Machine: {next(iter(records.values()))['machine']}.", "",
                  "| row | codes | test NDCG@10 Overall | Head | Tail | test HR@10 | seen items left out: test NDCG@10 "
                  "/ HR@10 | valid NDCG@10 | best epoch | hours |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in ROWS:
            r = records.get(row)
            if r is None:
                lines.append(f"| {row} | {CODE_SETS[ROWS[row][1]]} | not run yet | | | | | | | |")
                continue
            test, valid, unseen = r["test"]["full"], r["valid"]["full"], r["test"]["full_unseen"]["overall"]
            lines.append(f"| {row} | {CODE_SETS[r['codes']]} | {test['overall']['NDCG@10']:.4f} "
                         f"| {test['head']['NDCG@10']:.4f} | {test['tail']['NDCG@10']:.4f} "
                         f"| {test['overall']['HR@10']:.4f} | {unseen['NDCG@10']:.4f} / {unseen['HR@10']:.4f} "
                         f"| {valid['overall']['NDCG@10']:.4f} "
                         f"| {r['best_epoch']} | {r['hours']:.2f} |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- smoke
def smoke() -> None:
    """Steps 2 and 5 on a generated catalogue, with a hand-made `h2rec export` folder: 600 items whose text
    embeddings form 24 groups and whose behaviour forms 24 others, 60 of them cold. No training."""
    import semid

    root = ROOT / "smoke"
    generator = torch.Generator().manual_seed(0)
    n, cold = 600, 60
    text = torch.nn.functional.normalize(torch.randn(24, 48, generator=generator)[torch.arange(n) % 24]
                                         + 0.3 * torch.randn(n, 48, generator=generator), dim=1)
    behaviour = (torch.randn(24, 16, generator=generator)[(torch.arange(n) // 25) % 24]
                 + 0.1 * torch.randn(n, 16, generator=generator))
    ids = [f"item{i:04d}" for i in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "text.npy", text.numpy())
    (root / "text_ids.txt").write_text("\n".join(ids) + "\n")
    export = root / "export"
    export.mkdir(exist_ok=True)
    order = torch.randperm(n - cold, generator=generator)  # rows in another order than the catalogue's
    np.save(export / "item_vectors.npy", behaviour[cold:][order].numpy())
    (export / "item_ids.json").write_text(json.dumps([ids[cold + i] for i in order.tolist()]))
    (export / "manifest.json").write_text(json.dumps({"format": "h2rec-export/1",
                                                      "layout": [{"part": "hid", "columns": [0, 16]}]}))
    config = semid.QuantizerConfig(kind="rqvae", levels=3, codebook_size=16, epochs=20, seed=SEED)
    codes = {}
    for name, collab in (("text", None), ("collab", export)):
        out = root / name
        semid.encode_catalogue(None, out, embeddings=root / "text.npy", ids=root / "text_ids.txt", quantizer=config,
                               collab=semid.CollabConfig(collab) if collab else None)
        codes[name] = code_summary(json.loads((out / "stats.json").read_text()))
    print("\n".join(codes_table(codes, 16, {"text": "text only", "collab": "text + generated behaviour"})))
    write_record(root / "codes.json", {"machine": machine(), "codes": codes})
    print(f"[collab_codes] smoke: {root}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["codes", "train", "report", "all", "smoke"])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.command == "smoke":
        smoke()
        return
    if args.command in ("codes", "all"):
        make_codes(args.data, args.device)
    if args.command in ("train", "all"):
        train(args.data, args.device)
    if args.command in ("report", "all"):
        text = report()
        (RESULTS / "collab_codes.md").write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()
