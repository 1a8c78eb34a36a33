"""RecBole atomic files (https://recbole.io/docs/user_guide/data/atomic_files.html): a folder with
``<name>.inter`` and ``<name>.item``, tab separated, a ``field:type`` header, no quoting.

- ``.inter``: one interaction per row (``user_id:token``, ``item_id:token``, optional
  ``timestamp:float`` and ``rating:float``), or one user per row with an ``item_id_list:token_seq``
  history before the last ``item_id`` (UniSRec / LLMRank sequential files, order only).
- ``.item``: ``item_id:token`` and the item's fields; the text ones (``token`` and ``token_seq``)
  go to items.jsonl, numeric ones (``float``, ``float_seq``: prices, ranks) are left out. The title
  is ``title``, else ``movie_title`` or ``name`` (RecBole's MovieLens and Yelp conversions).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import H2RecError
from .common import Interactions, PrepareOptions, Role, Source, as_id, as_number, read_lines, resolve_inputs

ROLES = (
    Role("inter", lambda n: n.endswith((".inter", ".inter.gz")), "<name>.inter"),
    Role("item", lambda n: n.endswith((".item", ".item.gz")), "<name>.item"),
)
TYPES = ("token", "token_seq", "float", "float_seq")
TITLES = ("title", "movie_title", "name", "business_name")


def _table(path: Path) -> tuple[list[tuple[str, str]], Iterator[tuple[int, dict[str, str]]]]:
    """``([(field, type), ...], rows)`` of an atomic file."""
    lines = read_lines(path)
    try:
        _, header = next(lines)
    except StopIteration:
        raise H2RecError(f"{path}: empty file") from None
    columns = []
    for number, cell in enumerate(header.rstrip("\r\n").split("\t"), start=1):
        name, _, kind = cell.strip().rpartition(":")
        if not name or kind not in TYPES:
            raise H2RecError(f"{path}:1: header column {number} {cell.strip()!r} is not `name:type` "
                             f"with type in {', '.join(TYPES)} (RecBole atomic file)")
        columns.append((name, kind))

    def rows():
        for line, text in lines:
            if text.strip():
                values = text.rstrip("\r\n").split("\t")
                if len(values) != len(columns):
                    raise H2RecError(f"{path}:{line}: {len(values)} values where the header has {len(columns)}")
                yield line, {name: value for (name, _), value in zip(columns, values)}

    return columns, rows()


def read(layout: str, inputs: list[str | Path], options: PrepareOptions) -> Source:
    files = resolve_inputs(layout, inputs, ROLES)
    inter = files["inter"]
    columns, rows = _table(inter)
    names = [name for name, _ in columns]
    for name in ("user_id", "item_id"):
        if name not in names:
            raise H2RecError(f"{inter}:1: no field {name!r}; the header has {names}")
    sequential = "item_id_list" in names
    timed = not sequential and "timestamp" in names
    if options.min_rating is not None and "rating" not in names:
        raise H2RecError(f"{inter}: --min-rating needs a 'rating' field; the header has {names}")
    log = Interactions()
    below = 0
    seen_users: set[str] = set()
    position: dict[str, int] = {}  # untimed rows: a user's next position
    for line, row in rows:
        user = as_id(row["user_id"], inter, line, "user_id")
        if sequential:
            if user in seen_users:
                raise H2RecError(f"{inter}:{line}: user {user!r} has a second row in a one-row-per-user file")
            seen_users.add(user)
            history = row["item_id_list"].split() + [as_id(row["item_id"], inter, line, "item_id")]
            for k, item in enumerate(history):
                log.add(user, item, float(k))
            continue
        item = as_id(row["item_id"], inter, line, "item_id")
        if timed:
            time = as_number(row["timestamp"], inter, line, "timestamp")
        else:
            time = float(position.get(user, 0))
            position[user] = int(time) + 1
        keep = True
        if options.min_rating is not None:
            keep = as_number(row["rating"], inter, line, "rating") >= options.min_rating
            below += not keep
        log.add(user, item, time, keep)

    item_file = files["item"]
    item_columns, item_rows = _table(item_file)
    item_names = [name for name, _ in item_columns]
    if "item_id" not in item_names:
        raise H2RecError(f"{item_file}:1: no field 'item_id'; the header has {item_names}")
    text_fields = [name for name, kind in item_columns
                   if name not in ("item_id", "id") and kind in ("token", "token_seq")]
    title = next((name for name in TITLES if name in text_fields), None)
    fields = ("title", *[name for name in text_fields if name != title])
    needed = set(log.item_codes)
    items: dict[str, dict] = {}
    records = repeated = 0
    for line, row in item_rows:
        records += 1
        item = as_id(row["item_id"], item_file, line, "item_id")
        if item in items:
            repeated += 1
        elif item in needed:
            record = {"title": row[title] if title else ""}
            record.update({name: row[name] for name in text_fields if name != title})
            items[item] = record
    counts = {"metadata_records": records, "metadata_repeated_records": repeated,
              "metadata_unused_records": records - repeated - len(items), "below_min_rating": below}
    return Source(layout, files, log, items, fields, timed=timed, keep_textless_default=True, counts=counts)
