"""Downloaded datasets -> ``items.jsonl`` (for ``semid encode``) + ``interactions.csv`` (for
``h2rec train``) with the same item ids, + ``prepare_report.json`` (what was read, dropped and why).

    from h2rec.prepare import PrepareOptions, prepare
    report = prepare("amazon2014", ["reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"], "data/beauty",
                     PrepareOptions(k_core=5))

One module per layout family reads the files (``amazon``, ``yelp``, ``movielens``, ``recbole``,
``p5``); ``common.build`` filters, ``writer`` writes. Ids are the source's own (ASIN, business id,
movie id), so the two files match by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import H2RecError
from . import amazon, movielens, p5, recbole, yelp
from .common import PrepareOptions, Source, build
from .writer import summary, write

READERS: dict[str, Callable[[str, list, PrepareOptions], Source]] = {
    "amazon2014": amazon.read,
    "amazon2018": amazon.read,
    "amazon2023": amazon.read,
    "yelp": yelp.read,
    "movielens": movielens.read,
    "recbole": recbole.read,
    "p5": p5.read,
}
LAYOUTS = tuple(READERS)


def prepare(layout: str, inputs: Sequence[str | Path], out_dir: str | Path,
            options: PrepareOptions | None = None) -> dict:
    """Reads ``inputs`` (files, or folders holding them) in ``layout``, writes the three files in
    ``out_dir`` and returns the report. Bad input raises H2RecError naming file, line and field."""
    if layout not in READERS:
        raise H2RecError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    options = options or PrepareOptions()
    prepared = build(READERS[layout](layout, list(inputs), options), options)
    write(prepared, out_dir)
    return prepared.report


__all__ = ["LAYOUTS", "PrepareOptions", "prepare", "summary"]
