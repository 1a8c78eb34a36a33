"""Write catalogue.jsonl: a small synthetic beauty catalogue (600 items) for trying `semid encode`.

The items are made up (no real product data is shipped). Deterministic: re-running rewrites the
same file.

    python packages/semid/examples/make_catalogue.py
    semid encode packages/semid/examples/catalogue.jsonl -o out/semid
"""

from __future__ import annotations

import json
import random
from pathlib import Path

BRANDS = ["Aurelle", "Bloomwell", "Cindera", "Dewlane", "Everlyn", "Fioré", "Glossaria", "Hazelmoor",
          "Iridea", "Juniper & Co"]
PRODUCTS = {
    "Makeup": {
        "Lips": ["matte lipstick", "lip gloss", "lip liner", "tinted lip balm"],
        "Eyes": ["volumising mascara", "eyeshadow palette", "gel eyeliner", "brow pencil"],
        "Face": ["liquid foundation", "setting powder", "cream blush", "concealer stick"],
    },
    "Skin Care": {
        "Moisturisers": ["night cream", "day cream SPF 30", "hydrating gel", "rich body butter"],
        "Cleansers": ["foaming cleanser", "micellar water", "cleansing balm", "exfoliating scrub"],
        "Sun": ["sunscreen SPF 50", "after-sun lotion", "mineral sunscreen stick", "tinted sunscreen"],
    },
    "Hair Care": {
        "Shampoo": ["anti-dandruff shampoo", "volumising shampoo", "dry shampoo", "colour-safe shampoo"],
        "Conditioner": ["repair conditioner", "leave-in conditioner", "hair mask", "detangling spray"],
    },
    "Nails": {
        "Polish": ["nail polish", "gel top coat", "base coat", "quick-dry drops"],
    },
    "Fragrance": {
        "Women": ["eau de parfum", "eau de toilette", "body mist"],
        "Men": ["aftershave balm", "eau de toilette for men", "deodorant spray"],
    },
}
SHADES = ["ruby red", "nude beige", "rose pink", "coral", "plum", "ivory", "caramel", "midnight black"]
SIZES = ["15 ml", "30 ml", "50 ml", "100 ml", "200 ml", "0.5 oz", "1.7 oz"]
QUALITIES = ["long-lasting", "vegan", "fragrance-free", "paraben-free", "dermatologist-tested"]
PURPOSES = ["for sensitive skin", "with vitamin E", "with argan oil", "for everyday use"]


def catalogue(n: int = 600, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    kinds = [(top, sub, kind) for top, subs in PRODUCTS.items() for sub, names in subs.items() for kind in names]
    items = []
    for i in range(n):
        top, sub, kind = rng.choice(kinds)
        brand = rng.choice(BRANDS)
        shade = f" in {rng.choice(SHADES)}" if top in ("Makeup", "Nails") else ""
        items.append({
            "id": f"SKU{i:05d}",
            "title": f"{brand} {kind}{shade}, {rng.choice(SIZES)}",
            "brand": brand,
            "categories": ["Beauty", top, sub],
            "description": f"A {rng.choice(QUALITIES)} {kind} {rng.choice(PURPOSES)}.",
        })
    return items


if __name__ == "__main__":
    path = Path(__file__).with_name("catalogue.jsonl")
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in catalogue()), encoding="utf-8")
    print(path)
