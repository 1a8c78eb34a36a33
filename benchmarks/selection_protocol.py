"""Which validation protocol should pick the checkpoint: full ranking with the user's seen items
ranked, or left out? Issue 17: a default must be the best measured, and the study's tables and the
accuracy runs select differently. ``h2rec train`` leaves them out where no training sequence repeats an
item (``eval.exclude_history`` unset), from what this script shows.

The study (``benchmarks.study``, selects with seen items ranked) and the accuracy runs
(``benchmarks.accuracy``, select with them left out) trained some identical settings on the same
machine with the same seed; ``python -m benchmarks.accuracy selection`` trains today's SASRec defaults
both ways. CPU training is deterministic there, so such a pair is one
training run stopped by two validation curves, and their test readings (each read once, by its own
script) compare the two selection rules directly. This script finds those pairs in the committed
records and writes benchmarks/results/selection_protocol.md.

    python -m benchmarks.selection_protocol
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.record_settings import as_trained

RESULTS = Path(__file__).parent / "results"
ACCURACY = RESULTS / "accuracy" / "records"
STUDY = RESULTS / "study" / "records"
OUT = RESULTS / "selection_protocol.md"

# keys that do not change what is trained: the selection itself, the extra sampled report, how the
# evaluation is chunked, where the files are (the dataset is compared by name), bookkeeping
IGNORED = {"eval.exclude_history", "eval.negatives", "eval.item_chunk", "eval.batch_size", "train.device",
           "data.interactions", "data.semid", "data.cache"}


def trained_setting(record: dict) -> dict:
    """The settings that decide the training run, as its config.json reads today (a setting the record
    predates at the value it trained with: benchmarks.record_settings), with pca_init's rule applied where
    it was left open (the study's folders hold text embeddings)."""
    from h2rec.assemble import default_pca_init
    from h2rec.config import build_config

    sections = as_trained({k: v for k, v in record["config"].items() if k in ("data", "model", "train", "eval")})
    config = build_config(sections, source=record.get("row", "record"))
    values = {f"{section}.{k}": v for section, keys in config.to_dict().items() for k, v in keys.items()}
    if values["model.pca_init"] is None:
        values["model.pca_init"] = default_pca_init(values["model.kind"], has_text=True)
    return {k: v for k, v in values.items() if k not in IGNORED}


def same_training(a: dict, b: dict) -> bool:
    """One training run: the same dataset, seed, machine and settings, for a model that reads no semantic
    IDs (the codes of a dataset were encoded again between sittings, so a code-reading pair could differ)."""
    from h2rec.config import CODE_FREE_KINDS

    if (dataset_of(a), a["seed"], a["machine"]) != (dataset_of(b), b["seed"], b["machine"]):
        return False
    sa = trained_setting(a)
    return sa["model.kind"] in CODE_FREE_KINDS and sa == trained_setting(b)


def pairs() -> list[tuple[dict, dict]]:
    """(seen items left out, seen items ranked) record pairs of one training run."""
    def selected_by(folder: Path, pattern: str, unseen: bool) -> list[dict]:
        records = [json.loads(p.read_text()) for p in sorted(folder.glob(pattern))]
        return [r for r in records if r.get("test") and r["config"]["eval"]["select_on"] == "full"
                and bool(r["config"]["eval"]["exclude_history"]) == unseen]

    # the study's rows, and the accuracy rows trained for this comparison (`accuracy selection`)
    ranked = selected_by(STUDY, "*/*/*/*.json", unseen=False) + selected_by(ACCURACY, "*/*.json", unseen=False)
    return [(a, b) for a in selected_by(ACCURACY, "*/*.json", unseen=True) for b in ranked if same_training(a, b)]


def ndcg(record: dict, protocol: str, group: str) -> float:
    return record["test"][protocol][group]["NDCG@10"]


def dataset_of(record: dict) -> str:
    return Path(record["data"]["interactions_file"]).parent.name


def setting(record: dict) -> str:
    """The row's name without the rule, which the pair varies (`accuracy selection` names it)."""
    return record["row"].removesuffix(", selected with seen items left out")


def report(found: list[tuple[dict, dict]]) -> str:
    lines = ["# Which validation picks the checkpoint: seen items ranked or left out",
             "",
             "Written by `python -m benchmarks.selection_protocol` from the committed records. Each row is one "
             "training run (same data, seed, machine and settings; CPU training is deterministic) stopped by two "
             "validation curves: validation NDCG@10 with the user's seen items left out (`unseen`: "
             "`benchmarks.accuracy`) or ranked (`ranked`: `benchmarks.study`, or `benchmarks.accuracy selection`'s "
             "twin row). Patience is the same; each run's test split was read once. Test NDCG@10, full ranking, "
             "both ways.",
             "",
             "| dataset | row | seed | machine | best epoch unseen / ranked | test, seen items ranked: unseen / "
             "ranked | change | test, seen items left out: unseen / ranked | change | Tail (ranked test) | Head |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    changes = {("full", "overall"): [], ("full_unseen", "overall"): [], ("full", "tail"): [], ("full", "head"): []}
    for a, b in sorted(found, key=lambda p: (dataset_of(p[0]), p[0]["row"], p[0]["seed"])):
        cell = {}
        for key in changes:
            x, y = ndcg(a, *key), ndcg(b, *key)
            changes[key].append(x / y - 1)
            cell[key] = f"{x:.4f} / {y:.4f}"
        pct = {key: f"{100 * changes[key][-1]:+.1f}%" for key in changes}
        lines.append(f"| {dataset_of(a)} | {setting(a)} | {a['seed']} | {a['machine'].split(',')[0]} | "
                     f"{a['best_epoch']} / {b['best_epoch']} | {cell['full', 'overall']} | {pct['full', 'overall']} | "
                     f"{cell['full_unseen', 'overall']} | {pct['full_unseen', 'overall']} | "
                     f"{pct['full', 'tail']} | {pct['full', 'head']} |")
    if found:
        lines += ["", "Mean change from selecting with seen items left out, per setting (test NDCG@10; runs):", "",
                  "| row | runs | seen items ranked at test | left out at test | Tail (ranked) | Head (ranked) |",
                  "|---|---|---|---|---|---|"]
        rows = sorted({setting(a) for a, _ in found})
        for row in [*rows, "all"]:
            picked = [i for i, (a, _) in enumerate(found) if row in ("all", setting(a))]
            mean = {key: 100 * float(np.mean([v[i] for i in picked])) for key, v in changes.items()}
            cells = [f"{mean[key]:+.1f}%" for key in (("full", "overall"), ("full_unseen", "overall"),
                                                       ("full", "tail"), ("full", "head"))]
            lines.append(f"| {row} | {len(picked)} | " + " | ".join(cells) + " |")
    else:
        lines += ["", "No pair found."]
    return "\n".join(lines) + "\n"


def main() -> None:
    text = report(pairs())
    tmp = OUT.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(OUT)
    print(text)


if __name__ == "__main__":
    main()
