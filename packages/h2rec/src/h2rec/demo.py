"""`h2rec demo`: the whole pipeline on a generated catalogue, in a few minutes on a laptop CPU.

1. write a generated catalogue (``h2rec.synthetic``: a beauty-shop taxonomy, long-tail
   popularity, sequential taste) as items.jsonl + interactions.csv;
2. ``semid encode`` the items with the bundled all-MiniLM-L6-v2 and a 4 x 128 RQ-VAE (the paper's default);
3. train the ``hid`` baseline (SASRec on hash IDs) and ``h2rec`` with the same backbone and sizes;
4. print test Overall / Head / Tail metrics side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import build_config
from .errors import H2RecError
from .synthetic import SyntheticConfig, write
from .training import resolve_device, train

# semid's RQ-VAE (QuantizerConfig's default) fits 128 codes per level and needs an item per code; the
# generator's taxonomy writes about 87,000 distinct titles and slows down as it runs out of new ones.
MIN_ITEMS, MAX_ITEMS = 128, 20_000


def check_demo_sizes(n_items: int, n_users: int, epochs: int) -> None:
    """Refuses sizes the demo cannot run with, before anything is generated or encoded."""
    if not MIN_ITEMS <= n_items <= MAX_ITEMS:
        raise H2RecError(f"--items {n_items}: the demo's catalogue needs {MIN_ITEMS} to {MAX_ITEMS} items "
                         f"(its RQ-VAE has {MIN_ITEMS} codes per level and needs an item per code)")
    # with fewer users, many generated items never occur in the interactions (and training refuses a
    # semid folder that the interactions cover too little); half as many gave 78%+ at 128-1500 items
    if n_users < (n_items + 1) // 2:
        raise H2RecError(f"--users {n_users}: the demo needs at least half as many users as items "
                         f"({(n_items + 1) // 2} for --items {n_items}), so that most items occur")
    if epochs < 1:
        raise H2RecError(f"--epochs {epochs}: train for at least 1 epoch")


def run_demo(out_dir: str | Path, epochs: int = 40, device: str = "auto", text_model: str | None = None,
             n_items: int = 1500, n_users: int = 3000, log: Callable[[str], None] = print) -> str:
    import semid

    check_demo_sizes(n_items, n_users, epochs)
    resolve_device(device)  # `--device tpu` fails here, not after the catalogue is written
    out = Path(out_dir)
    log(f"[demo] 1/4 generating a catalogue of {n_items} items and {n_users} users -> {out / 'data'}")
    items, interactions = write(out / "data", SyntheticConfig(n_items=n_items, n_users=n_users))

    sid_dir = out / "semid"
    if (sid_dir / "stats.json").is_file():
        log(f"[demo] 2/4 semantic IDs already in {sid_dir}")
    else:
        log(f"[demo] 2/4 semid encode {items} -> {sid_dir} (text encoder: {text_model or 'all-MiniLM-L6-v2, bundled'})")
        sids = semid.encode_catalogue(items, sid_dir, read=semid.ReadConfig(template="{title}. Category: {category}"),
                                      embed=semid.EmbedConfig(model=text_model, device=device),
                                      quantizer=semid.QuantizerConfig(device=device), progress=True)
        log(semid.format_stats(sids.stats["collisions"]))

    results = {}
    for kind in ("hid", "h2rec"):
        run_dir = out / "runs" / kind
        finished = (run_dir / "results.json").is_file()
        log(f"[demo] {3 if kind == 'hid' else 4}/4 training {kind} (SASRec backbone) -> {run_dir}")
        config = build_config(overrides={
            "data.interactions": str(interactions), "data.semid": str(sid_dir), "model.kind": kind,
            "train.epochs": epochs, "train.patience": 5, "train.patience_steps": 0, "train.device": device,
            "eval.negatives": 100})
        if finished:
            import json

            results[kind] = json.loads((run_dir / "results.json").read_text())
        else:
            results[kind] = train(config, run_dir, resume=(run_dir / "config.json").is_file())
    return demo_table(results, out)


def demo_table(results: dict[str, dict], out: Path) -> str:
    rows = ["", "H2Rec demo on GENERATED data (h2rec.synthetic), test split, seed 42",
            "", "| protocol | model | Overall HR@10 | Overall NDCG@10 | Head HR@10 | Head NDCG@10 "
            "| Tail HR@10 | Tail NDCG@10 |",
            "|---|---|---|---|---|---|---|---|"]
    for protocol in ("full", "full_unseen", "sampled_100"):  # seen items ranked, left out; the paper's
        for kind, res in results.items():
            m = res["test"][protocol]
            cells = [f"{m[g][k]:.4f}" for g in ("overall", "head", "tail") for k in ("HR@10", "NDCG@10")]
            rows.append(f"| {protocol} | {kind} | " + " | ".join(cells) + " |")
    rows += ["", f"Runs: {out / 'runs'}. Try: h2rec recommend {out / 'runs' / 'h2rec'} --user u00001",
             "For a real dataset: semid encode items.jsonl -o sid/ && "
             "h2rec train --interactions inter.csv --semid sid/ -o runs/h2rec (see README)."]
    return "\n".join(rows)
