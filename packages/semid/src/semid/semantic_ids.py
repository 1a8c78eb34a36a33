"""The codes part of an OUT_DIR (semid.safetensors, semantic_ids.jsonl, the RecBole export) and
`load(OUT_DIR)`, the read-only view other packages code against.

semid.safetensors holds the tensor `codes` [n, n_columns] (int64), one tensor `codebook.<l>` per
column that has a codebook (float32 [K_l, d_l]), and metadata: `format`, `ids` (JSON list, row
order), `codebook_sizes` (JSON list) and `dedup` ("true"/"false").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch

from semid.code_embedding import CodeEmbedding
from semid.errors import fail
from semid.io import (
    CODES,
    CODES_FORMAT,
    EMBEDDINGS,
    STATS,
    TEXTS,
    check_complete,
    jsonl_bytes,
    metadata_json,
    read_json,
    read_tensor_file,
    tensors_to_bytes,
)
from semid.items import read_texts
from semid.vectors import read_embeddings


def codes_bytes(
    ids: list[str],
    codes: torch.Tensor,
    codebook_sizes: list[int],
    codebooks: list[torch.Tensor | None],
    dedup: bool,
    quantizer: str,
) -> bytes:
    """semid.safetensors contents (see the module docstring)."""
    tensors = {"codes": codes.long()}
    tensors.update({f"codebook.{level}": cb.float() for level, cb in enumerate(codebooks) if cb is not None})
    metadata = {
        "format": CODES_FORMAT,
        "ids": json.dumps(ids, ensure_ascii=False),
        "codebook_sizes": json.dumps([int(k) for k in codebook_sizes]),
        "dedup": "true" if dedup else "false",
        "quantizer": quantizer,
    }
    return tensors_to_bytes(tensors, metadata)


def semantic_ids_jsonl(ids: list[str], codes: torch.Tensor) -> bytes:
    """semantic_ids.jsonl: one {"id": ..., "sid": [c1, ..., cL]} per item, in row order."""
    return jsonl_bytes({"id": item_id, "sid": row} for item_id, row in zip(ids, codes.tolist()))


def recbole_item(ids: list[str], codes: torch.Tensor, id_field: str = "item_id") -> bytes:
    """A RecBole atomic .item file with a `sid:token_seq` column.

    Tokens are `<level>_<code>` (1-based level), so code 7 at level 1 and code 7 at level 2 stay
    different tokens in RecBole's shared token_seq vocabulary.
    """
    lines = [f"{id_field}:token\tsid:token_seq"]
    for item_id, row in zip(ids, codes.tolist()):
        tokens = " ".join(f"{level}_{code}" for level, code in enumerate(row, start=1))
        lines.append(f"{item_id}\t{tokens}")
    return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True, eq=False)
class SemanticIDs:
    """Read-only view of an OUT_DIR: row i of `codes` is item `ids[i]`."""

    out_dir: Path
    ids: list[str]
    codes: torch.Tensor  # LongTensor [n_items, n_columns]
    codebook_sizes: list[int]  # per column (dedup column: its largest group)
    codebooks: list[torch.Tensor | None]  # per column, float32 [K_l, d_l]; None for the dedup column
    embeddings: torch.Tensor | None  # text embeddings [n_items, d_text] the codes came from
    texts: list[str] | None  # item texts that were embedded (None when embeddings were given)
    dedup: bool  # whether the last column is the dedup column
    stats: dict[str, Any]  # stats.json
    _rows: dict[str, int] = field(repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rows", {item_id: row for row, item_id in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_columns(self) -> int:
        return int(self.codes.shape[1])

    def index(self, item_id: str) -> int:
        """Row of an item id."""
        try:
            return self._rows[item_id]
        except KeyError:
            raise KeyError(f"item id {item_id!r} is not in {self.out_dir / CODES} ({len(self.ids)} items)") from None

    def sid(self, item_id: str) -> list[int]:
        """The code tuple of an item id."""
        return self.codes[self.index(item_id)].tolist()

    def embedding(
        self,
        dim: int | None = None,
        combine: str = "sum",
        padding_idx0: bool = False,
        init_std: float | None = None,
    ) -> CodeEmbedding:
        """A fresh CodeEmbedding over these codes, tables initialised from the codebooks."""
        return CodeEmbedding(
            self.codes, self.codebook_sizes, self.codebooks,
            dim=dim, combine=combine, padding_idx0=padding_idx0, init_std=init_std,
        )

    def save_pretrained(self, save_dir: str | PathLike, repo_id: str | None = None) -> Path:
        """A self-contained copy of this OUT_DIR plus a model card (README.md) in `save_dir`,
        loadable with `semid.from_pretrained(save_dir)` (see semid.hub)."""
        from semid.hub import save_pretrained

        return save_pretrained(self, save_dir, repo_id=repo_id)

    def push_to_hub(self, repo_id: str, token: str | None = None, private: bool | None = None) -> str:
        """Upload save_pretrained's folder to the Hugging Face Hub repo `repo_id` (created if needed);
        returns the commit's URL. The only semid call besides from_pretrained that uses the network."""
        from semid.hub import push_to_hub

        return push_to_hub(self, repo_id, token=token, private=private)


def load(out_dir: str | PathLike) -> SemanticIDs:
    """Open an OUT_DIR written by `semid encode` (or encode_catalogue).

    Refuses (SemidError) a folder whose last commit was interrupted (semid.io.check_complete).
    """
    out_dir = Path(out_dir)
    path = out_dir / CODES
    if not path.is_file():
        raise fail(path, None, None, "no such file: is this an OUT_DIR of `semid encode`?")
    check_complete(out_dir)
    tensors, metadata = read_tensor_file(path)
    if metadata.get("format") != CODES_FORMAT:
        raise fail(path, None, "format", f"is {metadata.get('format')!r}, expected {CODES_FORMAT!r}")
    ids = metadata_json(path, metadata, "ids")
    sizes = metadata_json(path, metadata, "codebook_sizes")
    codes = tensors.get("codes")
    if codes is None or codes.ndim != 2 or codes.shape != (len(ids), len(sizes)):
        raise fail(path, None, "codes", f"must be [{len(ids)}, {len(sizes)}] to match ids and codebook_sizes")
    codebooks = [tensors.get(f"codebook.{level}") for level in range(len(sizes))]
    embeddings = None
    if (out_dir / EMBEDDINGS).is_file():
        stored = read_embeddings(out_dir / EMBEDDINGS)
        if stored.ids is not None and stored.ids != ids:
            raise fail(out_dir / EMBEDDINGS, None, "ids", f"do not match the ids of {path} (stale file?)")
        embeddings = stored.matrix
    texts = None
    if (out_dir / TEXTS).is_file():
        text_ids, texts = read_texts(out_dir / TEXTS)
        if text_ids != ids:
            raise fail(out_dir / TEXTS, None, "id", f"values do not match the ids of {path} (stale file?)")
    stats = read_json(out_dir / STATS) if (out_dir / STATS).is_file() else {}
    check_complete(out_dir)  # again: a commit that began while we read may have mixed what we read
    return SemanticIDs(
        out_dir=out_dir,
        ids=ids,
        codes=codes.long(),
        codebook_sizes=[int(k) for k in sizes],
        codebooks=codebooks,
        embeddings=embeddings,
        texts=texts,
        dedup=metadata.get("dedup") == "true",
        stats=stats,
    )
