"""The Yelp Open Dataset: ``yelp_academic_dataset_business.json`` and ``..._review.json``, JSON lines
(gzipped or not). Items are businesses (``business_id``; text: name, categories, city); interactions
are reviews (``user_id``, ``business_id``, ``date`` as ``YYYY-MM-DD HH:MM:SS``, read as UTC; ``stars``)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..errors import H2RecError
from .common import (
    Interactions,
    PrepareOptions,
    Role,
    Source,
    as_id,
    as_number,
    clean,
    parse_record,
    read_lines,
    resolve_inputs,
)

FIELDS = (("name", "title"), ("categories", "categories"), ("city", "city"))


def _is_json(name: str) -> bool:
    return name.endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz"))


ROLES = (
    Role("business", lambda n: "business" in n and _is_json(n), "yelp_academic_dataset_business.json"),
    Role("review", lambda n: "review" in n and _is_json(n), "yelp_academic_dataset_review.json"),
)


def unix_seconds(value, path: Path, line: int) -> float:
    if not isinstance(value, str):
        raise H2RecError(f"{path}:{line}: field 'date' is missing" if value is None
                         else f"{path}:{line}: field 'date' is not a date: {value!r}")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise H2RecError(f"{path}:{line}: field 'date' is not a date like 2016-03-09 00:44:15: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def read(layout: str, inputs: list[str | Path], options: PrepareOptions) -> Source:
    files = resolve_inputs(layout, inputs, ROLES)
    log = Interactions()
    below = 0
    reviews = files["review"]
    for line, text in read_lines(reviews):
        if not text.strip():
            continue
        record = parse_record(reviews, line, text)
        user = as_id(record.get("user_id"), reviews, line, "user_id")
        item = as_id(record.get("business_id"), reviews, line, "business_id")
        time = unix_seconds(record.get("date"), reviews, line)
        keep = True
        if options.min_rating is not None:
            keep = as_number(record.get("stars"), reviews, line, "stars") >= options.min_rating
            below += not keep
        log.add(user, item, time, keep)

    needed = set(log.item_codes)
    items: dict[str, dict] = {}
    records = repeated = 0
    business = files["business"]
    for line, text in read_lines(business):
        if not text.strip():
            continue
        records += 1
        record = parse_record(business, line, text)
        item = as_id(record.get("business_id"), business, line, "business_id")
        if item in items:
            repeated += 1
        elif item in needed:
            items[item] = {out: clean(record.get(source)) for source, out in FIELDS}
    counts = {"metadata_records": records, "metadata_repeated_records": repeated,
              "metadata_unused_records": records - repeated - len(items), "below_min_rating": below}
    return Source(layout, files, log, items, tuple(out for _, out in FIELDS), timed=True,
                  keep_textless_default=False, counts=counts)
