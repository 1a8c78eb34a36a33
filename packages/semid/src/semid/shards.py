"""A catalogue embedded chunk by chunk into shards in OUT_DIR's work area: a killed run resumes, several
processes share the work, and memory is that of one chunk whatever the catalogue's size.

OUT_DIR/.embed-work/ holds
- manifest.json: what is being embedded. Its key is a sha256 over the embedding cache's key (the
  model, the settings that change the numbers, the texts in order) and over what decides which texts
  are padded together (chunk size, batch size, length sorting), so shards of other texts or settings
  are never mixed in: they are discarded;
- shard-00000.safetensors, ...: the vectors of chunk i (rows i * chunk_size onwards), one file per
  finished chunk, written to a temp file and renamed into place (semid.io.atomic_write). A shard file
  that exists is therefore complete, and a kill loses at most the chunk being embedded (one per rank);
- matrix.safetensors: the shards joined, memory-mapped for the quantizer (semid.matrix_file).

Rank r of N torchrun ranks embeds shards r, r + N, r + 2N, ...; a chunk's vectors do not depend on
which process embeds it (on the same device, precision and thread count), so N ranks write the files
one process would. Only rank 0, the holder of OUT_DIR's lock, creates, clears or removes the area;
the other ranks add shards once rank 0 has told them to (semid.distributed). The area goes when the
run's files are committed; a run that fails leaves it for the next one (unless it holds no shard).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import torch
from tqdm.auto import tqdm

from semid import embed
from semid.config import EmbedConfig
from semid.distributed import Group, Order
from semid.errors import fail
from semid.io import atomic_write, atomic_write_bytes, json_bytes, read_header
from semid.matrix_file import open_matrix, save_matrix, write_matrix

log = logging.getLogger(__name__)

WORK_DIR = ".embed-work"  # hidden: readers of an OUT_DIR (semid.load, semid stats, save_pretrained) skip it
MANIFEST = "manifest.json"
MATRIX = "matrix.safetensors"
WORK_FORMAT = "semid-embedding-work/1"
SHARD_FORMAT = "semid-embedding-shard/1"


@dataclass(frozen=True)
class ShardPlan:
    """Which rows go into which shard, and the key naming what they are embeddings of."""

    key: str
    items: int
    chunk_size: int

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """(start, stop) rows of each shard."""
        return embed.chunk_bounds(self.items, self.chunk_size)

    def manifest(self) -> dict:
        return {"format": WORK_FORMAT, "key": self.key, "items": self.items, "chunk_size": self.chunk_size}


def plan_shards(texts: Sequence[str], config: EmbedConfig, cache_key: str | None = None) -> ShardPlan:
    """The plan for embedding `texts` with `config` (pass the cache key when it is already computed)."""
    batching = {
        "cache_key": cache_key or embed.cache_key(texts, config),
        "chunk_size": config.chunk_size,
        "batch_size": config.batch_size,  # batch shapes change float sums at rounding level
        "sort_by_length": config.sort_by_length,
    }
    key = hashlib.sha256(json.dumps(batching, sort_keys=True).encode("utf-8")).hexdigest()
    return ShardPlan(key=key, items=len(texts), chunk_size=config.chunk_size)


class WorkArea:
    """OUT_DIR/.embed-work for one ShardPlan (see the module docstring)."""

    def __init__(self, out_dir: str | PathLike, plan: ShardPlan):
        self.folder = Path(out_dir) / WORK_DIR
        self.plan = plan

    def shard_path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.safetensors"

    def done(self) -> list[int]:
        """Shards on disk (complete, as they are renamed into place only when whole)."""
        return [shard for shard in range(len(self.plan.bounds)) if self.shard_path(shard).is_file()]

    def prepare(self) -> int:
        """Rank 0, holding OUT_DIR's lock: sweep temp files of killed writers, discard the shards of another
        plan, write this plan's manifest. Returns how many shards an interrupted run left to reuse."""
        if self.folder.is_dir():
            for temp in self.folder.glob(".*.tmp"):  # under the lock no rank is writing: a kill's leftovers
                temp.unlink(missing_ok=True)
            if self._manifest() != self.plan.manifest():
                stale = sorted(self.folder.iterdir())
                if stale:
                    log.info("%s: discarding %d file(s) embedded from other texts or settings", self.folder,
                             len(stale))
                for path in stale:
                    path.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._manifest() != self.plan.manifest():
            atomic_write_bytes(self.folder / MANIFEST, json_bytes(self.plan.manifest()))
        reused = len(self.done())
        if reused:
            log.info("%s: resuming, %d of %d shard(s) already embedded", self.folder, reused, len(self.plan.bounds))
        return reused

    def _manifest(self) -> dict | None:
        try:
            return json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, or cut short by a kill before atomic writes were used
            return None

    def write_shard(self, shard: int, matrix: torch.Tensor) -> None:
        """Shard `shard`'s vectors, renamed into place only once whole."""
        save_matrix(self.shard_path(shard), matrix, {"format": SHARD_FORMAT, "key": self.plan.key,
                                                     "shard": str(shard)})

    def _shards(self) -> Iterator[torch.Tensor]:
        """Every shard in order, checked against the plan, one in memory at a time."""
        for shard, (start, stop) in enumerate(self.plan.bounds):
            path = self.shard_path(shard)
            if not path.is_file():
                raise fail(path, None, None, "is missing: a rank stopped before embedding it; run again to resume")
            header, _ = read_header(path)
            if header.get("__metadata__", {}).get("key") != self.plan.key:
                raise fail(path, None, "key", f"is not that of {self.folder / MANIFEST}; delete {self.folder} "
                                              "and run again")
            matrix = open_matrix(path)
            if matrix.shape[0] != stop - start:
                raise fail(path, None, None, f"holds {matrix.shape[0]} rows, not the {stop - start} of its chunk")
            yield matrix

    def join(self) -> torch.Tensor:
        """The shards as one matrix file, memory-mapped: float32 [items, d]."""

        def write(temp: Path) -> None:
            shards = self._shards()
            first = next(shards)
            shape = (self.plan.items, int(first.shape[1]))
            with open(temp, "wb") as handle:
                write_matrix(handle, itertools.chain([first], shards), shape,
                             {"format": SHARD_FORMAT, "key": self.plan.key})

        atomic_write(self.folder / MATRIX, write)
        return open_matrix(self.folder / MATRIX)

    def discard(self) -> None:
        remove_work_area(self.folder.parent)


def remove_work_area(out_dir: str | PathLike) -> None:
    """Delete OUT_DIR's work area (after a commit, or a run that left no shard); a failure is only logged,
    since the files it could not delete are swept or reused by the next run."""
    folder = Path(out_dir) / WORK_DIR
    if not folder.exists():
        return
    try:
        shutil.rmtree(folder)
    except OSError as error:
        log.warning("%s: could not remove the embedding work area (%s)", folder, error)


def embed_shards(texts: Sequence[str], config: EmbedConfig, area: WorkArea, group: Group,
                 progress: bool = False) -> int:
    """Embed this rank's shards (shard i on rank i % world size) that are not on disk yet; returns how many."""
    bounds = area.plan.bounds
    mine = [shard for shard in range(len(bounds)) if shard % group.world_size == group.rank]
    todo = [shard for shard in mine if not area.shard_path(shard).is_file()]
    if not todo:
        return 0
    embedder = embed.Embedder(config)  # loaded only when there is something to embed
    total = sum(bounds[shard][1] - bounds[shard][0] for shard in mine)
    left = sum(bounds[shard][1] - bounds[shard][0] for shard in todo)
    with tqdm(total=total, initial=total - left, unit="item", desc="embed", disable=not progress,
              file=sys.stderr) as bar:
        for shard in todo:
            start, stop = bounds[shard]
            area.write_shard(shard, embedder.embed(texts[start:stop], progress=bar.update))
    return len(todo)


@dataclass(frozen=True)
class Embedded:
    """What embed_resumable gives rank 0 (or a process on its own)."""

    matrix: torch.Tensor  # float32 [items, d], memory-mapped (the cache file, or the joined shards)
    cache_hit: bool
    shards: int  # shards of the catalogue (0 on a cache hit)
    reused: int  # of them, left by an interrupted run


def embed_resumable(
    texts: Sequence[str],
    config: EmbedConfig,
    out_dir: str | PathLike,
    *,
    cache_dir: str | PathLike | None,
    group: Group,
    progress: bool = False,
) -> Embedded:
    """Rank 0's side (or a lone process's) of embedding `texts` through OUT_DIR's work area.

    Call it holding OUT_DIR's lock. A cache hit is memory-mapped from the cache; otherwise the shards
    are embedded (this rank's share; the other ranks run embed_share), joined, and saved to the cache.
    """
    cache_key = embed.cache_key(texts, config)
    cached = Path(cache_dir) / f"{cache_key}.safetensors" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        matrix = open_matrix(cached)
        if matrix.shape[0] == len(texts):
            group.tell(Order(embed=False))
            return Embedded(matrix=matrix, cache_hit=True, shards=0, reused=0)
    if cache_dir is not None:
        embed.check_cache_dir(Path(cache_dir))  # before the encoder runs, not when its result is to be saved
    area = WorkArea(out_dir, plan_shards(texts, config, cache_key))
    reused = area.prepare()
    group.tell(Order(embed=True, key=area.plan.key))
    try:
        embed_shards(texts, config, area, group, progress=progress)
    except BaseException:
        if not area.done():  # nothing worth resuming: leave OUT_DIR as it was
            area.discard()
        raise
    group.finish()  # every rank's shards are on disk
    matrix = area.join()
    if cached is not None:
        save_matrix(cached, matrix, embed.cache_metadata(config))
    return Embedded(matrix=matrix, cache_hit=False, shards=len(area.plan.bounds), reused=reused)


def embed_share(texts: Sequence[str], config: EmbedConfig, out_dir: str | PathLike, *, order: Order,
                group: Group) -> None:
    """Another rank's side: embed its shards once rank 0 has prepared the work area, then meet in the barrier."""
    area = WorkArea(out_dir, plan_shards(texts, config))
    if area.plan.key != order.key:
        raise fail(None, None, None, f"rank {group.rank} read other texts or settings than rank 0 (was the item "
                                     "file changed while the run started?); run again")
    embed_shards(texts, config, area, group)
    group.finish()
