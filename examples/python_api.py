"""The Python API end to end, on a small generated catalogue (about a minute on 2 CPU cores).

    python examples/python_api.py [OUT_DIR]
"""

import sys
from pathlib import Path

import h2rec
import semid
from h2rec.synthetic import SyntheticConfig, write

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/example")

# 1. a generated catalogue: items.jsonl (id, title, brand, category) and interactions.csv
items, interactions = write(out / "data", SyntheticConfig(n_items=600, n_users=1200))

# 2. semantic IDs: MiniLM embeddings of "title. Category: ..." -> 3 x 64 RQ-VAE codes
sids = semid.encode_catalogue(items, out / "semid", read=semid.ReadConfig(template="{title}. Category: {category}"),
                              quantizer=semid.QuantizerConfig(levels=3, codebook_size=64))
print(semid.format_stats(sids.stats["collisions"]))

# 3. H2Rec on a SASRec backbone; every field is a typed dataclass (h2rec.config)
config = h2rec.build_config(overrides={
    "data.interactions": str(interactions), "data.semid": str(out / "semid"),
    "model.kind": "h2rec", "model.backbone": "sasrec", "train.epochs": 20, "eval.negatives": 100,
})
results = h2rec.train(config, out / "h2rec", resume=(out / "h2rec" / "config.json").is_file())
test = results["test"]["full"]  # all items ranked; "full_unseen" leaves the user's seen items out
print("test NDCG@10, full ranking: " + ", ".join(f"{group} {test[group]['NDCG@10']:.4f} ({test[group]['n']} users)"
                                                  for group in ("overall", "head", "tail")))

# 4. recommendations for one user, with item text
print("top 5 next items for user u00001 (item id, score = the model's logit, text):")
for rank, row in enumerate(h2rec.load(out / "h2rec").recommend("u00001", k=5), start=1):
    print(f"{rank}. {row['item_id']}  {row['score']:+.3f}  {row['text']}")
