"""The end-to-end jobs behind the CLI: items -> embeddings (`embed_catalogue`) and
items or embeddings -> Semantic IDs in an OUT_DIR (`encode_catalogue`).

Both hold OUT_DIR's lock (semid.io.one_writer) from the start, so a busy, unwritable or
misnamed OUT_DIR fails before the slow embedding and fit. All inputs are read and checked, and all
heavy work is done, before the first output file goes to OUT_DIR; the files are then staged and
committed together (semid.io.StagedOutput, whose docstring explains what a kill mid-commit leaves).
Texts are embedded chunk by chunk into shards in OUT_DIR's work area (semid.shards), so a killed run
resumes there and the matrix is memory-mapped; the area is removed once the files are committed.

Under torchrun, rank 0 runs these jobs and the other ranks run `embed_share_of` (semid.distributed).
With `collab`, the quantizer sees the text embeddings beside collaborative item vectors (semid.collab),
while OUT_DIR's embeddings.safetensors keeps the text embeddings alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch

from semid.collab import align, collab_stats, collab_warnings, fuse, read_collab
from semid.collisions import collision_stats, dedup_codes
from semid.config import CollabConfig, EmbedConfig, QuantizerConfig, ReadConfig, config_to_dict
from semid.distributed import Group, Order
from semid.embed import DEFAULT_MODEL_NAME, cache_path, default_cache_dir, embed_texts
from semid.errors import SemidError, fail
from semid.io import (
    CODES,
    EMBEDDINGS,
    RECBOLE_ITEM,
    SEMANTIC_IDS,
    STATS,
    TEXTS,
    StagedOutput,
    json_bytes,
    one_writer,
    remove_stale_temps,
)
from semid.items import ItemSet, read_items, texts_jsonl
from semid.quantize import build_quantizer, reconstruction_error
from semid.quantize.kmeans import resolve_backend
from semid.semantic_ids import SemanticIDs, codes_bytes, load, recbole_item, semantic_ids_jsonl
from semid.shards import embed_resumable, embed_share, remove_work_area
from semid.vectors import read_embeddings, stream_embeddings
from semid.version import __version__


class UserCache:
    """The default `cache_dir`: semid.embed.default_cache_dir(), i.e. $SEMID_CACHE_DIR, else the
    platform's user cache folder; resolved when a catalogue is embedded, never the working directory."""

    def __repr__(self) -> str:
        return "USER_CACHE"


USER_CACHE = UserCache()
CacheDir = str | PathLike | UserCache | None  # a folder, USER_CACHE (the default), or None: no cache
EXPORTS = ("recbole",)
STATS_FORMAT = "semid-stats/1"


@dataclass(frozen=True)
class Catalogue:
    """What the quantizer sees: ids, their embedding rows, and where they came from."""

    ids: list[str]
    embeddings: torch.Tensor  # float32 [n, d]; memory-mapped when embedded into an OUT_DIR
    texts: list[str] | None  # None when precomputed embeddings were given
    source: Path  # the file errors about the whole set name (items file, else embeddings file)
    info: dict[str, Any]  # provenance for stats.json / embeddings.safetensors metadata
    warnings: list[str]
    timings: dict[str, float]


def embed_catalogue(
    items: str | PathLike,
    *,
    read: ReadConfig | None = None,
    embed: EmbedConfig | None = None,
    cache_dir: CacheDir = USER_CACHE,
    progress: bool = False,
) -> Catalogue:
    """Read an item file and embed its texts in memory, cached in `cache_dir` (default: $SEMID_CACHE_DIR,
    else the user cache folder; None: no cache)."""
    embed = embed or EmbedConfig()
    cache_dir = _resolve_cache(cache_dir)
    start = time.perf_counter()
    item_set = read_items(items, read)
    read_s = time.perf_counter() - start
    hit = cache_dir is not None and cache_path(item_set.texts, embed, cache_dir).is_file()
    start = time.perf_counter()
    matrix = embed_texts(item_set.texts, embed, cache_dir=cache_dir, progress=progress)
    info = _embedding_info(item_set, embed, hit)
    return _text_catalogue(item_set, matrix, info, {"read": read_s, "embed": time.perf_counter() - start})


def _embed_in_shards(
    items: str | PathLike,
    out_dir: str | PathLike,
    *,
    read: ReadConfig | None,
    embed: EmbedConfig | None,
    cache_dir: CacheDir,
    group: Group,
    progress: bool,
) -> Catalogue:
    """embed_catalogue through OUT_DIR's work area (semid.shards): resumable, split over torchrun ranks,
    the matrix memory-mapped. Only for a caller that holds OUT_DIR's lock."""
    embed = embed or EmbedConfig()
    cache_dir = _resolve_cache(cache_dir)
    start = time.perf_counter()
    item_set = read_items(items, read)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    result = embed_resumable(item_set.texts, embed, out_dir, cache_dir=cache_dir, group=group, progress=progress)
    info = _embedding_info(item_set, embed, result.cache_hit)
    info["embedding_shards"] = {"shards": result.shards, "reused": result.reused, "chunk_size": embed.chunk_size,
                                "ranks": group.world_size}
    return _text_catalogue(item_set, result.matrix, info, {"read": read_s, "embed": time.perf_counter() - start})


def embed_share_of(
    items: str | PathLike | None,
    out_dir: str | PathLike,
    *,
    read: ReadConfig | None = None,
    embed: EmbedConfig | None = None,
    group: Group,
) -> None:
    """A torchrun rank other than 0 in `semid embed` or `semid encode`: waits for rank 0's order, then
    embeds its share of the shards into OUT_DIR's work area (semid.shards.embed_share)."""
    order = group.hear()
    if order.error is not None:
        raise SemidError(f"rank 0 stopped: {order.error}")
    if not order.embed or items is None:
        return
    item_set = read_items(items, read)
    embed_share(item_set.texts, embed or EmbedConfig(), out_dir, order=order, group=group)


def _resolve_cache(cache_dir: CacheDir) -> str | PathLike | None:
    return default_cache_dir() if isinstance(cache_dir, UserCache) else cache_dir


def _embedding_info(item_set: ItemSet, embed: EmbedConfig, hit: bool) -> dict[str, Any]:
    return {
        "items": str(item_set.path),
        "model": embed.model or DEFAULT_MODEL_NAME,
        "pooling": embed.pooling,
        "normalize": embed.normalize,
        "max_length": embed.max_length,
        "embedding_cache_hit": hit,
        "empty_texts": len(item_set.empty_text_lines),
    }


def _text_catalogue(item_set: ItemSet, matrix: torch.Tensor, info: dict[str, Any],
                    timings: dict[str, float]) -> Catalogue:
    return Catalogue(
        ids=item_set.ids,
        embeddings=matrix,
        texts=item_set.texts,
        source=item_set.path,
        info=info,
        warnings=item_set.warnings,
        timings=timings,
    )


def _precomputed_catalogue(
    items: str | PathLike | None, embeddings: str | PathLike, ids: str | PathLike | None, read: ReadConfig | None
) -> Catalogue:
    """Given embeddings; row ids from --ids, the file's metadata, or the item file (in that order)."""
    start = time.perf_counter()
    stored = read_embeddings(embeddings, ids)
    item_set: ItemSet | None = read_items(items, read) if items is not None else None
    matrix, row_ids = stored.matrix, stored.ids
    if item_set is not None:
        if row_ids is None:
            if len(item_set) != matrix.shape[0]:
                raise fail(stored.path, None, "ids", f"are absent and its {matrix.shape[0]} rows do not match the "
                           f"{len(item_set)} items in {item_set.path}; give --ids to say which row is which item")
        else:
            # Align the rows to the item file's order; extra rows (a bigger catalogue) are dropped.
            position = {item_id: row for row, item_id in enumerate(row_ids)}
            for item_id, line in zip(item_set.ids, item_set.lines):
                if item_id not in position:
                    raise fail(item_set.path, line, item_set.id_field,
                               f"names item {item_id!r}, which has no row in {stored.path}")
            matrix = matrix[torch.tensor([position[i] for i in item_set.ids])]
        row_ids = item_set.ids
    if row_ids is None:
        raise fail(stored.path, None, "ids", "are absent: pass --ids FILE or the item file")
    info = {"items": str(item_set.path) if item_set else None, "embeddings": str(stored.path),
            "model": stored.metadata.get("model", "precomputed")}
    return Catalogue(
        ids=row_ids,
        embeddings=matrix,
        texts=None,
        source=item_set.path if item_set else stored.path,
        info=info,
        warnings=item_set.warnings if item_set else [],
        timings={"read": time.perf_counter() - start},
    )


@contextlib.contextmanager
def _sole_writer(out_dir: str | PathLike, what: str) -> Iterator[None]:
    """OUT_DIR's lock for the block, and the staging files of killed runs swept away."""
    with one_writer(out_dir, what):
        remove_stale_temps(out_dir)  # safe only under the lock: no live run is staging there
        yield


def write_embeddings(out_dir: str | PathLike, catalogue: Catalogue) -> None:
    """OUT_DIR of `semid embed`: embeddings.safetensors (+ texts.jsonl)."""
    with _sole_writer(out_dir, "semid embed"):
        _commit_embeddings(out_dir, catalogue)


def embed_to_folder(
    items: str | PathLike,
    out_dir: str | PathLike,
    *,
    read: ReadConfig | None = None,
    embed: EmbedConfig | None = None,
    cache_dir: CacheDir = USER_CACHE,
    progress: bool = False,
    group: Group | None = None,
) -> Catalogue:
    """`semid embed`: the texts embedded in shards (resumable), then embeddings.safetensors + texts.jsonl,
    holding OUT_DIR's lock from the start. `group`: this process's torchrun group (rank 0's side)."""
    group = group or Group()
    with group.leading(), _sole_writer(out_dir, "semid embed"):
        catalogue = _embed_in_shards(items, out_dir, read=read, embed=embed, cache_dir=cache_dir, group=group,
                                     progress=progress)
        _commit_embeddings(out_dir, catalogue)
        remove_work_area(out_dir)
    return catalogue


def _commit_embeddings(out_dir: str | PathLike, catalogue: Catalogue) -> None:
    with StagedOutput(out_dir) as out:
        _stage_embeddings(out, catalogue)
        out.commit()


def _stage_embeddings(out: StagedOutput, catalogue: Catalogue) -> None:
    info = {key: str(value) for key, value in catalogue.info.items() if key in ("model", "pooling", "normalize")}
    out.add_streamed(EMBEDDINGS, lambda handle: stream_embeddings(handle, catalogue.ids, catalogue.embeddings, info))
    if catalogue.texts is not None:
        out.add(TEXTS, texts_jsonl(catalogue.ids, catalogue.texts))


def encode_catalogue(
    items: str | PathLike | None,
    out_dir: str | PathLike,
    *,
    read: ReadConfig | None = None,
    embed: EmbedConfig | None = None,
    quantizer: QuantizerConfig | None = None,
    dedup: bool = False,
    embeddings: str | PathLike | None = None,
    ids: str | PathLike | None = None,
    export: Sequence[str] = (),
    cache_dir: CacheDir = USER_CACHE,
    progress: bool = False,
    group: Group | None = None,
    collab: CollabConfig | None = None,
) -> SemanticIDs:
    """Items (or precomputed embeddings) -> Semantic IDs, statistics and exports in `out_dir`.

    `collab`: collaborative item vectors quantized together with the embeddings (semid.collab); OUT_DIR's
    embeddings.safetensors still holds the text embeddings alone.

    Returns `load(out_dir)`; `result.stats` is what went into stats.json. encode_to_folder does the same
    without loading the result (whose embeddings `load` reads into memory).
    """
    encode_to_folder(items, out_dir, read=read, embed=embed, quantizer=quantizer, dedup=dedup, embeddings=embeddings,
                     ids=ids, export=export, cache_dir=cache_dir, progress=progress, group=group, collab=collab)
    return load(out_dir)


def encode_to_folder(
    items: str | PathLike | None,
    out_dir: str | PathLike,
    *,
    read: ReadConfig | None = None,
    embed: EmbedConfig | None = None,
    quantizer: QuantizerConfig | None = None,
    dedup: bool = False,
    embeddings: str | PathLike | None = None,
    ids: str | PathLike | None = None,
    export: Sequence[str] = (),
    cache_dir: CacheDir = USER_CACHE,
    progress: bool = False,
    group: Group | None = None,
    collab: CollabConfig | None = None,
) -> dict[str, Any]:
    """`semid encode`: encode_catalogue's job; returns the statistics written to stats.json.
    `group`: this process's torchrun group (rank 0's side)."""
    read, quantizer, group = read or ReadConfig(), quantizer or QuantizerConfig(), group or Group()
    for name in export:
        if name not in EXPORTS:
            raise fail(None, None, "export", f"is {name!r}; choose from {', '.join(EXPORTS)}")
    if items is None and embeddings is None:
        raise SemidError("give an item file, or --embeddings FILE (with ids)")
    if quantizer.kind == "rqkmeans":
        resolve_backend(quantizer.kmeans_backend)  # --kmeans-backend faiss without faiss fails before the slow part
    # The lock is taken first: an unwritable, busy or misnamed OUT_DIR fails before the slow part.
    with group.leading(), _sole_writer(out_dir, "semid encode"):
        start = time.perf_counter()
        vectors = read_collab(collab) if collab is not None else None  # a bad file fails before the embedding
        collab_s = time.perf_counter() - start
        if embeddings is not None:
            group.tell(Order(embed=False))  # now, not after the fit: the other ranks have nothing to do
            catalogue = _precomputed_catalogue(items, embeddings, ids, read)
        else:
            catalogue = _embed_in_shards(items, out_dir, read=read, embed=embed, cache_dir=cache_dir, group=group,
                                         progress=progress)
        timings = dict(catalogue.timings)
        warnings = list(catalogue.warnings)

        # What the quantizer sees: the text embeddings, or them beside the collaborative vectors (semid.collab).
        # OUT_DIR keeps the text embeddings alone either way (h2rec's PCA initialisation reads them).
        x, collab_info = catalogue.embeddings, None
        if collab is not None and vectors is not None:
            start = time.perf_counter()
            alignment = align(vectors, catalogue.ids, catalogue.source)
            x = fuse(catalogue.embeddings, vectors, alignment, collab.weight, out_dir)
            timings["collab"] = collab_s + time.perf_counter() - start
            collab_info = collab_stats(vectors, alignment, collab.weight, len(catalogue.ids), int(x.shape[1]))
            warnings += collab_warnings(vectors, alignment, len(catalogue.ids))

        start = time.perf_counter()
        model = build_quantizer(quantizer).fit(x, progress=progress, source=catalogue.source)
        timings["fit"] = time.perf_counter() - start
        start = time.perf_counter()
        codes = model.encode(x)  # all items, in chunks, whatever the fit saw (fit_sample)
        timings["encode"] = time.perf_counter() - start
        error = reconstruction_error(model, x, codes)  # of the quantizer's input (fused, with collab)

        sizes = list(quantizer.codebook_sizes)
        codebooks: list[torch.Tensor | None] = list(model.codebooks)
        stats: dict[str, Any] = {
            "format": STATS_FORMAT,
            "semid_version": __version__,
            "items": len(catalogue.ids),
            "embedding_dim": int(catalogue.embeddings.shape[1]),
            "source": catalogue.info,
            "collab": collab_info,  # None: text only
            "quantizer": config_to_dict(quantizer),
            "fit": model.fit_info,  # items the quantizer was fit on (fit_sample), k-means backend for rqkmeans
            "reconstruction_error": error,
            "collisions": collision_stats(codes, sizes, reconstruction_error=error),
            "dedup": dedup,
            "collisions_after_dedup": None,
            "warnings": warnings,
            "timings_s": timings,
        }
        if dedup:
            codes = dedup_codes(codes)
            sizes.append(int(codes[:, -1].max()) + 1)  # dedup column: the largest group's size
            codebooks.append(None)
            stats["collisions_after_dedup"] = collision_stats(codes, sizes)

        with StagedOutput(out_dir) as out:
            out.add(SEMANTIC_IDS, semantic_ids_jsonl(catalogue.ids, codes))
            out.add(CODES, codes_bytes(catalogue.ids, codes, sizes, codebooks, dedup, quantizer.kind))
            for name, data in model.state_files().items():
                out.add(name, data)
            _stage_embeddings(out, catalogue)
            if "recbole" in export:
                out.add(RECBOLE_ITEM, recbole_item(catalogue.ids, codes))
            out.add(STATS, json_bytes(stats))
            out.commit()
        remove_work_area(out_dir)  # its shards are in embeddings.safetensors now (or were another input's)
        return stats
