"""Leave-one-out evaluation: ranks, HR/NDCG@k and MRR@10 for Overall, Head, Tail and five popularity groups.

Three protocols, named as in ``results.json``:

- ``full``: the target against every catalogue item, the user's seen items included;
- ``full_unseen``: the same with the items in the user's history left out of the ranking (the
  target stays, even when the user had it before); strong public SASRec figures on Amazon data
  use this one, so it is the one to compare with them;
- ``sampled_N``: the paper's protocol, the target against ``N`` items the user never touched,
  drawn once per split with a fixed seed.

Ties count against the target (pessimistic), so a model that gives every item the same score
ranks the target last, not first.

Catalogues larger than ``EvalConfig.item_chunk`` are scored a chunk of items at a time (ranks by
counting, top-k by a running merge), so memory holds (batch, chunk) scores, never (batch, catalogue):
10^6 items rank within a fixed budget. Up to one chunk, everything is one pass, as before chunks.
"""

from __future__ import annotations

import dataclasses
import resource
from collections.abc import Sequence

import numpy as np
import torch
from srs_backbones import append_mask_token

from .config import Config, EvalConfig
from .data import Dataset, EvalSplit, pad_right, sample_candidates
from .distributed import Group
from .errors import H2RecError
from .model import H2Rec, UserState
from .progress import progress_bar
from .softmax import tile_shape


def protocol_name(negatives: int, exclude_history: bool = False) -> str:
    if negatives:
        return f"sampled_{negatives}"
    return "full_unseen" if exclude_history else "full"


PROTOCOLS = {"full": "full ranking over the catalogue, the user's seen items included",
             "full_unseen": "full ranking over the catalogue, the user's seen items left out",
             "sampled": "the target against N sampled items the user never touched (the paper's protocol)"}


def model_inputs(model: H2Rec, histories: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Right-padded inputs for next-item prediction: the last ``max_len`` items, plus BERT4Rec's
    mask token at the end (dropping the oldest item when the window is full). As wide as the
    longest history needs, no wider."""
    width = min(max_len, max(len(h) for h in histories) + (0 if model.causal else 1))
    items = pad_right(histories, width)
    if not model.causal:
        items = append_mask_token(items, mask_token=model.mask_token)
    return items.to(model.device)


def next_item_states(model: H2Rec, histories: list[np.ndarray], max_len: int) -> UserState:
    """The user side of Eq. 9 after each of ``histories`` (item indices, oldest first): (B, ...)."""
    encoded, _ = model(model_inputs(model, histories, max_len))
    return encoded.last()


def by_length(histories: list[np.ndarray]) -> np.ndarray:
    """Indices of ``histories`` shortest first (stable): consecutive slices of it make batches of similar
    length, which a batch pads only to its own longest. Batches in the given order pad most rows to
    max_len as soon as one long history is among them (at 7-9 items a user, ~5x the encoder's work)."""
    return np.argsort([len(h) for h in histories], kind="stable")


def in_length_batches(histories: list[np.ndarray], batch_size: int, fn):
    """``fn`` applied to batches of ``histories`` of similar length (:func:`by_length`), its outputs (a
    tensor, or a tuple of tensors, with a row per history) put back in the order of ``histories``."""
    order = by_length(histories)
    parts = [fn([histories[i] for i in order[start : start + batch_size]])
             for start in range(0, len(order), batch_size)]
    back = torch.from_numpy(np.argsort(order, kind="stable"))  # row r of the result is history r

    def restore(tensors) -> torch.Tensor:
        rows = torch.cat(tensors)
        return rows[back.to(rows.device)]

    return tuple(restore(p) for p in zip(*parts)) if isinstance(parts[0], tuple) else restore(parts)


def leave_out_history(scores: torch.Tensor, histories: list[np.ndarray], start: int = 0) -> None:
    """Scores each row's own history items -inf in ``scores`` (B, C), in place; column j is item
    ``start + j`` (a chunk of the catalogue; the whole of it, (B, n + 1), by default)."""
    seen_by = np.concatenate([np.full(len(h), r) for r, h in enumerate(histories)])
    items = np.concatenate(histories) - start
    inside = (items >= 0) & (items < scores.shape[1])
    scores[seen_by[inside], items[inside]] = float("-inf")


def scored_tile(model: H2Rec, state: UserState, start: int, end: int,
                histories: list[np.ndarray] | None) -> torch.Tensor:
    """Scores (B, end - start) of items start..end-1 for the users of ``state``; padding (item 0) and,
    given ``histories`` (one per row), each row's seen items score -inf."""
    scores = model.score_range(state, start, end)
    if start == 0:
        scores[:, 0] = float("-inf")  # padding, never ranked
    if histories is not None:
        leave_out_history(scores, histories, start)
    return scores


ITEM_CHUNK = EvalConfig().item_chunk  # for callers without a config (recommend, export)


@torch.no_grad()
def top_items(model: H2Rec, histories: list[np.ndarray], max_len: int, k: int, exclude_history: bool = True,
              item_chunk: int = ITEM_CHUNK, tile_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and item indices (B, min(k, n)) of the top-``k`` next items after each history, best
    first; with ``exclude_history`` a history's own items score -inf (so they come last, if at all).
    Eq. 1: the argmax of P(v_{N+1} = v_i | S_u), k deep, merged tile by tile (``softmax.tile_shape``:
    on the CPU tiles of rows x items that stay in the cache; ``tile_elements`` as it takes it)."""
    state = next_item_states(model, histories, max_len)
    k = min(k, model.n_items)
    n = model.n_items + 1  # not the mask token's row
    rows, items = tile_shape(model.device, n, len(histories), item_chunk, tile_elements)
    tiles = [slice(start, start + rows) for start in range(0, len(histories), rows)]
    tile_states = [state_rows(state, tile) for tile in tiles]
    best: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(tiles)
    for first in range(0, n, items):  # items outside, so that their rows stay in the cache across row tiles
        for t, (tile, tile_state) in enumerate(zip(tiles, tile_states)):
            scores = scored_tile(model, tile_state, first, min(first + items, n),
                                 histories[tile] if exclude_history else None)
            values, indices = torch.topk(scores, min(k, scores.shape[1]))
            indices += first
            if best[t] is not None:  # running merge: the top k of (the best so far, this tile's best)
                merged = torch.cat([best[t][0], values], 1)
                values, order = torch.topk(merged, min(k, merged.shape[1]))
                indices = torch.cat([best[t][1], indices], 1).gather(1, order)
            best[t] = values, indices
    return torch.cat([values for values, _ in best]), torch.cat([indices for _, indices in best])


def recommend_items(model: H2Rec, history: Sequence[int], max_len: int, item_ids: Sequence[str],
                    texts: Sequence[str] | None, k: int, exclude_history: bool = True) -> list[dict]:
    """Top-``k`` next items after ``history`` (item indices, oldest first): their ids, scores (the
    model's logits) and texts; the history's own items left out when ``exclude_history``."""
    values, indices = top_items(model, [np.asarray(history, dtype=np.int64)], max_len,
                                min(k, len(item_ids)), exclude_history)
    return [{"item_id": item_ids[i - 1], "score": round(float(s), 4), "text": texts[i - 1] if texts else None}
            for s, i in zip(values[0].tolist(), indices[0].tolist())]


def count_at_or_above(scores: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Per row, how many ``scores`` (B, C) are >= ``threshold`` (B, 1); overwrites ``scores``.

    In place, as 0/1 floats summed in float32, which counts exactly up to 2^24 columns: a bool
    mask summed as integers would first cast the whole (B, C) matrix, a second pass over the
    largest tensor of the evaluation."""
    if scores.shape[1] >= 2**24:
        return (scores >= threshold).sum(1)
    return scores.ge_(threshold).sum(1).long()


@torch.no_grad()
def rank_targets(model: H2Rec, ds: Dataset, split: EvalSplit, cfg: EvalConfig, max_len: int,
                 candidates: np.ndarray | None = None, progress: str | None = None,
                 group: Group | None = None) -> np.ndarray:
    """0-based rank of each target: among all items, or among its row of ``candidates``.
    ``progress``: the label of a progress bar (None: no bar). Under torchrun (``group``), the
    batches go round-robin to the processes, and every process gets every rank."""
    was_training = model.training
    model.eval()
    order = by_length(split.histories)
    ranks = torch.empty(len(split), dtype=torch.long)
    starts = range(0, len(split), cfg.batch_size)
    if group is not None and group.distributed:  # the one process's batches, each computed by one process
        ranks.zero_()
        starts = starts[group.rank :: group.world_size]
    for start in progress_bar(starts, progress or "", progress is not None, total=len(starts)):
        rows = order[start : start + cfg.batch_size]
        histories = [split.histories[r] for r in rows]
        state = next_item_states(model, histories, max_len)
        targets = torch.as_tensor(split.targets[rows], device=model.device)[:, None]
        if candidates is not None:
            pool = torch.cat([targets, torch.as_tensor(candidates[rows], device=model.device)], 1)
            counts = count_in_pool(model, state, pool, cfg.item_chunk)
        else:
            counts = count_in_catalogue(model, state, targets, histories if cfg.exclude_history else None,
                                        cfg.item_chunk)
        ranks[torch.as_tensor(rows)] = (counts - 1).cpu()  # less the target itself
    if group is not None:
        group.sum_(ranks)  # each user's rank from the one process that computed it, zeros from the others
    model.train(was_training)
    return ranks.numpy()


def count_in_pool(model: H2Rec, state: UserState, pool: torch.Tensor, item_chunk: int) -> torch.Tensor:
    """Per row, the candidates of ``pool`` (B, 1 + K; the target first) scoring at or above the target."""
    if model.n_items + 1 <= item_chunk:
        scores = model.score_all(state).gather(1, pool)  # one pass, as the full ranking's scores
    else:
        scores = model.score(state, pool)  # (B, 1 + K): no (B, catalogue) matrix
    return count_at_or_above(scores, scores[:, :1].clone())  # a copy: the count overwrites scores


def state_rows(state: UserState, rows: torch.Tensor) -> UserState:
    """The user states of ``rows`` only."""
    return dataclasses.replace(state, **{f.name: getattr(state, f.name)[rows] for f in dataclasses.fields(state)
                                         if getattr(state, f.name) is not None})


def target_scores(model: H2Rec, state: UserState, targets: torch.Tensor, item_chunk: int) -> torch.Tensor:
    """Each row's target score (B, 1), computed as the chunked ranking computes it: by score_range
    over the target's own chunk (only for the rows whose target lies there, so B x item_chunk work in
    all). Not by ``model.score``: SID-only models give colliding items bit-identical scores, and a
    target scored by another formula would round differently from the items it ties with."""
    out = torch.empty(len(targets), 1, device=targets.device)
    first = targets[:, 0] - targets[:, 0] % item_chunk  # the start of each target's chunk
    for start in first.unique().tolist():
        rows = (first == start).nonzero()[:, 0]
        scores = model.score_range(state_rows(state, rows), start, min(start + item_chunk, model.n_items + 1))
        out[rows] = scores.gather(1, targets[rows] - start)
    return out


def count_in_catalogue(model: H2Rec, state: UserState, targets: torch.Tensor, histories: list[np.ndarray] | None,
                       item_chunk: int, tile_elements: int | None = None) -> torch.Tensor:
    """Per row, the catalogue items scoring at or above the target (B, 1), the target included:
    items scoring above it or tying with it (pessimistic). Given ``histories``, each row's seen items
    are left out, but never its target (a repeated item, which Yelp has, may be the target).

    The scores come a tile of rows x items at a time (``softmax.tile_shape``): off the CPU every row
    by ``item_chunk`` items; on the CPU a tile small enough to stay in the cache while it is written,
    masked, compared and summed, as the training softmax does (for a whole batch each of those passes
    would go through main memory). ``tile_elements``: as ``softmax.tile_shape`` takes it."""
    n = model.n_items + 1  # not the mask token's row
    rows, items = tile_shape(targets.device, n, len(targets), item_chunk, tile_elements)
    tiles = [slice(start, start + rows) for start in range(0, len(targets), rows)]
    if items >= n:  # one pass per row tile: the target's score is read from the same matrix
        return torch.cat([count_in_one_pass(model, state_rows(state, tile), targets[tile],
                                            None if histories is None else histories[tile]) for tile in tiles])
    target_score = target_scores(model, state, targets, items)  # tiles before the target's own need it
    count = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
    tile_states = [state_rows(state, tile) for tile in tiles]
    for first in range(0, n, items):  # items outside, so that their rows stay in the cache across row tiles
        for tile, tile_state in zip(tiles, tile_states):
            scores = scored_tile(model, tile_state, first, min(first + items, n),
                                 None if histories is None else histories[tile])
            # the target's column holds exactly target_score, so it counts once whatever the rounding of
            # the tile's computation, and also when it was a seen item
            tile_targets, tile_score = targets[tile], target_score[tile]
            inside = ((tile_targets >= first) & (tile_targets < first + scores.shape[1])).squeeze(1)
            scores[inside, tile_targets[inside, 0] - first] = tile_score[inside, 0]
            count[tile] += count_at_or_above(scores, tile_score)
    return count


def count_in_one_pass(model: H2Rec, state: UserState, targets: torch.Tensor,
                      histories: list[np.ndarray] | None) -> torch.Tensor:
    """``count_in_catalogue`` from one (B, n + 1) matrix of scores."""
    scores = model.score_all(state)
    target_score = scores.gather(1, targets)
    if histories is not None:
        leave_out_history(scores, histories)
        scores.scatter_(1, targets, target_score)
    return count_at_or_above(scores, target_score)


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    out: dict[str, float] = {"n": int(len(ranks))}
    if not len(ranks):
        return out
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float((hit / np.log2(ranks + 2)).mean())
    out["MRR@10"] = float(((ranks < 10) / (ranks + 1)).mean())
    return out


def grouped_metrics(ds: Dataset, split: EvalSplit, ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, dict]:
    """Overall, Head, Tail (by the target item's training popularity) and the five groups."""
    head = ds.head[split.targets]
    groups = ds.groups[split.targets]
    out = {"overall": metrics_from_ranks(ranks, ks),
           "head": metrics_from_ranks(ranks[head], ks),
           "tail": metrics_from_ranks(ranks[~head], ks)}
    for g, label in enumerate(ds.group_labels):
        out[label] = metrics_from_ranks(ranks[groups == g], ks)
    return out


def evaluate_split(model: H2Rec, ds: Dataset, split_name: str, cfg: EvalConfig, max_len: int,
                   negatives: int, progress: bool = False, group: Group | None = None) -> dict[str, dict]:
    """Grouped metrics on ``"valid"`` or ``"test"`` under full ranking (``negatives=0``; seen items
    left out when ``cfg.exclude_history``) or the sampled protocol with that many negatives.
    ``progress`` shows a bar over the evaluation batches; ``group``: the processes that share them."""
    split = ds.valid if split_name == "valid" else ds.test
    candidates = None
    if negatives:
        # a different stream per split, the same for every model and run
        candidates = sample_candidates(ds, split, negatives, cfg.negatives_seed + (split_name == "test"))
    label = f"{split_name} ({protocol_name(negatives, cfg.exclude_history)})" if progress else None
    ranks = rank_targets(model, ds, split, cfg, max_len, candidates, label, group)
    return grouped_metrics(ds, split, ranks, cfg.ks)


def format_results(results: dict, groups: tuple[str, ...] = ("overall", "head", "tail"),
                   metrics: tuple[str, ...] = ("HR@10", "NDCG@10")) -> str:
    """Markdown table of one run's results: a row per split and protocol, columns group x metric."""
    columns = [f"{g} {m}" for g in groups for m in metrics]
    lines = ["| split | protocol | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for split in ("valid", "test"):
        for protocol, by_group in results.get(split, {}).items():
            cells = [f"{by_group[g][m]:.4f}" if m in by_group.get(g, {}) else "-" for g in groups for m in metrics]
            lines.append(f"| {split} | {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- a run's final metrics
def selection_protocol(config: Config) -> int:
    """Negatives of the protocol that selects the checkpoint: 0 (full ranking) or eval.negatives."""
    if config.eval.select_on == "full":
        return 0
    if not config.eval.negatives:
        raise H2RecError("eval.select_on='sampled' needs eval.negatives > 0")
    return config.eval.negatives


def selection_name(config: Config) -> str:
    """The results.json protocol whose validation NDCG@10 selects the checkpoint, e.g. ``full_unseen``."""
    return protocol_name(selection_protocol(config), config.eval.exclude_history)


def selected_protocol(selection: str) -> str:
    """The protocol whose validation NDCG@10 picked a run's checkpoint (e.g. ``full_unseen``), from the
    ``selection`` of its results.json ("valid NDCG@10 (full_unseen)")."""
    return selection.removeprefix("valid NDCG@10 (").removesuffix(")")


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def final_results(model: H2Rec, ds: Dataset, config: Config, state: dict, device: torch.device,
                  splits: tuple[str, ...] = ("valid", "test"), progress: bool = False,
                  group: Group | None = None) -> dict:
    """Validation and test metrics of the best checkpoint, under full ranking and, when
    configured, the sampled protocol too; with the run's cost. ``group``: the processes that share
    the evaluation (torchrun)."""
    # full ranking both ways (seen items in and out), whichever selects; the sampled protocol when asked
    protocols = [(0, False), (0, True)] + ([(config.eval.negatives, False)] if config.eval.negatives else [])
    metrics = {split: {protocol_name(k, exclude): evaluate_split(
                           model, ds, split, dataclasses.replace(config.eval, exclude_history=exclude),
                           config.data.max_len, k, progress, group)
                       for k, exclude in protocols}
               for split in splits}
    epochs = state["history"]
    train_seconds = [r["train_seconds"] for r in epochs]
    return {
        "model": config.model.kind, "backbone": config.model.backbone, "seed": config.train.seed,
        "selection": f"valid NDCG@10 ({selection_name(config)})",
        "protocols": {protocol_name(k, exclude): PROTOCOLS["sampled" if k else protocol_name(0, exclude)]
                      for k, exclude in protocols},
        "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
        "seconds_per_epoch": round(float(np.mean(train_seconds)), 2) if train_seconds else None,
        "device": str(device), **peak_memory_mb(device),
        "exclude_history": config.eval.exclude_history,  # True: full_unseen selected the checkpoint
        "data": ds.stats, **metrics,
    }
