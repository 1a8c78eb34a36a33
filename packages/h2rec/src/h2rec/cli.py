"""``h2rec``: train, evaluate, recommend, export, compare, tune, demo. A thin shell over the Python API."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from pathlib import Path

import click

from .config import PRESETS
from .errors import H2RecError
from .flags import DATA_FLAGS, DEVICE, TRAIN_COMMAND_FLAGS, TUNE_COMMAND_FLAGS, add_flags, flag_names
from .flags import overrides as flag_overrides


class InputError(click.ClickException):
    """A user mistake: message on stderr, exit code 2 (as click's own usage errors). semid's CLI has
    the same small class (semid.cli.BadInput): a marked copy, so that no CLI imports another's."""

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


# the flag's own help, so that evaluate, recommend and export say what train says
no_cache_option = click.option("--no-cache", "cache", flag_value=False, default=None,
                               help=next(f.help for f in DATA_FLAGS if f.key == "data.cache"))


def threads_option(fn):
    return click.option("--threads", type=click.IntRange(min=1),
                        help="CPU threads for torch and pyarrow (default: all cores). On a machine shared with "
                             "other jobs, the number of free cores: oversubscribed threads are many times slower.")(fn)


def tracking_options(fn):
    """Optional copies of the run's metrics in TensorBoard and MLflow (off by default)."""
    options = [
        click.option("--track", multiple=True, type=click.Choice(["tensorboard", "mlflow"]),
                     help="Also log to TensorBoard and/or MLflow (repeat for both; needs pip install "
                          "'h2rec[tensorboard]' or 'h2rec[mlflow]'). A resumed run continues the same logs."),
        click.option("--tensorboard-dir", type=click.Path(file_okay=False),
                     help="This run's TensorBoard event folder (default RUN_DIR/tensorboard)."),
        click.option("--mlflow-uri",
                     help="MLflow tracking URI, e.g. sqlite:///mlflow.db, file:./mlruns or http://host:5000 "
                          "(default $MLFLOW_TRACKING_URI, else sqlite:///RUN_DIR/../mlflow.db)."),
        click.option("--mlflow-experiment", default="h2rec", show_default=True, help="MLflow experiment name."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@contextlib.contextmanager
def log_to_stderr(quiet: bool):
    """The library logs (``logging``), the command shows it: INFO and above of every h2rec module on
    stderr, as ``[h2rec.training] ...``, unless --quiet (then warnings only, through Python's default)."""
    if quiet:
        yield
        return
    logger = logging.getLogger("h2rec")
    handler = logging.StreamHandler(sys.stderr)  # read now: under CliRunner, its captured stream
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def use_threads(threads: int | None, quiet: bool = False) -> None:
    """torch's and pyarrow's CPU threads; a one-line warning on stderr when the cores are already busy."""
    from semid.devices import set_threads

    if threads:  # pyarrow parses the interactions with a pool of its own
        import pyarrow

        pyarrow.set_cpu_count(threads)
    warning = set_threads(threads)
    if warning and not quiet:
        click.echo(f"h2rec: {warning}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="h2rec")
def main():
    """H2Rec: harmonizing semantic and hash IDs for sequential recommendation."""


@main.command()
@add_flags(TRAIN_COMMAND_FLAGS)
# the first spellings of --code-match and --window, kept for a release: --o looked like -o/--out
@click.option("--p", "old_p", type=int, hidden=True)
@click.option("--o", "old_o", type=int, hidden=True)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML file with sections data/model/train/eval; flags override it.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)),
              help="Start from a named setting (paper: BPR with one negative, last window, as the paper's "
                   "objective; sasrec: SASRec with the settings our search found best for it on Beauty); "
                   "--config and flags override it. Default: the best setting measured.")
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder (checkpoints, metrics.jsonl, results.json).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@tracking_options
@threads_option
@reports_errors
def train(config_file, preset, run_dir, resume, quiet, threads, track, tensorboard_dir, mlflow_uri, mlflow_experiment,
          old_p, old_o, **options):
    """Train a model; select it on validation NDCG@10; report validation and test metrics.

    With --resume, the run continues with the configuration it started with; flags and --config
    may change only when it stops, where it runs and how it is reported (and data paths whose
    content is unchanged); other changes are refused."""
    from .config import build_config, load_config_file, read_config_values
    from .distributed import main_process
    from .evaluate import format_results
    from .runfolder import read_run_config
    from .tracking import open_tracking
    from .training import train as run_training

    use_threads(threads, quiet)
    overrides = flag_overrides(options, TRAIN_COMMAND_FLAGS)
    for old, key in ((old_p, "train.code_match"), (old_o, "train.window")):
        if old is not None:
            overrides.setdefault(key, old)
    flags = flag_names(TRAIN_COMMAND_FLAGS)
    if resume:
        if preset:
            raise InputError("--preset chooses how a new run starts; a resumed run continues as it started")
        if not (Path(run_dir) / "config.json").is_file():
            raise InputError(f"{run_dir}: no run to resume (no config.json); leave out --resume to start one")
        # the saved configuration, then the file's and the flags' values: the differences are what changes
        values = read_run_config(Path(run_dir)).to_dict()
        for section, section_values in (read_config_values(config_file) if config_file else {}).items():
            values[section] = ({**values.get(section, {}), **section_values} if isinstance(section_values, dict)
                               else section_values)  # build_config names a section that is not a mapping
        config = build_config(values, overrides, source=config_file or "command line", flags=flags)
    elif config_file:
        config = load_config_file(config_file, overrides, preset=preset, flags=flags)
    else:
        config = build_config(overrides=overrides, source="command line", preset=preset, flags=flags)
    if not track and (tensorboard_dir or mlflow_uri):
        raise InputError("--tensorboard-dir and --mlflow-uri go with --track tensorboard / --track mlflow")
    if not main_process():  # under torchrun, rank 0 alone reports and tracks (it writes the run folder)
        with log_to_stderr(quiet):
            run_training(config, run_dir, resume=resume, progress=False)
        return
    # a missing package or a bad MLflow store stops here, before training
    with (log_to_stderr(quiet),
          open_tracking(track, run_dir, tensorboard_dir, mlflow_uri, mlflow_experiment) as tracking):
        results = run_training(config, run_dir, resume=resume, progress=not quiet,
                               on_epoch=tracking.on_epoch if track else None)
        tracking.finish(results)
    click.echo(format_results(results))
    click.echo(f"results: {Path(run_dir) / 'results.json'}")
    for line in tracking.describe():
        click.echo(f"tracking: {line}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--eval-negatives", type=click.IntRange(min=0),
              help="Also report the sampled protocol with this many negatives (0: full ranking only).")
@click.option("--exclude-history/--include-history", default=None,
              help="Which full-ranking view the results name as the main one: the user's past items left out "
                   "(full_unseen) or ranked (full) [default: as the run was trained]. Both are always reported.")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help="Where to run (auto: cuda when available).")
@click.option("--json", "as_json", is_flag=True, help="Print the full results as JSON.")
@no_cache_option
@threads_option
@reports_errors
def evaluate(run_dir, eval_negatives, exclude_history, device, as_json, cache, threads):
    """Evaluate the best checkpoint of RUN_DIR on validation and test."""
    from .api import load
    from .evaluate import format_results

    use_threads(threads)

    results = load(run_dir, device, cache).evaluate(eval_negatives, exclude_history, progress=not as_json)
    click.echo(json.dumps(results, indent=2) if as_json else format_results(results))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--user", help="User id as spelled in the interaction file.")
@click.option("-k", type=click.IntRange(min=1), default=10, show_default=True, help="How many items.")
@click.option("--include-history", is_flag=True, help="Allow items the user already has.")
@click.option("--all-users", is_flag=True,
              help="Every user's top-k into the file -o instead: columns user_id, rank, item_id, score.")
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False),
              help="With --all-users: the table to write, .parquet (needs pip install 'h2rec[parquet]'), "
                   ".csv or .jsonl; written whole or not at all.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="With --all-users: users scored at once (default: the run's eval.batch_size); memory is "
                   "about 4 bytes x this x the catalogue size.")
@click.option("--overwrite", is_flag=True, help="With --all-users: replace an existing -o file.")
@click.option("--quiet", is_flag=True, help="With --all-users: no progress bar.")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help="Where to run (auto: cuda when available).")
@no_cache_option
@threads_option
@reports_errors
def recommend(run_dir, user, k, include_history, all_users, out_file, batch_size, overwrite, quiet, device, cache,
              threads):
    """Top-k next items for one user (--user), with their text; or for every user into a file
    (--all-users -o recs.parquet)."""
    batch_flags = [flag for flag, value in (("-o", out_file), ("--batch-size", batch_size),
                                            ("--overwrite", overwrite), ("--quiet", quiet)) if value]
    if all_users:
        if user is not None:
            raise InputError("--user and --all-users: give one of them")
        if out_file is None:
            raise InputError("--all-users writes a file: give it with -o, e.g. -o recs.parquet (or .csv, .jsonl)")
        _recommend_all(run_dir, Path(out_file), k, include_history, batch_size, overwrite, quiet, device, cache,
                       threads)
        return
    if user is None:
        raise InputError("give --user ID for one user, or --all-users -o FILE for every user")
    if batch_flags:
        raise InputError(f"{', '.join(batch_flags)}: only with --all-users")
    _recommend_one(run_dir, user, k, include_history, device, cache, threads)


def _recommend_all(run_dir, out_file: Path, k, include_history, batch_size, overwrite, quiet, device, cache, threads):
    from .api import load
    from .tables import check_table_path

    use_threads(threads, quiet)
    check_table_path(out_file, overwrite, flag="-o")  # a bad name fails before the model loads
    with log_to_stderr(quiet):
        rows = load(run_dir, device, cache).recommend_all(out_file, k, not include_history, batch_size, overwrite,
                                                          progress=not quiet)
    click.echo(f"{out_file}: {rows} rows (user_id, rank, item_id, score), the top {k} of every user; items "
               f"the user already has: {'allowed' if include_history else 'left out'}")


def _recommend_one(run_dir, user, k, include_history, device, cache, threads):
    from .api import load

    use_threads(threads)
    model = load(run_dir, device, cache)
    history = model.history(user)
    rows = model.recommend(user, k, not include_history)
    cfg = model.config
    click.echo(f"user {user}: {len(history)} item(s); the {min(RECENT, len(history))} most recent, newest last:")
    for item in history[-RECENT:]:
        click.echo(f"       {item['item_id']:<{_width(history)}}  {_one_line(item['text'])}")
    left_out = "allowed" if include_history else "left out"
    click.echo(f"\ntop {len(rows)} next items ({cfg.model.kind}/{cfg.model.backbone}, {run_dir}; "
               f"items the user already has: {left_out}):")
    click.echo(f"  rank  {'item':<{_width(rows)}}  {'score':>7}  text")
    for rank, row in enumerate(rows, start=1):
        click.echo(f"  {rank:>4}  {row['item_id']:<{_width(rows)}}  {row['score']:>+7.3f}  {_one_line(row['text'])}")
    click.echo("\nscore: the model's logit for the item being next (higher = more likely); it ranks the items of one "
               "list and is not a probability.")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write: user_vectors.npy, item_vectors.npy, user_ids.json, item_ids.json, "
                   "manifest.json, and items.faiss when faiss is installed (pip install 'h2rec[faiss]').")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Users encoded at once (default: the run's eval.batch_size).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in OUT.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help="Where to run (auto: cuda when available).")
@no_cache_option
@threads_option
@reports_errors
def export(run_dir, out_dir, batch_size, overwrite, quiet, device, cache, threads):
    """User and item vectors of RUN_DIR's best checkpoint for a nearest-neighbour server.

    user_vectors[u] @ item_vectors[i] is the model's score of item i for user u after the user's
    whole history (what recommend ranks; the user's own items are not left out)."""
    from .api import load
    from .export import check_export_dir

    use_threads(threads, quiet)
    check_export_dir(Path(out_dir), overwrite, flag="-o")  # before the model loads
    with log_to_stderr(quiet):
        manifest = load(run_dir, device, cache).export(out_dir, batch_size, overwrite, progress=not quiet)
    faiss = f", {manifest['files']['faiss_index']}" if manifest["files"]["faiss_index"] else ""
    click.echo(f"{out_dir}: {manifest['users']} user and {manifest['items']} item vectors of dimension "
               f"{manifest['dimension']} ({manifest['model']['kind']}/{manifest['model']['backbone']}{faiss})")


@main.group()
def cache():
    """The cache of prepared interaction files ($H2REC_CACHE_DIR, else the user cache folder)."""


@cache.command("list")
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def cache_list(as_json):
    """Each entry, oldest first: the file it was made from, its interactions and size on disk."""
    import datetime

    from .dataset_cache import cache_entries, default_cache_dir

    entries = cache_entries()
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(f"{default_cache_dir() / 'interactions'}: {len(entries)} entries, "
               f"{sum(e['bytes'] for e in entries) / 2**20:,.1f} MiB")
    for e in entries:
        created = datetime.datetime.fromtimestamp(e["created"]).strftime("%Y-%m-%d %H:%M")
        gone = "" if e["source_present"] else "  (file gone)"
        click.echo(f"{e['key']}  {created}  {e['bytes'] / 2**20:9,.1f} MiB  {e['interactions'] or '?':>12}  "
                   f"{e['path'] or '?'}{gone}")


@cache.command("clear")
@click.option("--older-than", type=click.FloatRange(min=0), metavar="DAYS",
              help="Only entries made more than DAYS days ago.")
@click.option("--missing", is_flag=True, help="Only entries whose source file is gone.")
@reports_errors
def cache_clear(older_than, missing):
    """Deletes cache entries (all of them unless --older-than or --missing narrows it). A later run
    prepares its file again; runs and their folders are not touched."""
    import time as _time

    from .dataset_cache import cache_entries, remove_entries

    entries = cache_entries()
    if older_than is not None:
        entries = [e for e in entries if _time.time() - e["created"] > older_than * 86400]
    if missing:
        entries = [e for e in entries if not e["source_present"]]
    removed = set(remove_entries([e["key"] for e in entries]))
    freed = sum(e["bytes"] for e in entries if e["key"] in removed)
    click.echo(f"removed {len(removed)} of {len(entries)} entries, {freed / 2**20:,.1f} MiB")


RECENT = 5  # history items `recommend` shows


def _width(rows: list[dict]) -> int:
    return max([len(r["item_id"]) for r in rows] + [4])


def _one_line(text: str | None, limit: int = 100) -> str:
    text = (text or "").replace("\n", " | ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["test", "valid"]), default="test", show_default=True)
@click.option("--protocol", default="full", show_default=True,
              help="full, full_unseen or sampled_N (as in results.json).")
@click.option("--baseline", help="Label of the baseline for the t-test (default: the first label).")
@click.option("--target", help="Label of the model tested against it (default: the second label).")
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def compare(run_dirs, split, protocol, baseline, target, as_json):
    """Mean ± std over seeds per model, and a paired two-sided t-test between two models."""
    from .compare import format_summary, load_runs, summarise

    summary = summarise(load_runs(list(run_dirs)), split, protocol, baseline=baseline, target=target)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


# `h2rec tune` option -> dotted config key: the data flags of `train`, and the device.
@main.command()
@click.option("--space", "space_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="YAML search space: dotted config key -> {float: [lo, hi]} (log: true, step: s), "
                   "{int: [lo, hi]} or {categorical: [a, b]}.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="Base configuration (YAML, as for train); the flags below override it, searched keys override both.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Search folder: study.db, trials/, best.yaml, trials.csv, trials.png, best_test.json.")
@click.option("--trials", type=click.IntRange(min=1),
              help="Stop when the study holds this many finished trials (earlier runs included).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True),
              help="Start no trial after this many minutes of this run.")
@click.option("--add-run", "add_runs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A finished run of the base configuration (searched keys inside the space) that joins the "
                   "search as a completed trial, e.g. the starting point; repeatable.")
@click.option("--start-from-base", is_flag=True,
              help="A new search's first trial is the base configuration itself (where no --add-run has it).")
@click.option("--prune-warmup", "prune_warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Prune no trial before this epoch (early epochs say how fast a trial learns, not how well).")
@add_flags(TUNE_COMMAND_FLAGS)
@click.option("--quiet", is_flag=True, help="No progress output.")
@threads_option
@reports_errors
def tune(space_file, config_file, out_dir, trials, minutes, add_runs, start_from_base, prune_warmup, quiet, threads,
         **options):
    """Search hyper-parameters with Optuna on validation NDCG@10; test the best configuration once.

    Run the same command again to continue a search, also after a crash."""
    from .config import build_config, load_config_file
    from .evaluate import format_results
    from .tune import tune as run_tune

    use_threads(threads, quiet)
    if trials is None and minutes is None:
        raise InputError("no budget: give --trials N (finished trials in the study) and/or --minutes M (this run)")
    overrides, flags = flag_overrides(options, TUNE_COMMAND_FLAGS), flag_names(TUNE_COMMAND_FLAGS)
    if config_file:
        config = load_config_file(config_file, overrides, flags=flags)
    else:
        config = build_config(overrides=overrides, source="command line", flags=flags)
    with log_to_stderr(quiet):
        summary = run_tune(space_file, out_dir, config, trials=trials, minutes=minutes, progress=not quiet,
                           add_runs=add_runs, prune_warmup_epochs=prune_warmup, start_from_base=start_from_base)
    if summary["best_trial"] is None:
        click.echo(f"no trial has completed yet ({summary['finished_trials']} pruned); run the same command again")
    else:
        click.echo(f"best trial {summary['best_trial']}: {summary['metric']} = {summary['best_value']:.5f}")
        for key, value in summary["best_params"].items():
            click.echo(f"  {key}: {value}")
        if summary["test"] is not None:
            click.echo(format_results(summary["test"]))
        click.echo(f"best config: {summary['files']['best_config']}  (h2rec train --config it -o RUN_DIR)")
        if summary["test"] is not None:
            click.echo(f"test metrics: {summary['files']['best_test']}")
        else:
            click.echo("not tested: the best trial's run folder is not here (see the log)")
    click.echo(f"trials: {summary['files']['trials_csv']}")


@main.command()
@click.option("-o", "--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True, help="Maximum epochs per model.")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help="Where to run (auto: cuda when available).")
@click.option("--model", "text_model", default=None, help="Text encoder (default: the bundled all-MiniLM-L6-v2).")
@click.option("--items", "n_items", default=1500, show_default=True,
              help="Items in the generated catalogue (128 to 20000: the RQ-VAE has 128 codes per level).")
@click.option("--users", "n_users", default=3000, show_default=True,
              help="Users in the generated catalogue (at least half as many as --items).")
@threads_option
@reports_errors
def demo(out_dir, epochs, device, text_model, n_items, n_users, threads):
    """The whole pipeline on a GENERATED catalogue: semid encode, then hid and h2rec, then a table."""
    from .demo import run_demo

    use_threads(threads)

    with log_to_stderr(quiet=False):
        table = run_demo(out_dir, epochs=epochs, device=device, text_model=text_model, n_items=n_items,
                         n_users=n_users, log=lambda m: click.echo(m, err=True))
    click.echo(table)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo as private (an existing repo keeps its visibility).")
@click.option("--token", default=None,
              help="Hugging Face token. Default: $HF_TOKEN, else the one `hf auth login` stored.")
@reports_errors
def push(run_dir, repo_id, private, token):
    """Upload RUN_DIR's best model to the Hugging Face Hub repo REPO_ID.

    Uploads weights, configuration, semantic IDs, item ids, results and a model card (README.md);
    not the training interactions or user ids. Only this command uploads; load it back with
    h2rec.from_pretrained("REPO_ID").
    """
    from semid.hub import check_repo_id, hub_token

    from .hub import push_to_hub

    check_repo_id(repo_id)
    hub_token(token)  # no token: exit 2 before any work
    click.echo(f"uploading the best model of {run_dir} to https://huggingface.co/{repo_id} ...", err=True)
    click.echo(f"pushed: {push_to_hub(run_dir, repo_id, token=token, private=private or None)}", err=True)


from .prepare.cli import prepare as _prepare  # noqa: E402  (h2rec prepare: downloaded data -> items + interactions)

main.add_command(_prepare)


if __name__ == "__main__":
    sys.exit(main())
