"""A generated catalogue with the structure H2Rec relies on, for the demo and the tests.

This is **generated data**, not a real dataset. It is built so that semantic IDs have something to
find and hash IDs have something to miss:

- a taxonomy (8 departments x 4 categories x 3 product types) and brands that specialise in a
  couple of departments, which together write each item's text;
- long-tail popularity: item weights follow a Zipf law over a random order, so the top 20% of
  items take most interactions and many items are seen only a few times;
- sequential taste: each user has a favourite and a second department; the next item tends to
  stay in the current category (then department, then brand), with occasional jumps.

Only text-level structure links a rare item to the popular items of its category, which is what
the SID branch and the code-guided alignment can exploit. ``generate`` is deterministic per seed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TAXONOMY = {
    "Skin Care": {"Moisturizers": ["Face Cream", "Night Cream", "Gel Moisturizer"],
                  "Cleansers": ["Foaming Cleanser", "Cleansing Oil", "Micellar Water"],
                  "Serums": ["Vitamin C Serum", "Retinol Serum", "Hyaluronic Serum"],
                  "Sun Care": ["Sunscreen Lotion", "Sun Stick", "After-Sun Gel"]},
    "Hair Care": {"Shampoo": ["Clarifying Shampoo", "Volumizing Shampoo", "Dry Shampoo"],
                  "Conditioner": ["Leave-In Conditioner", "Deep Conditioner", "Detangler"],
                  "Styling": ["Hair Spray", "Styling Mousse", "Texturizing Paste"],
                  "Hair Tools": ["Flat Iron", "Curling Wand", "Blow Dryer"]},
    "Makeup": {"Face": ["Foundation", "Concealer", "Setting Powder"],
               "Eyes": ["Mascara", "Eyeliner", "Eyeshadow Palette"],
               "Lips": ["Matte Lipstick", "Lip Gloss", "Lip Liner"],
               "Cheeks": ["Blush", "Bronzer", "Highlighter"]},
    "Fragrance": {"Women's Perfume": ["Eau de Parfum", "Body Mist", "Perfume Oil"],
                  "Men's Cologne": ["Eau de Toilette", "Aftershave Splash", "Cologne Spray"],
                  "Home Scents": ["Scented Candle", "Reed Diffuser", "Room Spray"],
                  "Gift Sets": ["Mini Perfume Set", "Travel Spray Set", "Discovery Kit"]},
    "Bath & Body": {"Body Wash": ["Shower Gel", "Body Scrub", "Bath Oil"],
                    "Body Lotion": ["Body Butter", "Hand Cream", "Foot Cream"],
                    "Bath Soaks": ["Bath Bomb", "Bath Salts", "Bubble Bath"],
                    "Deodorant": ["Deodorant Stick", "Antiperspirant Spray", "Deodorant Cream"]},
    "Nails": {"Nail Polish": ["Gel Polish", "Nail Lacquer", "Top Coat"],
              "Nail Care": ["Cuticle Oil", "Nail Strengthener", "Polish Remover"],
              "Nail Tools": ["Nail File", "Cuticle Pusher", "Nail Clipper"],
              "Nail Art": ["Nail Stickers", "Rhinestone Kit", "Stamping Plate"]},
    "Tools & Accessories": {"Brushes": ["Foundation Brush", "Powder Brush", "Brush Set"],
                            "Sponges": ["Beauty Blender", "Sponge Set", "Silicone Applicator"],
                            "Mirrors": ["Lighted Mirror", "Compact Mirror", "Magnifying Mirror"],
                            "Bags": ["Makeup Bag", "Train Case", "Toiletry Pouch"]},
    "Men's Grooming": {"Shaving": ["Shaving Cream", "Safety Razor", "Pre-Shave Oil"],
                       "Beard Care": ["Beard Oil", "Beard Balm", "Beard Trimmer"],
                       "Men's Skin": ["Face Wash for Men", "Men's Moisturizer", "Eye Roller"],
                       "Men's Hair": ["Pomade", "Hair Clay", "Anti-Dandruff Shampoo"]},
}
BRANDS = ["Aveline", "Borea", "Calyx", "Dermaly", "Elara", "Fennick", "Glossier Lab", "Halcyon",
          "Iris & Oak", "Juniper", "Kaori", "Lumen", "Maison Vert", "Nordic Dew", "Orla", "Petalry",
          "Quill", "Rosette", "Sable", "Tamsin", "Umbra", "Velour", "Wren", "Xena Pro", "Yarrow", "Zephyr"]
VARIANTS = ["Lavender", "Unscented", "Travel Size", "Rose", "Charcoal", "Coconut", "Sensitive",
            "Extra Strength", "Citrus", "Matte", "Hydrating", "Organic", "Vanilla", "Mint", "SPF 30",
            "Tea Tree", "Argan", "Shimmer", "Classic", "Professional"]


@dataclass(frozen=True)
class SyntheticConfig:
    n_items: int = 1500
    n_users: int = 3000
    mean_length: float = 10.0  # at least 5 items per user, as in 5-core data
    max_length: int = 60
    zipf: float = 1.1  # popularity exponent; larger = longer tail
    seed: int = 0


def _items(cfg: SyntheticConfig, rng: np.random.Generator) -> list[dict]:
    departments = list(TAXONOMY)
    brand_departments = {b: set(rng.choice(len(departments), size=2, replace=False).tolist()) for b in BRANDS}
    categories = [(d, c, types) for d in departments for c, types in TAXONOMY[d].items()]
    items, seen = [], set()
    while len(items) < cfg.n_items:
        d_name, c_name, types = categories[rng.integers(len(categories))]
        dept = departments.index(d_name)
        brands = [b for b in BRANDS if dept in brand_departments[b]] or BRANDS
        brand = brands[rng.integers(len(brands))]
        title = f"{brand} {VARIANTS[rng.integers(len(VARIANTS))]} {types[rng.integers(len(types))]}"
        if rng.random() < 0.3:
            title += f", {int(rng.choice([1, 2, 4, 8, 12, 16]))} oz"
        if title in seen:
            continue
        seen.add(title)
        items.append({"id": f"i{len(items) + 1:05d}", "title": title, "brand": brand,
                      "category": f"{d_name} > {c_name}"})
    return items


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> tuple[list[dict], list[tuple[str, str, int]]]:
    """``(items, interactions)``: item dicts (id, title, brand, category) and (user, item, timestamp) rows."""
    rng = np.random.default_rng(cfg.seed)
    items = _items(cfg, rng)
    n = len(items)
    weight = 1.0 / np.arange(1, n + 1) ** cfg.zipf
    weight = weight[rng.permutation(n)]  # popularity unrelated to item order

    def index_by(key):
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(key(item), []).append(i)
        return {k: np.array(v) for k, v in groups.items()}

    by_category = index_by(lambda it: it["category"])
    by_department = index_by(lambda it: it["category"].split(" > ")[0])
    by_brand = index_by(lambda it: it["brand"])
    departments = list(by_department)
    dept_weight = np.array([weight[by_department[d]].sum() for d in departments])
    dept_weight /= dept_weight.sum()

    def pick(pool: np.ndarray, taken: set[int]) -> int | None:
        pool = np.array([i for i in pool if i not in taken])
        if not len(pool):
            return None
        p = weight[pool] / weight[pool].sum()
        return int(pool[rng.choice(len(pool), p=p)])

    rows, clock = [], 0
    all_items = np.arange(n)
    for u in range(cfg.n_users):
        fav, second = rng.choice(len(departments), size=2, replace=False, p=dept_weight)
        length = min(cfg.max_length, 5 + int(rng.geometric(1.0 / max(cfg.mean_length - 4, 1.0))) - 1)
        taken: set[int] = set()
        current = pick(by_department[departments[fav]], taken)
        seq = [current]
        taken.add(current)
        while len(seq) < length:
            here = items[current]
            roll = rng.random()
            if roll < 0.5:
                pool = by_category[here["category"]]
            elif roll < 0.65:
                pool = by_brand[here["brand"]]
            elif roll < 0.8:
                pool = by_department[here["category"].split(" > ")[0]]
            elif roll < 0.9:
                pool = by_department[departments[second if rng.random() < 0.6 else fav]]
            else:
                pool = all_items
            nxt = pick(pool, taken)
            if nxt is None:
                nxt = pick(all_items, taken)
            seq.append(nxt)
            taken.add(nxt)
            current = nxt
        for item in seq:
            clock += 1
            rows.append((f"u{u + 1:05d}", items[item]["id"], clock))
    return items, rows


def write(folder: str | Path, cfg: SyntheticConfig = SyntheticConfig()) -> tuple[Path, Path]:
    """Writes ``items.jsonl`` and ``interactions.csv`` (user_id,item_id,timestamp) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items, rows = generate(cfg)
    items_path, inter_path = folder / "items.jsonl", folder / "interactions.csv"
    with items_path.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")
    with inter_path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "timestamp"])
        writer.writerows(rows)
    return items_path, inter_path
