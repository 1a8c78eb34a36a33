"""Amazon reviews, as downloaded from the McAuley lab: reviews and metadata as gzipped JSON lines.

- 2014: reviews ``reviews_<Cat>_5.json.gz`` (or ``reviews_<Cat>.json.gz``): reviewerID, asin,
  unixReviewTime (s), overall; metadata ``meta_<Cat>.json.gz``, Python dict literals: asin, title,
  brand, categories (lists of category paths), description, price.
- 2018: reviews ``<Cat>_5.json.gz`` or ``<Cat>.json.gz`` (same fields); metadata ``meta_<Cat>.json.gz``,
  JSON: asin, title, brand, category, feature, description, price.
- 2023: reviews ``<Cat>.jsonl.gz``: user_id, parent_asin, timestamp (ms), rating; metadata
  ``meta_<Cat>.jsonl.gz``: parent_asin, title, store, categories, features, description.

Reviews are read first; then only the metadata lines of items that occur in them are parsed (the
others are skipped unparsed), so a category's full metadata file costs little memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .common import (
    Interactions,
    PrepareOptions,
    Role,
    Source,
    as_id,
    as_number,
    clean,
    key_pattern,
    parse_record,
    read_lines,
    resolve_inputs,
)


@dataclass(frozen=True)
class Release:
    user: str
    item: str
    time: str
    time_scale: float  # seconds per unit of the time field
    rating: str
    meta_id: str
    meta_fields: tuple[tuple[str, str], ...]  # (source field, items.jsonl field), title first
    python_literals: bool  # metadata lines may be Python dict literals


RELEASES = {
    "amazon2014": Release("reviewerID", "asin", "unixReviewTime", 1.0, "overall", "asin",
                          (("title", "title"), ("brand", "brand"), ("categories", "categories"),
                           ("description", "description"), ("price", "price")), python_literals=True),
    "amazon2018": Release("reviewerID", "asin", "unixReviewTime", 1.0, "overall", "asin",
                          (("title", "title"), ("brand", "brand"), ("category", "categories"),
                           ("feature", "features"), ("description", "description"), ("price", "price")),
                          python_literals=False),
    "amazon2023": Release("user_id", "parent_asin", "timestamp", 0.001, "rating", "parent_asin",
                          (("title", "title"), ("store", "store"), ("categories", "categories"),
                           ("features", "features"), ("description", "description")), python_literals=False),
}


def _is_json_lines(name: str) -> bool:
    return name.endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz"))


ROLES = (
    Role("metadata", lambda n: n.startswith("meta_") and _is_json_lines(n), "meta_<Category>.json(l).gz"),
    Role("reviews", lambda n: not n.startswith("meta_") and _is_json_lines(n), "<Category>.json(l).gz reviews"),
)


def read(layout: str, inputs: list[str | Path], options: PrepareOptions) -> Source:
    release = RELEASES[layout]
    files = resolve_inputs(layout, inputs, ROLES)
    log = Interactions()
    below = 0
    reviews = files["reviews"]
    for line, text in read_lines(reviews):
        if not text.strip():
            continue
        record = parse_record(reviews, line, text, python_literals=release.python_literals)
        user = as_id(record.get(release.user), reviews, line, release.user)
        item = as_id(record.get(release.item), reviews, line, release.item)
        time = as_number(record.get(release.time), reviews, line, release.time) * release.time_scale
        keep = True
        if options.min_rating is not None:
            keep = as_number(record.get(release.rating), reviews, line, release.rating) >= options.min_rating
            below += not keep
        log.add(user, item, time, keep)

    items, counts = read_metadata(files["metadata"], release, set(log.item_codes))
    counts["below_min_rating"] = below
    return Source(layout, files, log, items, tuple(out for _, out in release.meta_fields), timed=True,
                  keep_textless_default=False, counts=counts)


def read_metadata(path: Path, release: Release, needed: set[str]) -> tuple[dict[str, dict], dict[str, int]]:
    """Text fields of the ``needed`` items; a repeated record of an item (the 2018 files have some)
    is counted and the first one kept."""
    quick_id = key_pattern(release.meta_id)
    items: dict[str, dict] = {}
    records = repeated = 0
    for line, text in read_lines(path):
        if not text.strip():
            continue
        records += 1
        found = quick_id.search(text)
        if found and found.group(1).strip() not in needed:
            continue  # an item nobody interacted with: not parsed at all
        record = parse_record(path, line, text, python_literals=release.python_literals)
        item = as_id(record.get(release.meta_id), path, line, release.meta_id)
        if item not in needed:
            continue
        if item in items:
            repeated += 1
            continue
        items[item] = {out: clean(record.get(source)) for source, out in release.meta_fields}
    return items, {"metadata_records": records, "metadata_repeated_records": repeated,
                   "metadata_unused_records": records - repeated - len(items)}
