"""semid: item text -> embeddings -> Semantic IDs (RQ-VAE, RQ, PQ, VQ, RQ-KMeans) with collision statistics.

    import semid
    s = semid.encode_catalogue("items.jsonl", "out/")   # or: semid encode items.jsonl -o out/
    s = semid.load("out/")
    s.codes, s.sid("B004756YJA"), s.embedding(dim=64)(torch.tensor([0, 1]))
    s.save_pretrained("shared/"); semid.from_pretrained("user/repo")   # the Hugging Face way
"""

from semid.code_embedding import CodeEmbedding
from semid.collisions import collision_stats, dedup_codes, format_stats
from semid.config import CollabConfig, EmbedConfig, QuantizerConfig, ReadConfig
from semid.devices import request_strict_mkl
from semid.embed import Embedder, embed_texts
from semid.errors import SemidError
from semid.hub import from_pretrained
from semid.items import ItemSet, read_items
from semid.pipeline import embed_catalogue, encode_catalogue
from semid.quantize import Quantizer, build_quantizer, load_quantizer, relative_error
from semid.semantic_ids import SemanticIDs, load
from semid.vectors import read_embeddings
from semid.version import __version__

__all__ = [
    "__version__",
    "CodeEmbedding",
    "CollabConfig",
    "EmbedConfig",
    "Embedder",
    "ItemSet",
    "QuantizerConfig",
    "Quantizer",
    "ReadConfig",
    "SemanticIDs",
    "SemidError",
    "build_quantizer",
    "collision_stats",
    "dedup_codes",
    "embed_catalogue",
    "embed_texts",
    "encode_catalogue",
    "format_stats",
    "from_pretrained",
    "load",
    "load_quantizer",
    "read_embeddings",
    "read_items",
    "relative_error",
]

# before the process's first matrix product, which fixes MKL's rounding mode for good (devices.py)
request_strict_mkl()
