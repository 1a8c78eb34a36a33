"""Published sequential-recommendation splits: the P5 / S3Rec folders (Amazon Beauty, Sports, Toys,
Yelp) and LC-Rec / LETTER JSON. They hold order only (no times) and are benchmark data, so items
without text are kept by default (dropping them would change the benchmark).

Sequences, one of:

- ``sequential_data.txt`` (P5, S3Rec ``Beauty.txt``): ``user item item ...``, 1-based integers, oldest first;
- ``<Name>.inter.json`` (LC-Rec): ``{user: [item, ...]}``.

Ids: ``datamaps.json`` (``id2user``, ``id2item``) maps the integers back to the source ids (Amazon
reviewer id / ASIN, Yelp user / business id), which the output keeps; ``--ids sequence`` keeps
the integers instead.

Item text, one of:

- ``products_lookup.csv`` + ``item_id_to_int.json`` (dh-r/LLM-Sequential-Recommendation): sequence
  id -> ASIN (datamaps) -> ``global_product_id`` -> the CSV row (``,global_product_id,name``: the
  unnamed pandas index column is skipped; ``name`` is the title);
- ``<Name>.item.json`` (LC-Rec / LETTER): ``{key: {field: value}}`` with sequence id = key + offset;
  the offset is 1 beside ``sequential_data.txt`` (LC-Rec keys are 0-based, P5 ids 1-based: checked
  on Yelp, see its README) and 0 beside an LC-Rec ``.inter.json``; ``--item-key-offset`` overrides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import H2RecError
from .common import Interactions, PrepareOptions, Role, Source, as_id, clean, read_csv, read_lines, resolve_inputs

ROLES = (
    Role("items_json", lambda n: n.endswith(".item.json"), "<Name>.item.json", required=False),
    Role("sequences", lambda n: n.endswith((".txt", ".inter.json")), "sequential_data.txt or <Name>.inter.json"),
    Role("datamaps", lambda n: n.startswith("datamaps") and n.endswith(".json"), "datamaps.json", required=False),
    Role("item_map", lambda n: n.endswith("_to_int.json"), "item_id_to_int.json", required=False),
    Role("lookup", lambda n: n.endswith(".csv"), "products_lookup.csv", required=False),
)
JOIN_COLUMNS = ("global_product_id", "product_id", "item_id")


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise H2RecError(f"{path}: not valid UTF-8 ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise H2RecError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None


def _mapping(data: Any, key: str, path: Path) -> dict[str, str]:
    table = data.get(key) if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise H2RecError(f"{path}: no {key!r} mapping (expected P5's datamaps.json with id2user and id2item)")
    return {str(k): str(v) for k, v in table.items()}


def read(layout: str, inputs: list[str | Path], options: PrepareOptions) -> Source:
    files = resolve_inputs(layout, inputs, ROLES)
    sequences = files["sequences"]
    lcrec = sequences.name.lower().endswith(".inter.json")
    has_lookup = "lookup" in files or "item_map" in files
    if "items_json" in files and has_lookup:
        other = files.get("lookup") or files["item_map"]
        raise H2RecError(f"{layout}: two item tables ({files['items_json']} and {other}); name the one to use")
    if "items_json" not in files and not has_lookup:
        raise H2RecError(f"{layout}: no item text: give <Name>.item.json, or products_lookup.csv with "
                         "item_id_to_int.json and datamaps.json")
    if has_lookup:
        for role, name in (("lookup", "products_lookup.csv"), ("item_map", "item_id_to_int.json"),
                           ("datamaps", "datamaps.json")):
            if role not in files:
                raise H2RecError(f"{layout}: the lookup-table join needs {name} too")
    if options.min_rating is not None:
        raise H2RecError(f"{layout}: --min-rating: {sequences.name} has no ratings")

    id2user = id2item = None
    if "datamaps" in files:
        datamaps = _json_file(files["datamaps"])
        id2user = _mapping(datamaps, "id2user", files["datamaps"])
        id2item = _mapping(datamaps, "id2item", files["datamaps"])
    original = options.ids == "original" and id2item is not None
    if original and len(set(id2item.values())) != len(id2item):
        raise H2RecError(f"{files['datamaps']}: id2item maps two sequence ids to the same item")

    def user_id(user: str, line: int) -> str:
        if not original:
            return user
        if user not in id2user:
            raise H2RecError(f"{sequences}:{line}: user {user!r} is not in {files['datamaps']} id2user")
        return id2user[user]

    def item_id(item: str, line: int) -> str:
        if not original:
            return item
        if item not in id2item:
            raise H2RecError(f"{sequences}:{line}: item {item!r} is not in {files['datamaps']} id2item")
        return id2item[item]

    # sequences: the time of an interaction is its position in the user's sequence
    log = Interactions()
    seen: set[str] = set()
    for line, user, items in _sequences(sequences, lcrec):
        if user in seen:
            raise H2RecError(f"{sequences}:{line}: user {user!r} appears twice")
        seen.add(user)
        for position, item in enumerate(items):
            log.add(user_id(user, line), item_id(item, line), float(position))

    # item text, keyed by sequence id, then by output id
    if "items_json" in files:
        offset = options.item_key_offset if options.item_key_offset is not None else (0 if lcrec else 1)
        by_sequence_id, fields, records = _items_json(files["items_json"], offset)
    else:
        by_sequence_id, fields, records = _lookup(files["lookup"], files["item_map"], id2item)
    needed = set(log.item_codes)
    items = {}
    for sequence_id, record in by_sequence_id.items():
        out = id2item.get(sequence_id, "") if original else sequence_id
        if out in needed:
            items[out] = record
    counts = {"metadata_records": records, "metadata_unused_records": records - len(items)}
    if original:
        note = f"ids: the source ids that {files['datamaps'].name} maps the sequence integers to"
    else:
        note = "ids: the sequence file's own" + ("" if options.ids == "sequence" else " (no datamaps.json to map them)")
    return Source(layout, files, log, items, fields, timed=False, keep_textless_default=True, counts=counts,
                  notes=[note])


def _sequences(path: Path, lcrec: bool):
    """``(line, user, [items])`` per user."""
    if lcrec:
        data = _json_file(path)
        if not isinstance(data, dict):
            raise H2RecError(f"{path}: expected a JSON object {{user: [item, ...]}}")
        for user, items in data.items():
            if not isinstance(items, list) or not items:
                raise H2RecError(f"{path}: user {user!r}: expected a non-empty list of items")
            bad = next((i for i in items if isinstance(i, bool) or not isinstance(i, (int, str)) or not str(i).strip()),
                       None)
            if bad is not None or not user.strip():
                raise H2RecError(f"{path}: user {user!r}: {bad!r} is not an item id (a string or an integer)")
            yield 0, user.strip(), [str(i).strip() for i in items]
        return
    for line, text in read_lines(path):
        parts = text.split()
        if not parts:
            continue
        if len(parts) == 1:
            raise H2RecError(f"{path}:{line}: user {parts[0]!r} has no items")
        yield line, parts[0], parts[1:]


def _items_json(path: Path, offset: int) -> tuple[dict[str, dict], tuple[str, ...], int]:
    data = _json_file(path)
    if not isinstance(data, dict):
        raise H2RecError(f"{path}: expected a JSON object {{key: {{field: value}}}}")
    fields: list[str] = []
    for record in data.values():
        if not isinstance(record, dict):
            continue
        fields.extend(name for name in record if name not in fields and name != "id")
    title = next((name for name in ("title", "name") if name in fields), None)
    fields = ["title", *[name for name in fields if name != title]]
    items = {}
    for key, record in data.items():
        if not str(key).strip().isdigit():
            raise H2RecError(f"{path}: key {key!r} is not an integer item index")
        if not isinstance(record, dict):
            raise H2RecError(f"{path}: item {key!r}: expected an object of fields, got {type(record).__name__}")
        text = {"title": clean(record.get(title)) if title else ""}
        text.update({name: clean(record.get(name)) for name in fields[1:]})
        items[str(int(key) + offset)] = text
    return items, tuple(fields), len(data)


def _lookup(lookup: Path, item_map_path: Path, id2item: dict[str, str]) -> tuple[dict[str, dict], tuple[str, ...], int]:
    item_map = _json_file(item_map_path)
    if not isinstance(item_map, dict):
        raise H2RecError(f"{item_map_path}: expected a JSON object {{item id: product number}}")
    header, rows = read_csv(lookup)
    join = next((name for name in JOIN_COLUMNS if name in header), None)
    if join is None:
        raise H2RecError(f"{lookup}:1: no join column ({' or '.join(JOIN_COLUMNS)}); the header has {header}")
    text_columns = [name for name in header if name and name != join]  # an unnamed column is a pandas index
    title = next((name for name in ("title", "name") if name in text_columns), None)
    fields = ("title", *[name for name in text_columns if name != title])
    by_number: dict[str, dict] = {}
    records = 0
    for line, values in rows:
        records += 1
        row = dict(zip(header, values))
        number = as_id(row[join], lookup, line, join)
        if number in by_number:
            raise H2RecError(f"{lookup}:{line}: {join} {number!r} appears twice")
        by_number[number] = {"title": row[title] if title else "",
                             **{name: row[name] for name in fields[1:]}}
    items = {}
    for sequence_id, source_id in id2item.items():
        number = item_map.get(source_id)
        if number is not None and str(number) in by_number:
            items[sequence_id] = by_number[str(number)]
    return items, fields, records
