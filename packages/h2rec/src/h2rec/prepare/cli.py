"""``h2rec prepare LAYOUT INPUTS... -o OUT``: the command over :func:`h2rec.prepare.prepare`."""

from __future__ import annotations

import logging
import sys

import click

from ..errors import H2RecError
from . import LAYOUTS, PrepareOptions
from . import prepare as run_prepare
from .writer import summary


class _InputError(click.ClickException):
    exit_code = 2  # a user mistake, as in the other h2rec commands


@click.command("prepare")
@click.argument("layout", type=click.Choice(LAYOUTS))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for items.jsonl, interactions.csv and prepare_report.json.")
@click.option("--k-core", type=click.IntRange(min=0), default=0, show_default=True,
              help="Drop users and items with fewer than K interactions, repeatedly (0: off; Amazon papers use 5).")
@click.option("--min-rating", type=float,
              help="Keep interactions rated at least this (amazon*, yelp, movielens, recbole with a rating field).")
@click.option("--keep-textless/--drop-textless", default=None,
              help="Items without text (no metadata, or all fields empty) and their interactions. "
                   "Default: dropped for amazon*, yelp, movielens (semid needs text); kept for the "
                   "benchmark splits p5 and recbole.")
@click.option("--repeats", type=click.Choice(["keep", "first"]), default="keep", show_default=True,
              help="A user's later interaction with the same item: keep it, or keep only the first. "
                   "Exact duplicates (same user, item and time) are always dropped.")
@click.option("--ids", type=click.Choice(["original", "sequence"]), default="original", show_default=True,
              help="p5: the source ids datamaps.json maps to (ASIN, business id), or the sequence integers.")
@click.option("--item-key-offset", type=int,
              help="p5 with <Name>.item.json: sequence id = key + offset (default 1 beside "
                   "sequential_data.txt, 0 beside an LC-Rec .inter.json).")
@click.option("--quiet", is_flag=True, help="No progress messages; the summary is still printed.")
def prepare(layout, inputs, out_dir, k_core, min_rating, keep_textless, repeats, ids, item_key_offset, quiet):
    """Convert downloaded data into items.jsonl + interactions.csv with matching ids.

    \b
    LAYOUT and INPUTS (files, or the folder holding them):
      amazon2014  reviews_<Cat>_5.json.gz meta_<Cat>.json.gz
      amazon2018  <Cat>_5.json.gz meta_<Cat>.json.gz
      amazon2023  <Cat>.jsonl.gz meta_<Cat>.jsonl.gz
      yelp        yelp_academic_dataset_review.json yelp_academic_dataset_business.json
      movielens   ratings.dat movies.dat  |  ratings.csv movies.csv
      recbole     <name>.inter <name>.item
      p5          sequential_data.txt datamaps.json + products_lookup.csv item_id_to_int.json | <Name>.item.json
    """
    logger = logging.getLogger("h2rec.prepare")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[h2rec prepare] %(message)s"))
    level = logger.level
    if not quiet:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        options = PrepareOptions(k_core=k_core, min_rating=min_rating, keep_textless=keep_textless,
                                 repeats=repeats, ids=ids, item_key_offset=item_key_offset)
        report = run_prepare(layout, inputs, out_dir, options)
    except H2RecError as err:
        raise _InputError(str(err)) from err
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    click.echo(summary(report))
