"""``h2rec``: train, evaluate, recommend, compare, demo. A thin shell over the Python API."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .errors import H2RecError


class InputError(click.ClickException):
    """A user mistake: message on stderr, exit code 2 (as click's own usage errors)."""

    exit_code = 2


def reports_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import semid

        try:
            return fn(*args, **kwargs)
        except (H2RecError, semid.SemidError) as err:
            raise InputError(str(err)) from err

    return wrapper


# CLI option -> dotted config key. Options left unset keep the value from --config or the default.
TRAIN_OPTIONS = {
    "interactions": "data.interactions", "semid_dir": "data.semid", "format": "data.format",
    "user_field": "data.user_field", "item_field": "data.item_field", "time_field": "data.time_field",
    "k_core": "data.k_core", "max_len": "data.max_len",
    "model": "model.kind", "backbone": "model.backbone", "dim": "model.dim", "layers": "model.num_layers",
    "heads": "model.num_heads", "dropout": "model.dropout", "fusion": "model.fusion", "mca": "model.mca",
    "pca_init": "model.pca_init", "candidate_weights": "model.candidate_weights",
    "loss": "train.loss", "negatives": "train.num_negatives", "beta": "train.beta", "gamma": "train.gamma",
    "tau": "train.tau", "rec_reduction": "train.rec_reduction", "p": "train.code_match", "o": "train.window",
    "epochs": "train.epochs",
    "patience": "train.patience", "batch_size": "train.batch_size", "lr": "train.lr", "seed": "train.seed",
    "device": "train.device",
    "eval_negatives": "eval.negatives", "select_on": "eval.select_on", "exclude_history": "eval.exclude_history",
}


@click.group()
@click.version_option(package_name="h2rec")
def main():
    """H2Rec: harmonizing semantic and hash IDs for sequential recommendation."""


@main.command()
@click.option("--interactions", type=click.Path(dir_okay=False),
              help="Interactions: .csv/.tsv/.jsonl, RecBole .inter, P5 .txt sequences or LC-Rec .json.")
@click.option("--semid", "semid_dir", type=click.Path(file_okay=False),
              help="Folder written by `semid encode` for the same items.")
@click.option("--format", type=click.Choice(["auto", "csv", "tsv", "jsonl", "inter", "sequences", "json"]),
              help="Interaction layout (default: from the suffix).")
@click.option("--user-field", help="User column of CSV/TSV/JSONL interactions (default user_id).")
@click.option("--item-field", help="Item column (default item_id).")
@click.option("--time-field", help="Timestamp column, used when present (default timestamp).")
@click.option("--k-core", type=int, help="Drop users and items with fewer than k interactions (default 0: off).")
@click.option("--max-len", type=int, help="Most recent items a history keeps (default 50).")
@click.option("--model", type=click.Choice(["h2rec", "hid", "sid"]),
              help="h2rec (both branches), hid (hash IDs only) or sid (semantic IDs only).")
@click.option("--backbone", type=click.Choice(["sasrec", "gru4rec", "bert4rec"]),
              help="Sequence encoder of each branch (default sasrec).")
@click.option("--dim", type=int, help="Embedding and hidden size d (default 64).")
@click.option("--layers", type=int, help="Encoder layers (default 2).")
@click.option("--heads", type=int, help="Attention heads (default 1).")
@click.option("--dropout", type=float, help="Dropout (default 0.2).")
@click.option("--no-fusion", "fusion", flag_value=False, default=None,
              help="Fixed equal level weights instead of the fusion network (Eq. 2-3).")
@click.option("--no-mca", "mca", flag_value=False, default=None,
              help="Drop the multi-granularity cross attention (Eq. 4-5).")
@click.option("--pca-init/--no-pca-init", default=None,
              help="Initialise hash-ID embeddings from the PCA of the text embeddings (default: on for h2rec).")
@click.option("--candidate-weights", type=click.Choice(["intent", "uniform"]),
              help="Level weights of a candidate's SID embedding in Eq. 9.")
@click.option("--loss", type=click.Choice(["bpr", "bce", "sampled_softmax", "ce"]),
              help="Ranking loss (default bpr, Eq. 10).")
@click.option("--negatives", type=int, help="Sampled negatives per position (bpr/bce/sampled_softmax).")
@click.option("--beta", type=float, help="Weight of the code-guided alignment loss (Eq. 11, default 0.5; 0 = off).")
@click.option("--gamma", type=float, help="Weight of the masked granularity loss (Eq. 11, default 0.3; 0 = off).")
@click.option("--tau", type=float, help="Temperature of Eq. 6-8 (default 1.0).")
@click.option("--rec-reduction", type=click.Choice(["user_sum", "mean"]),
              help="Eq. 10 over a batch: per-user sum averaged over users (default), or mean over positions.")
@click.option("--p", type=int, help="Code-matching threshold p of Eq. 7 (default 3; 0 = removed).")
@click.option("--o", type=int, help="Context window o of Eq. 7 (default 3; 0 = removed).")
@click.option("--epochs", type=int, help="Maximum epochs (default 200).")
@click.option("--patience", type=int, help="Epochs without a better validation NDCG@10 before stopping (default 10).")
@click.option("--batch-size", type=int, help="Users per batch (default 256).")
@click.option("--lr", type=float, help="Adam learning rate (default 1e-3).")
@click.option("--seed", type=int, help="Random seed (default 42).")
@click.option("--device", help="auto, cpu or cuda (default auto).")
@click.option("--eval-negatives", type=int,
              help="Also report the paper's protocol: 1 positive + this many sampled negatives (e.g. 100). "
                   "Full ranking is always reported.")
@click.option("--select-on", type=click.Choice(["full", "sampled"]),
              help="Protocol of the validation NDCG@10 that picks the checkpoint (default full).")
@click.option("--exclude-history", flag_value=True, default=None,
              help="Drop the user's past items from the full ranking.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML file with sections data/model/train/eval; flags override it.")
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder (checkpoints, metrics.jsonl, results.json).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@reports_errors
def train(config_file, run_dir, resume, quiet, **options):
    """Train a model; select it on validation NDCG@10; report validation and test metrics."""
    from .config import build_config, load_config_file
    from .evaluate import format_results
    from .training import train as run_training

    overrides = {TRAIN_OPTIONS[k]: v for k, v in options.items() if v is not None}
    if config_file:
        config = load_config_file(config_file, overrides)
    else:
        config = build_config(overrides=overrides, source="command line")
    results = run_training(config, run_dir, resume=resume, progress=not quiet)
    click.echo(format_results(results))
    click.echo(f"results: {Path(run_dir) / 'results.json'}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--eval-negatives", type=int, help="Also report the sampled protocol with this many negatives.")
@click.option("--exclude-history/--include-history", default=None,
              help="Drop the user's past items from the full ranking.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full results as JSON.")
@reports_errors
def evaluate(run_dir, eval_negatives, exclude_history, device, as_json):
    """Evaluate the best checkpoint of RUN_DIR on validation and test."""
    from .api import load
    from .evaluate import format_results

    results = load(run_dir, device).evaluate(eval_negatives, exclude_history)
    click.echo(json.dumps(results, indent=2) if as_json else format_results(results))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--user", required=True, help="User id as spelled in the interaction file.")
@click.option("-k", default=10, show_default=True, help="How many items.")
@click.option("--include-history", is_flag=True, help="Allow items the user already has.")
@click.option("--device", default="auto", show_default=True)
@reports_errors
def recommend(run_dir, user, k, include_history, device):
    """Top-k next items for one user, with their text."""
    from .api import load

    for rank, row in enumerate(load(run_dir, device).recommend(user, k, not include_history), start=1):
        text = (row["text"] or "").replace("\n", " | ")
        click.echo(f"{rank:>3}. {row['item_id']}  {row['score']:+.3f}  {text}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["test", "valid"]), default="test", show_default=True)
@click.option("--protocol", default="full", show_default=True, help="full or sampled_100 (as in results.json).")
@click.option("--baseline", help="Label of the baseline for the t-test (default: the first label).")
@click.option("--target", help="Label of the model tested against it (default: the second label).")
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def compare(run_dirs, split, protocol, baseline, target, as_json):
    """Mean ± std over seeds per model, and a paired two-sided t-test between two models."""
    from .compare import format_summary, load_runs, summarise

    summary = summarise(load_runs(list(run_dirs)), split, protocol, baseline=baseline, target=target)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


@main.command()
@click.option("-o", "--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", default=40, show_default=True, help="Maximum epochs per model.")
@click.option("--device", default="auto", show_default=True)
@click.option("--model", "text_model", default=None, help="Text encoder (default: the bundled all-MiniLM-L6-v2).")
@click.option("--items", "n_items", default=1500, show_default=True, help="Items in the generated catalogue.")
@click.option("--users", "n_users", default=3000, show_default=True, help="Users in the generated catalogue.")
@reports_errors
def demo(out_dir, epochs, device, text_model, n_items, n_users):
    """The whole pipeline on a GENERATED catalogue: semid encode, then hid and h2rec, then a table."""
    from .demo import run_demo

    click.echo(run_demo(out_dir, epochs=epochs, device=device, text_model=text_model, n_items=n_items,
                        n_users=n_users, log=lambda m: click.echo(m, err=True)))


if __name__ == "__main__":
    sys.exit(main())
