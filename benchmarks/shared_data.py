"""The four real datasets of ../shared/data, as `semid` item files and `h2rec` interaction files.

Each dataset is read in place (never copied into the repository). Item files for `semid encode`
are written once to benchmarks/work/<dataset>/items.jsonl (gitignored), with the same ids the
interaction file uses, so `h2rec train --interactions ... --semid ...` needs no mapping.

| dataset | interactions (layout) | item text |
|---|---|---|
| beauty | amazon-beauty/sequential_data.txt (P5 sequences) | title |
| yelp | yelp/sequential_data.txt (P5 sequences) | name + categories |
| scientific | amazon-scientific/Scientific.inter.json (LC-Rec JSON) | title, brand, categories, description |
| games | amazon-games/Games-6k.test.inter (RecBole atomic, one row per user) | title |
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("H2REC_DATA", REPO.parent / "shared" / "data"))
WORK = REPO / "benchmarks" / "work"


def beauty_items(data: Path) -> list[dict]:
    """12,101 items: sequence id ("1".."12101") -> ASIN -> dh-r product id -> title (README join)."""
    folder = data / "amazon-beauty"
    id2asin = json.loads((folder / "datamaps.json").read_text(encoding="utf-8"))["id2item"]
    asin2int = json.loads((folder / "item_id_to_int.json").read_text(encoding="utf-8"))
    int2title = {}
    with open(folder / "products_lookup.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            int2title[int(row["global_product_id"])] = row["name"]
    return [{"id": item_id, "title": int2title[asin2int[asin]]}
            for item_id, asin in sorted(id2asin.items(), key=lambda kv: int(kv[0]))]


def yelp_items(data: Path) -> list[dict]:
    """20,033 businesses: `Yelp.item.json` key k is sequence item id k + 1 (README join check)."""
    meta = json.loads((data / "yelp" / "Yelp.item.json").read_text(encoding="utf-8"))
    return [{"id": str(int(k) + 1), "name": v["title"], "categories": v["description"]}
            for k, v in sorted(meta.items(), key=lambda kv: int(kv[0]))]


def scientific_items(data: Path) -> list[dict]:
    meta = json.loads((data / "amazon-scientific" / "Scientific.item.json").read_text(encoding="utf-8"))
    return [{"id": k, "title": v["title"], "brand": v["brand"], "categories": v["categories"],
             "description": v["description"]} for k, v in sorted(meta.items(), key=lambda kv: int(kv[0]))]


def games_items(data: Path) -> list[dict]:
    rows = []
    with open(data / "amazon-games" / "Games-6k.item", encoding="utf-8") as handle:
        next(handle)  # header: item_id:token  title:token_seq
        for line in handle:
            item_id, title = line.rstrip("\n").split("\t", 1)
            rows.append({"id": item_id, "title": title})
    return rows


@dataclass(frozen=True)
class RealDataset:
    name: str
    read_items: Callable[[Path], list[dict]]
    template: str  # semid --template: the item text
    interactions: str  # path below the data root
    n_items: int  # as the dataset README states; checked after loading


DATASETS = {
    "beauty": RealDataset("beauty", beauty_items, "{title}", "amazon-beauty/sequential_data.txt", 12101),
    "yelp": RealDataset("yelp", yelp_items, "{name}. Categories: {categories}", "yelp/sequential_data.txt", 20033),
    "scientific": RealDataset("scientific", scientific_items,
                              "{title}. Brand: {brand}. Categories: {categories}. {description}",
                              "amazon-scientific/Scientific.inter.json", 4344),
    "games": RealDataset("games", games_items, "{title}", "amazon-games/Games-6k.test.inter", 16859),
}


def items_file(name: str, data: Path = DEFAULT_DATA, work: Path = WORK) -> Path:
    """benchmarks/work/<name>/items.jsonl, written once (atomically) from the shared data."""
    ds = DATASETS[name]
    path = work / name / "items.jsonl"
    if not path.is_file():
        items = ds.read_items(Path(data))
        if len(items) != ds.n_items:
            raise SystemExit(f"{name}: read {len(items)} items from {data}, the README says {ds.n_items}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for item in items:
                handle.write(json.dumps(item, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return path


def interactions_file(name: str, data: Path = DEFAULT_DATA) -> Path:
    return Path(data) / DATASETS[name].interactions
