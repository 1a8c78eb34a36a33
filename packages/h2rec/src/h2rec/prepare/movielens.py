"""MovieLens (GroupLens): ``ratings.dat`` + ``movies.dat`` (ML-1M / ML-10M: ``::`` separated, no
header; ML-1M is Latin-1) or ``ratings.csv`` + ``movies.csv`` (ml-latest, ml-25m, ml-32m: a header,
quoted titles). Items are movies (``movieId``; text: title, genres); interactions are ratings
(``userId``, ``movieId``, ``rating``, ``timestamp`` in seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import H2RecError
from .common import Interactions, PrepareOptions, Role, Source, as_id, as_number, read_csv, read_lines, resolve_inputs

ROLES = (
    Role("ratings", lambda n: n.startswith("ratings.") and n.endswith((".dat", ".csv", ".dat.gz", ".csv.gz")),
         "ratings.dat or ratings.csv"),
    Role("movies", lambda n: n.startswith("movies.") and n.endswith((".dat", ".csv", ".dat.gz", ".csv.gz")),
         "movies.dat or movies.csv"),
)
NO_GENRES = "(no genres listed)"


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, {column: value})``: ``::`` files by position, CSV files by their header."""
    if ".dat" in path.name.lower():
        for line, text in read_lines(path, fallback_encoding="latin-1"):
            if text.strip():
                values = text.rstrip("\r\n").split("::")
                if len(values) != len(columns):
                    raise H2RecError(f"{path}:{line}: {len(values)} '::'-separated values, expected "
                                     f"{len(columns)} ({'::'.join(columns)})")
                yield line, dict(zip(columns, values))
        return
    header, rows = read_csv(path, fallback_encoding="latin-1")
    missing = [name for name in columns if name not in header]
    if missing:
        raise H2RecError(f"{path}:1: no column {missing[0]!r}; the header has {header}")
    for line, values in rows:
        yield line, dict(zip(header, values))


def read(layout: str, inputs: list[str | Path], options: PrepareOptions) -> Source:
    files = resolve_inputs(layout, inputs, ROLES)
    log = Interactions()
    below = 0
    ratings = files["ratings"]
    for line, row in _rows(ratings, ("userId", "movieId", "rating", "timestamp")):
        user = as_id(row["userId"], ratings, line, "userId")
        item = as_id(row["movieId"], ratings, line, "movieId")
        time = as_number(row["timestamp"], ratings, line, "timestamp")
        keep = True
        if options.min_rating is not None:
            keep = as_number(row["rating"], ratings, line, "rating") >= options.min_rating
            below += not keep
        log.add(user, item, time, keep)

    needed = set(log.item_codes)
    items: dict[str, dict] = {}
    records = repeated = 0
    movies = files["movies"]
    for line, row in _rows(movies, ("movieId", "title", "genres")):
        records += 1
        item = as_id(row["movieId"], movies, line, "movieId")
        if item in items:
            repeated += 1
        elif item in needed:
            genres = [g.strip() for g in row["genres"].split("|") if g.strip() and g.strip() != NO_GENRES]
            items[item] = {"title": row["title"], "genres": genres}
    counts = {"metadata_records": records, "metadata_repeated_records": repeated,
              "metadata_unused_records": records - repeated - len(items), "below_min_rating": below}
    return Source(layout, files, log, items, ("title", "genres"), timed=True, keep_textless_default=False,
                  counts=counts)
