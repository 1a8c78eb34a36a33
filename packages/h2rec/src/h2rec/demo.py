"""`h2rec demo`: the whole pipeline on a generated catalogue, in a few minutes on a laptop CPU.

1. write a generated catalogue (``h2rec.synthetic``: a beauty-shop taxonomy, long-tail
   popularity, sequential taste) as items.jsonl + interactions.csv;
2. ``semid encode`` the items with the bundled all-MiniLM-L6-v2 and a 4 x 128 RQ-VAE (the paper's default);
3. train the ``hid`` baseline (SASRec on hash IDs) and ``h2rec`` with the same backbone and sizes;
4. print test Overall / Head / Tail metrics side by side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from semid.io import atomic_write

from .assemble import resolve_device
from .checkpoint import write_json
from .config import build_config
from .errors import H2RecError
from .synthetic import SyntheticConfig, write
from .training import train

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


def check_same_demo(out: Path, setting: dict) -> None:
    """A demo folder continues only the demo it holds: its semantic IDs and runs belong to one
    generated catalogue, so other sizes or another encoder into the same folder are refused."""
    path = out / "demo.json"
    if path.is_file():
        held = json.loads(path.read_text(encoding="utf-8"))
        if held != setting:
            raise H2RecError(f"{out}: holds the demo of {held}; this one is {setting}. "
                             "Choose another -o, or remove the folder")
    else:
        write_json(path, setting)


def run_demo(out_dir: str | Path, epochs: int = 40, device: str = "auto", text_model: str | None = None,
             n_items: int = 1500, n_users: int = 3000, log: Callable[[str], None] = print) -> str:
    import semid

    check_demo_sizes(n_items, n_users, epochs)
    resolve_device(device)  # `--device tpu` fails here, not after the catalogue is written
    out = Path(out_dir)
    check_same_demo(out, {"items": n_items, "users": n_users, "text_model": text_model})
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
        # a short run (40 epochs, patience 5) for a demo of minutes; without the default average of the
        # weights, whose 10-epoch horizon such a cap cuts short (seed 42, `benchmarks.accuracy demo`:
        # validation NDCG@10 0.2174 against 0.2224 for hid, still climbing at the cap; 0.2191 against 0.2209
        # for h2rec); checkpoints selected with seen items ranked, as those rows were measured
        config = build_config(overrides={
            "data.interactions": str(interactions), "data.semid": str(sid_dir), "model.kind": kind,
            "train.epochs": epochs, "train.patience": 5, "train.patience_steps": 0, "train.ema_epochs": 0.0,
            "train.device": device, "eval.negatives": 100, "eval.exclude_history": False})
        if finished:
            results[kind] = json.loads((run_dir / "results.json").read_text())
        else:
            results[kind] = train(config, run_dir, resume=(run_dir / "config.json").is_file())
    return demo_table(results, out)


PROTOCOLS = {"full": "all items ranked, the user's seen items included",
             "full_unseen": "all items ranked, the user's seen items left out",
             "sampled_100": "the paper's protocol: the target among 100 sampled negatives"}


def demo_table(results: dict[str, dict], out: Path) -> str:
    """The test metrics of both models side by side, with H2Rec's relative difference, the groups
    defined and counted, and a PNG of the five popularity groups (when matplotlib is installed)."""
    hid, h2 = results["hid"], results["h2rec"]
    full = hid["test"]["full"]
    stats = hid["data"]
    rows = ["", "H2Rec demo on GENERATED data (h2rec.synthetic): test split, one seed (42), so differences of",
            "a few percent may be noise; docs/results.md has real data with several seeds.",
            f"Head = the {stats['head_items']} most-interacted items in training (the top 20%); Tail = the other "
            f"{stats['catalogue_items'] - stats['head_items']}. Test targets: {full['overall']['n']} "
            f"({full['head']['n']} Head, {full['tail']['n']} Tail).", "",
            "| protocol | model | Overall HR@10 | Overall NDCG@10 | Head HR@10 | Head NDCG@10 "
            "| Tail HR@10 | Tail NDCG@10 |",
            "|---|---|---|---|---|---|---|---|"]
    cells = [(g, k) for g in ("overall", "head", "tail") for k in ("HR@10", "NDCG@10")]
    for protocol in PROTOCOLS:
        for kind, res in results.items():
            m = res["test"][protocol]
            rows.append(f"| {protocol} | {kind} | " + " | ".join(f"{m[g][k]:.4f}" for g, k in cells) + " |")
        base, new = hid["test"][protocol], h2["test"][protocol]
        rows.append(f"| {protocol} | h2rec vs hid | " + " | ".join(
            f"{100 * (new[g][k] / base[g][k] - 1):+.1f}%" if base[g][k] else "-" for g, k in cells) + " |")
    rows += [""] + [f"{name}: {text}" for name, text in PROTOCOLS.items()]
    plot = groups_plot(results, out / "groups.png")
    if plot:
        rows.append(f"NDCG@10 per popularity group (rarest G1 to most popular G5): {plot}")
    rows += ["", f"Runs: {out / 'runs'}. Try: h2rec recommend {out / 'runs' / 'h2rec'} --user u00001",
             "For a real dataset: semid encode items.jsonl -o sid/ && "
             "h2rec train --interactions inter.csv --semid sid/ -o runs/h2rec (see README)."]
    return "\n".join(rows)


def groups_plot(results: dict[str, dict], path: Path) -> Path | None:
    """Bars of test NDCG@10 (full ranking) per popularity group for each model; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = next(iter(results.values()))["data"]["groups"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(results)
    for i, (kind, res) in enumerate(results.items()):
        groups = res["test"]["full"]
        ax.bar([g + i * width for g in range(len(labels))], [groups[label]["NDCG@10"] for label in labels],
               width, label=kind)
    ax.set_xticks([g + width * (len(results) - 1) / 2 for g in range(len(labels))])
    ax.set_xticklabels([f"{label}\nn={next(iter(results.values()))['test']['full'][label]['n']}" for label in labels],
                       fontsize=8)
    ax.set_xlabel("popularity group of the test target (training interactions per item)")
    ax.set_ylabel("test NDCG@10 (full ranking)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # outside: no bar hidden
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path
