"""Codes that know about behaviour: collaborative item vectors quantized together with the text embeddings.

The scheme (docs/semid.md §3.3). Each item's quantizer input is

    x_i = [ t_i / |t_i| ; w * c_i / |c_i| ]        (d_text + d_collab columns)

with t_i its text embedding, c_i its collaborative vector (e.g. the ID embedding of a trained SASRec,
as `h2rec export` writes it) and w = CollabConfig.weight. With both parts of unit norm the squared
distance between two inputs is |Δt|² + w²|Δc|², so w² is the exchange rate between meaning and
behaviour, whatever the two widths (k-means assigns by this distance; the RQ-VAE's reconstruction
loss sums it). An item without a collaborative vector (a cold item: no training interaction) gets
zeros there: it sits at distance w from every warm item's behaviour part, not at some arbitrary one,
so its text places it. w = 0 leaves the part out entirely, so the quantizer sees exactly the text
embeddings and gives the text-only codes.

Why not LETTER (Wang et al., CIKM 2024, arXiv:2405.07314) itself: LETTER keeps the text embedding as
the RQ-VAE's input and adds a contrastive loss pulling each item's quantized embedding towards its
collaborative embedding, and ETEGRec (Liu et al., SIGIR 2025, arXiv:2409.05546) trains the tokenizer
and the recommender together. Both change one quantizer's training. Concatenation is the simplest
scheme with the same aim (items that are bought together should share code prefixes), works for every
quantizer kind (rqvae, rq, pq, vq, rqkmeans) and leaves quantize/ as it is.

Ids are matched by id, never by row. The fused matrix is written a block of rows at a time into an
unlinked temp file in OUT_DIR and memory-mapped, as the text path's matrix is (semid.shards), so a
catalogue's [n, d_text + d_collab] matrix is never on the heap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from semid.config import CollabConfig
from semid.errors import fail
from semid.io import read_json
from semid.matrix_file import ROWS_PER_WRITE
from semid.quantize.base import check_embeddings
from semid.vectors import load_matrix, metadata_ids, read_ids

log = logging.getLogger(__name__)

# what `h2rec export RUN -o DIR` writes (h2rec.export); semid reads the folder without importing h2rec
EXPORT_VECTORS = "item_vectors.npy"
EXPORT_IDS = "item_ids.json"
EXPORT_MANIFEST = "manifest.json"
SCHEME = "concat: [text / |text| ; weight * collab / |collab|], zeros for items without a vector"


@dataclass(frozen=True)
class CollabVectors:
    """A checked collaborative matrix and its row ids, as read from a file or an `h2rec export` folder."""

    path: Path  # as given: the folder or the file
    vectors_file: Path
    ids_file: Path | None  # None: the ids came from the .safetensors file's metadata
    matrix: torch.Tensor  # float32 [m, d_collab], finite
    ids: list[str]  # row r is item ids[r]
    layout: list[str] | None  # an export's vector parts (manifest.json), e.g. ["hid"]; None: not an export


def read_collab(config: CollabConfig) -> CollabVectors:
    """Read and check the collaborative vectors: 2-D floats, one id per row, no repeated id, no NaN/inf.
    Every error names the file (and the row and id where there is one)."""
    path = Path(config.path)
    layout = None
    if path.is_dir():
        if config.ids is not None:
            raise fail(path, None, None, f"is an `h2rec export` folder, whose ids are its {EXPORT_IDS}; "
                                         "drop --collab-ids")
        vectors_file, ids_file = path / EXPORT_VECTORS, path / EXPORT_IDS
        for needed in (vectors_file, ids_file):
            if not needed.is_file():
                raise fail(path, None, None, f"is a folder without {needed.name}: --collab takes an `h2rec export` "
                                             f"folder ({EXPORT_VECTORS} + {EXPORT_IDS}) or a .npy / .safetensors file")
        layout = _export_layout(path / EXPORT_MANIFEST)
    elif path.is_file():
        vectors_file, ids_file = path, (Path(config.ids) if config.ids is not None else None)
    else:
        raise fail(path, None, None, "no such file or folder (--collab)")
    matrix, metadata = load_matrix(vectors_file)
    if ids_file is not None:
        ids, ids_source = read_ids(ids_file), ids_file
    else:
        ids, ids_source = metadata_ids(vectors_file, metadata), vectors_file
        if ids is None:
            raise fail(vectors_file, None, "ids", "are absent: pass --collab-ids FILE (one id per line, or a "
                                                  ".json list) to say which row is which item")
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise fail(vectors_file, None, "embeddings",
                   f"must be a non-empty 2-D matrix [items, dim], got shape {tuple(matrix.shape)}")
    if len(ids) != matrix.shape[0]:
        raise fail(ids_source, None, "ids", f"lists {len(ids)} ids but {vectors_file} has {matrix.shape[0]} rows")
    _check_finite(matrix, ids, vectors_file)
    matrix = check_embeddings(matrix, vectors_file)  # float32; its own checks have passed above
    return CollabVectors(path=path, vectors_file=vectors_file, ids_file=ids_file, matrix=matrix, ids=ids,
                         layout=layout)


def _check_finite(matrix: torch.Tensor, ids: list[str], path: Path) -> None:
    if not matrix.is_floating_point():
        return  # integers are finite; check_embeddings rejects them as not floats
    bad = (~torch.isfinite(matrix).all(dim=1)).nonzero().flatten()
    if len(bad):
        row = int(bad[0])
        kind = "NaN" if bool(torch.isnan(matrix[row]).any()) else "an infinite value"
        raise fail(path, row + 1, "embeddings",
                   f"row {row + 1} (id {ids[row]!r}) holds {kind} ({len(bad)} bad row(s) in all)")


def _export_layout(manifest: Path) -> list[str] | None:
    """The vector parts an `h2rec export` manifest lists ("hid", "sid", ...), or None without one."""
    if not manifest.is_file():
        return None
    data = read_json(manifest)
    layout = data.get("layout") if isinstance(data, dict) else None
    if not isinstance(layout, list):
        return None
    return [str(part.get("part")) for part in layout if isinstance(part, dict)]


@dataclass(frozen=True)
class Alignment:
    """Which collaborative row belongs to each catalogue item."""

    rows: torch.Tensor  # int64 [n]: row of the item's vector, -1 for a cold item
    covered: int  # items with a vector
    zero_vectors: int  # of them, vectors of norm 0 (they add nothing, like a cold item's zeros)


def align(vectors: CollabVectors, ids: list[str], catalogue: str | PathLike) -> Alignment:
    """Match the vectors to the catalogue's ids by id. A vector for an id the catalogue lacks is an error
    (an id-space mix-up, e.g. row numbers against item ids); a catalogue item without one is cold."""
    position = {item_id: row for row, item_id in enumerate(ids)}
    unknown = [(row, item_id) for row, item_id in enumerate(vectors.ids) if item_id not in position]
    if unknown:
        row, item_id = unknown[0]
        source = vectors.ids_file or vectors.vectors_file
        by_line = vectors.ids_file is not None and vectors.ids_file.suffix != ".json"  # one id per line
        raise fail(source, row + 1 if by_line else None, "ids", f"entry {row + 1} names item {item_id!r}, which is "
                   f"not in the catalogue {catalogue} ({len(unknown)} of {len(vectors.ids)} ids are unknown)")
    rows = torch.full((len(ids),), -1, dtype=torch.long)
    rows[torch.tensor([position[i] for i in vectors.ids], dtype=torch.long)] = torch.arange(len(vectors.ids))
    zero = int((vectors.matrix.norm(dim=1) == 0).sum())
    return Alignment(rows=rows, covered=len(vectors.ids), zero_vectors=zero)


def fuse(text: torch.Tensor, vectors: CollabVectors, alignment: Alignment, weight: float,
         folder: str | PathLike) -> torch.Tensor:
    """The quantizer's input [n, d_text + d_collab] (module docstring), memory-mapped from an unlinked temp
    file in `folder`; `text` itself when weight is 0."""
    if weight == 0:
        return text  # not a zero block: it would change the rqvae's input width, hence its initialisation
    n, d_text = text.shape
    behaviour = weight * F.normalize(vectors.matrix, dim=1)  # [m, d_collab]; a zero vector stays zero
    width = d_text + behaviour.shape[1]
    # Deleted as soon as it is created (POSIX): the map keeps the pages until the quantizer lets go of them,
    # and a killed run leaves nothing behind.
    with tempfile.TemporaryFile(dir=folder, prefix=".collab-input.", suffix=".tmp") as handle:
        fused = np.memmap(handle, dtype=np.float32, mode="w+", shape=(n, width))
    for start in range(0, n, ROWS_PER_WRITE):
        stop = min(start + ROWS_PER_WRITE, n)
        rows = alignment.rows[start:stop]
        block = torch.zeros(stop - start, behaviour.shape[1])  # cold items keep these zeros
        warm = rows >= 0
        block[warm] = behaviour[rows[warm]]
        fused[start:stop, :d_text] = F.normalize(text[start:stop].float(), dim=1).numpy()
        fused[start:stop, d_text:] = block.numpy()
    return torch.from_numpy(fused)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def collab_stats(vectors: CollabVectors, alignment: Alignment, weight: float, items: int,
                 input_dim: int) -> dict[str, Any]:
    """stats.json's `collab`: the source (paths, SHA-256), the weight and the coverage."""
    return {
        "scheme": SCHEME,
        "path": str(vectors.path),
        "vectors": str(vectors.vectors_file),
        "sha256": sha256_of(vectors.vectors_file),
        "ids": str(vectors.ids_file) if vectors.ids_file is not None else None,
        "ids_sha256": sha256_of(vectors.ids_file) if vectors.ids_file is not None else None,
        "export_layout": vectors.layout,
        "weight": weight,
        "dim": int(vectors.matrix.shape[1]),
        "quantizer_input_dim": input_dim,
        "covered_items": alignment.covered,
        "cold_items": items - alignment.covered,
        "coverage": alignment.covered / items,
        "zero_vectors": alignment.zero_vectors,
    }


def collab_warnings(vectors: CollabVectors, alignment: Alignment, items: int) -> list[str]:
    """What a user should hear about: cold items, zero vectors, an export whose vectors are not pure IDs."""
    warnings = []
    cold = items - alignment.covered
    if cold:
        warnings.append(f"{vectors.path}: {cold} of {items} item(s) have no collaborative vector (cold items): "
                        "their collaborative part is zeros, so their text places them")
    if alignment.zero_vectors:
        warnings.append(f"{vectors.vectors_file}: {alignment.zero_vectors} vector(s) are all zeros and add nothing")
    if vectors.layout is not None and vectors.layout != ["hid"]:
        # an h2rec or sid run's item vectors hold code embeddings: the new codes would learn from old codes
        warnings.append(f"{vectors.path}: the export's item vectors hold the parts {json.dumps(vectors.layout)}, "
                        "not an ID embedding alone; export a model.kind 'hid' run for pure behaviour")
    return warnings
