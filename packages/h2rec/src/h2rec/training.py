"""Training (Algorithm 1): Adam on Eq. 11, early stopping on validation NDCG@10, exact resume.

All randomness of the data side (shuffling, negatives, cloze masks, L_MSG levels, L_CA samples)
comes from one CPU ``torch.Generator`` seeded with ``train.seed``; dropout uses torch's global
RNG, seeded the same way. Both are saved in every checkpoint, so ``resume=True`` after a crash
continues exactly where the run stopped and ends with the same numbers as an uninterrupted run (on CPU).
Under torchrun, N processes share each batch (h2rec.distributed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import semid
import torch
from semid.io import one_writer
from srs_backbones import cloze_mask
from torch.nn.parallel import DistributedDataParallel

from . import runfolder
from .assemble import build_model, prepare, resolve_device, seed_everything
from .checkpoint import (
    FORMAT_VERSION,
    best_weights_path,
    load_checkpoint,
    load_weights,
    read_json,
    remove_leftovers,
    save_checkpoint,
    write_json,
    write_text,
)
from .config import Config, TrainConfig, build_config
from .data import Dataset, training_windows
from .distributed import Group, Shard, check_batch_size, gather_rows, join, leave, quiet_unless_main
from .errors import H2RecError
from .evaluate import evaluate_split, final_results, selection_name, selection_protocol
from .losses import (
    alignment_positives,
    bce,
    bpr,
    chunked_cross_entropy,
    code_guided_alignment,
    gbce,
    mask_seen,
    masked_granularity,
    proposal_log_probs,
    reduce_positions,
    sample_shared,
    sampled_softmax_shared,
)
from .model import H2Rec, at_last
from .progress import progress_bar
from .rivals.llmesr import LLMESR
from .rivals.llmesr_distill import RetrievalDistillation, build_distillation
from .rivals.melt_branches import BilateralBranches, build_branches, warm_start
from .runfolder import read_run_config
from .version import __version__

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- one step
def epoch_batches(lengths: torch.Tensor, batch_size: int, bucket_batches: int,
                  gen: torch.Generator) -> list[torch.Tensor]:
    """Row indices of each batch, in random order. With ``bucket_batches`` > 1, rows are shuffled,
    cut into chunks of that many batches, sorted by length within a chunk, then batched: batches
    hold sequences of similar length, so little compute goes to padding (sequences are short on
    average and a few are long)."""
    order = torch.randperm(len(lengths), generator=gen)
    if bucket_batches <= 1:
        return list(order.split(batch_size))
    batches = []
    for chunk in order.split(batch_size * bucket_batches):
        batches += list(chunk[torch.argsort(lengths[chunk], stable=True)].split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen)]



def sample_negatives(gen: torch.Generator, n_items: int, exclude: torch.Tensor, k: int) -> torch.Tensor:
    """(P, k) items uniform over 1..n, re-drawn (a few rounds) where they hit ``exclude`` (P, W),
    the user's own items."""
    neg = torch.randint(1, n_items + 1, (len(exclude), k), generator=gen)
    for _ in range(5):
        hit = (neg[:, :, None] == exclude[:, None, :]).any(-1)
        if not hit.any():
            break
        neg[hit] = torch.randint(1, n_items + 1, (int(hit.sum()),), generator=gen)
    return neg


def sampler_log_q(cfg: TrainConfig, popularity: np.ndarray) -> torch.Tensor | None:
    """(n + 1,) log-probabilities of the sampled-softmax proposal (None for other losses): uniform,
    training popularity ** alpha, or, for in-batch negatives, popularity itself (an item is a
    batch's target in proportion to its training count)."""
    if cfg.loss != "sampled_softmax":
        return None
    alpha = {"uniform": 0.0, "popularity": cfg.popularity_alpha, "in_batch": 1.0}[cfg.sampler]
    return proposal_log_probs(torch.as_tensor(popularity, dtype=torch.float64), alpha).float()


def seen_pairs(items: torch.Tensor, targets: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(position, item) pairs of the items each target position has already seen: the inputs of its
    row up to and including its own column, except the target itself (a repeat stays a class).
    Positions are numbered as ``targets[where]``; only the past is read."""
    rows, cols = where.nonzero(as_tuple=True)
    history = items[rows]  # (P, W - 1)
    past = torch.arange(items.shape[1])[None, :] <= cols[:, None]
    keep = past & (history > 0) & (history != targets[rows, cols][:, None])
    position, column = keep.nonzero(as_tuple=True)
    return position, history[position, column]


def draw_negatives(model: H2Rec, targets: torch.Tensor, exclude: torch.Tensor, cfg: TrainConfig,
                   gen: torch.Generator, log_q: torch.Tensor | None = None) -> torch.Tensor | None:
    """The negatives of the positive ``targets`` (P,), from ``gen``: None for ``ce`` (the whole
    catalogue), the (K,) items shared by the batch for ``sampled_softmax`` (its distinct targets for
    the in-batch sampler; ``log_q`` is the proposal of :func:`sampler_log_q`), else (P, K) items per
    position outside ``exclude`` (P, W), the user's items."""
    if cfg.loss == "ce":
        return None
    if cfg.loss == "sampled_softmax":
        if log_q is None:
            raise ValueError("sampled_softmax needs the proposal's log-probabilities (sampler_log_q)")
        return targets.unique() if cfg.sampler == "in_batch" else sample_shared(log_q, cfg.sampled_negatives, gen)
    return sample_negatives(gen, model.n_items, exclude, cfg.num_negatives)


def ranking_loss(model: H2Rec, state, targets: torch.Tensor, exclude: torch.Tensor, cfg: TrainConfig,
                 gen: torch.Generator, log_q: torch.Tensor | None = None,
                 seen: tuple[torch.Tensor, torch.Tensor] | None = None,
                 negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position ranking losses (P,) of the positive ``targets`` (P,): against the whole
    catalogue (``ce``), negatives shared by the batch (``sampled_softmax``; ``log_q`` is the
    proposal of :func:`sampler_log_q`), or negatives sampled per position outside ``exclude``
    (P, W), the user's items (``bpr``, ``bce``, ``gbce``). Accidental hits never count as negatives.
    ``seen`` (ce): (position, item) pairs left out of the softmax (:func:`seen_pairs`).
    ``negatives``: drawn already (:func:`draw_negatives`); None: drawn here."""
    device = model.device
    targets_d = targets.to(device)
    if cfg.loss == "ce":
        target_scores = model.score(state, targets_d[:, None])[:, 0]
        seen_d = None if seen is None else (seen[0].to(device), seen[1].to(device))
        return chunked_cross_entropy(lambda start, end: mask_seen(model.score_range(state, start, end), start, seen_d),
                                     model.n_items, target_scores, cfg.ce_chunk_items, cfg.label_smoothing)
    if negatives is None:
        negatives = draw_negatives(model, targets, exclude, cfg, gen, log_q)
    if cfg.loss == "sampled_softmax":
        shared_d = negatives.to(device)
        pos = model.score(state, targets_d[:, None])[:, 0]
        neg = model.score_shared(state, shared_d)  # (P, K)
        log_q = log_q.to(device)
        return sampled_softmax_shared(pos, neg, log_q[targets_d] if cfg.logq else None,
                                      log_q[shared_d] if cfg.logq else None, targets_d[:, None] == shared_d[None, :])
    scores = model.score(state, torch.cat([targets[:, None], negatives], 1).to(device))  # (P, 1 + K)
    pos, neg = scores[:, 0], scores[:, 1:]
    hits = (negatives == targets[:, None]).to(device)
    if cfg.loss == "bpr":
        return bpr(pos, neg, hits)
    if cfg.loss == "bce":
        return bce(pos, neg, hits)
    return gbce(pos, neg, sampling_rate=cfg.num_negatives / max(model.n_items - 1, 1), t=cfg.gbce_t, hits=hits)


def next_item_targets(rows: torch.Tensor, first_target: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-item targets (B, W - 1) of right-padded causal rows (B, W); target 0 = none.
    Positions before ``first_target`` (B,) keep their input but lose their target, which another
    window trains (see :class:`~h2rec.data.TrainingWindows`)."""
    items = rows[:, :-1] * (rows[:, 1:] != 0)
    targets = rows[:, 1:]
    if first_target is not None:
        targets = targets * (torch.arange(targets.shape[1])[None, :] >= first_target[:, None])
    return items, targets


def training_step(model: H2Rec, rows: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
                  first_target: torch.Tensor | None = None, log_q: torch.Tensor | None = None,
                  distill: RetrievalDistillation | None = None, owners: torch.Tensor | None = None,
                  melt: BilateralBranches | None = None, shard: Shard | None = None) -> dict[str, torch.Tensor]:
    """Eq. 11 on one batch of right-padded training rows (CPU); returns the loss parts.
    ``first_target`` (B,): causal input positions before it only give context (see
    :class:`~h2rec.data.TrainingWindows`); ``log_q``: the sampled-softmax proposal; ``distill`` and
    ``owners`` (B,): LLM-ESR's self-distillation and the user of each row that is its user's latest
    window (-1 otherwise; see h2rec.rivals.llmesr_distill); ``melt``: MELT's branches, the epoch's next
    batch of head users and items (see h2rec.rivals.melt_branches).

    ``shard`` (under torchrun): this process computes its rows of the batch, and each part is its
    share, such that DistributedDataParallel's mean of the gradients is one process's gradient
    (h2rec.distributed). The random draws are made for the whole batch either way, in one order."""
    # the batch's random draws, all from ``gen`` and for all of its rows
    if model.causal:
        items, targets = next_item_targets(rows, first_target)
    else:  # BERT4Rec's cloze task, in both branches (cloze windows do not overlap)
        items, targets = cloze_mask(rows, mask_token=model.mask_token, mask_prob=cfg.mask_prob, generator=gen)
    use_ca = model.cfg.kind == "h2rec" and cfg.beta > 0
    use_msg = model.cfg.kind == "h2rec" and cfg.gamma > 0
    msg_level = torch.randint(0, model.n_levels, (len(rows),), generator=gen) if use_msg else None
    where = targets > 0
    row_of = torch.arange(len(rows))[:, None].expand_as(targets)[where]
    negatives = draw_negatives(model, targets[where], rows[row_of], cfg, gen, log_q)
    if use_ca:  # L_CA's item positions (row, column), at most ca_max_items of them
        b, t = (items > 0).logical_and(items != model.mask_token).nonzero(as_tuple=True)
        if len(b) > cfg.ca_max_items:
            keep = torch.randperm(len(b), generator=gen)[: cfg.ca_max_items]
            b, t = b[keep], t[keep]
        sampled = items[b, t]

    ghost = False
    if shard is not None:  # this process's rows of the batch; what it draws follows its rows
        batch = {"rows": len(rows), "targets": len(row_of), "users": row_of.unique().numel(),
                 "students": 0 if distill is None else int(distill.students(owners).sum())}
        mine, ghost = shard.rows(len(rows))
        width = int(rows[mine].ne(0).sum(1).max())  # its own right padding only
        items, targets, rows = items[mine, :width], targets[mine, :width], rows[mine, :width]
        msg_level = None if msg_level is None else msg_level[mine]
        owners = None if owners is None else owners[mine]
        if negatives is not None and cfg.loss != "sampled_softmax":  # (P, K): its rows' positions
            negatives = negatives[torch.isin(row_of, mine)]
        where = targets > 0
        row_of = torch.arange(len(rows))[:, None].expand_as(targets)[where]

    device = model.device
    encoded, masked = model(items.to(device), None if msg_level is None else msg_level.to(device))
    seen = seen_pairs(items, targets, where) if cfg.exclude_seen and model.causal else None
    losses = ranking_loss(model, encoded.select(where.to(device)), targets[where], rows[row_of], cfg, gen, log_q,
                          seen, negatives)
    if shard is None:
        parts = {"rec": reduce_positions(losses, row_of.to(device), cfg.rec_reduction)}  # Eq. 10
    else:  # Eq. 10's mean over the batch's positions (or users): this process's sum over their count
        parts = {"rec": shard.share(losses.sum(), batch["targets" if cfg.rec_reduction == "mean" else "users"],
                                    ghost)}
    total = parts["rec"]

    if use_ca:
        sampled, b_d, t_d = sampled.to(device), b.to(device), t.to(device)
        positives = alignment_positives(sampled, model.codes.item_codes(sampled), b_d, t_d, cfg.code_match, cfg.window)
        if shard is None:
            e_sid, e_hid = encoded.e_sid[b_d, t_d], encoded.e_hid[b_d, t_d]
        else:  # the batch's sampled positions, each from the process that holds its row
            holders = shard.holders(b)
            own = holders[shard.group.rank]
            local_b, local_t = shard.local(b[own]).to(device), t[own].to(device)
            e_sid = gather_rows(encoded.e_sid[local_b, local_t], holders, shard.group)
            e_hid = gather_rows(encoded.e_hid[local_b, local_t], holders, shard.group)
        parts["ca"] = code_guided_alignment(e_sid, e_hid, positives, cfg.tau)
        total = total + cfg.beta * parts["ca"]  # Eq. 11
    if use_msg:
        u_sid, u_masked = encoded.last().u_sid, at_last(masked, encoded.padding_mask)
        if shard is not None:  # the batch's users, each from the process that holds its row
            holders = shard.holders(torch.arange(batch["rows"]))
            held = len(holders[shard.group.rank])  # a ghost holds none
            u_sid = gather_rows(u_sid[:held], holders, shard.group)
            u_masked = gather_rows(u_masked[:held], holders, shard.group)
        parts["msg"] = masked_granularity(u_sid, u_masked, cfg.tau)
        total = total + cfg.gamma * parts["msg"]  # Eq. 11
    if distill is not None:
        parts["distill"] = distill.loss(model, encoded, owners)
        if shard is not None:  # a mean over the batch's students: this process's sum over their count
            students = int(distill.students(owners).sum())
            parts["distill"] = shard.share(parts["distill"] * students, batch["students"], ghost)
        total = total + cfg.distill_weight * parts["distill"]  # LLM-ESR (L8): L = L_rec + α L_sd
    if melt is not None:
        parts["user_branch"], parts["item_branch"] = melt.losses(model, gen)
        # MELT (M8): L = L_rec + λ_U L_u + λ_I L_i
        total = total + cfg.user_branch_weight * parts["user_branch"] + cfg.item_branch_weight * parts["item_branch"]
    if ghost:  # DDP expects a gradient for every parameter from every process: the ghost's are zero
        total = total + 0.0 * sum(output.sum() for output in forward_outputs(encoded, masked))
    parts["total"] = total
    return parts


def forward_outputs(*values) -> list[torch.Tensor]:
    """The floating-point tensors among ``values`` and their dataclass fields (a forward pass's outputs)."""
    found = []
    for value in values:
        fields = [getattr(value, f.name) for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) \
            else [value]
        found += [t for t in fields if torch.is_tensor(t) and t.is_floating_point()]
    return found


# ----------------------------------------------------------------------------- many processes
def idle_parameters(model: torch.nn.Module, cfg: TrainConfig) -> set[str] | None:
    """The parameters no training step of this configuration uses (names), or None for a model kind
    not described here. A BERT4Rec mask token's stand-ins serve only inputs that hold mask tokens, and
    H2Rec's granularity mask only L_MSG; one process leaves them without a gradient, so AdamW leaves
    them as they are."""
    if isinstance(model, H2Rec):
        idle = {"cloze_levels"} if model.has_sid and model.causal else set()
        if model.has_sid and not (model.cfg.kind == "h2rec" and cfg.gamma > 0):
            idle.add("msg_mask")
        return idle
    if isinstance(model, LLMESR):
        return {"se_mask"} if model.causal else set()
    return None


class BatchLoss(torch.nn.Module):
    """A model and :func:`training_step` as one module. DistributedDataParallel follows the
    parameters a forward pass uses; the loss also scores candidates with the item tables after the
    encoder, and draws on the model's teachers (LLM-ESR) and branches (MELT)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *batch, **options) -> dict[str, torch.Tensor]:
        return training_step(self.model, *batch, **options)


def data_parallel(model: torch.nn.Module, cfg: TrainConfig) -> DistributedDataParallel:
    """``model``'s loss under DistributedDataParallel, which averages the processes' gradients in
    backward. DDP expects a gradient for every trainable parameter in every step: the idle ones
    (:func:`idle_parameters`) stop being trainable, which changes nothing (they never had a
    gradient; the optimizer keeps them, so a checkpoint is the same). For a model kind not described
    there, DDP looks for parameters without a gradient after every forward pass
    (``find_unused_parameters``), which costs a walk of the graph per step."""
    idle = idle_parameters(model, cfg)
    for name, parameter in model.named_parameters():
        if idle is not None and name in idle:
            parameter.requires_grad_(False)
    # the buffers are constants (codes, text embeddings): rank 0's need not be sent before every step
    quiet_buffers = ({"forward_sync_buffers": False} if "forward_sync_buffers" in DDP_OPTIONS  # torch >= 2.13
                     else {"broadcast_buffers": False})
    return DistributedDataParallel(BatchLoss(model), find_unused_parameters=idle is None, **quiet_buffers)


DDP_OPTIONS = inspect.signature(DistributedDataParallel).parameters


def cpu_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict with its tensors on the CPU, to send to the other processes."""
    state = optimizer.state_dict()
    moved = {index: {key: value.cpu() if torch.is_tensor(value) else value for key, value in moments.items()}
             for index, moments in state["state"].items()}
    return {"state": moved, "param_groups": state["param_groups"]}


# ----------------------------------------------------------------------------- the run
def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter, ICLR 2019). As in nanoGPT, weight decay applies to matrices
    (embedding tables, projections) and not to biases, layer norms or other vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.lr)


def learning_rate(tc: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then constant, or a cosine or linear decay that reaches 0 at ``total_steps``."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    progress = min(1.0, (step - tc.warmup_steps) / max(1, total_steps - tc.warmup_steps))
    if tc.lr_schedule == "cosine":
        return tc.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return tc.lr * (1.0 - progress)


def _open_run(run_dir: Path, config: Config | None, resume: bool
              ) -> tuple[Config, semid.SemanticIDs, Dataset, dict[str, tuple]]:
    """The run's configuration, semantic IDs and dataset, every check made before a file is written.
    A resumed run continues with its saved configuration, changed only where ``RESUMABLE`` allows,
    on data that match its fingerprint."""
    if not resume:
        if (run_dir / "config.json").exists():
            raise H2RecError(f"{run_dir}: already holds a run; pass resume=True (--resume) or choose another folder")
        if config is None:
            raise H2RecError("a new run needs a configuration")
        config, sids, ds = prepare(runfolder.absolute_paths(config))
        runfolder.check_catalogue_coverage(config, ds)
        runfolder.check_before_training(config, ds)
        return config, sids, ds, {}
    if not (run_dir / "config.json").is_file():
        raise H2RecError(f"{run_dir}: no run to resume (no config.json); train without --resume to start one")
    saved = read_run_config(run_dir)
    given, sids, ds = prepare(runfolder.absolute_paths(config if config is not None else saved))
    config, changes = runfolder.resume_config(saved, given)
    runfolder.check_data(run_dir, config, sids, ds)
    return config, sids, ds, changes


def train(config: Config | None, run_dir: str | Path, resume: bool = False, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None, test: bool = True) -> dict:
    """Trains ``config`` into ``run_dir``; returns the results (also written to ``results.json``).

    One writer per folder: a second ``train`` on the same folder fails at once. ``resume=True``
    continues the run from its last checkpoint; ``config`` may then be None (continue as saved) or
    change only the settings in :data:`h2rec.runfolder.RESUMABLE` (others are refused).
    ``on_epoch(record)`` is called after each epoch's checkpoint with that epoch's metrics line
    (``valid_NDCG@10`` and the rest when the epoch was evaluated); an exception it raises (e.g.
    Optuna's ``TrialPruned``) stops the run and propagates. ``test=False`` leaves the test split
    unread: results hold validation metrics only (a hyper-parameter search selects on those).

    Under torchrun (WORLD_SIZE > 1) every process calls this with the same arguments: rank 0 alone
    holds and writes ``run_dir``, ``on_epoch`` is called on rank 0 only, and every process returns
    the results (see h2rec.distributed).
    """
    run_dir = Path(run_dir)
    group = join(config.train.device if config is not None else "auto")
    try:
        if config is not None:
            check_batch_size(config.train.batch_size, group)
        with contextlib.ExitStack() as held, quiet_unless_main(group):
            def open_run():  # rank 0: one writer per folder, then every check before a file is written
                held.enter_context(one_writer(run_dir, "h2rec train"))
                return _open_run(run_dir, config, resume)

            return _train(open_run, run_dir, resume, progress, on_epoch, test, group)
    finally:
        leave(group)


def _train(open_run: Callable[[], tuple], run_dir: Path, resume: bool, progress: bool,
           on_epoch: Callable[[dict], None] | None, test: bool, group: Group) -> dict:
    # the others wait for rank 0's configuration, then read the same data
    opened = group.from_rank0(open_run, lambda opened: opened[0].to_dict())
    if group.main:
        config, sids, ds, changes = opened
    else:
        (config, sids, ds), changes = prepare(build_config(opened, source="rank 0")), {}
    check_batch_size(config.train.batch_size, group)
    progress = progress and group.main
    for key, (old, new) in changes.items():
        logger.info("resume: %s %r -> %r", key, old, new)
    device = group.device if group.distributed else resolve_device(config.train.device)
    tc = config.train
    gen = seed_everything(tc.seed)
    model = build_model(config, sids).to(device)
    optimizer = make_optimizer(model, tc)
    # the deterministic tiling (a random phase changes the count by a little): it sizes the schedule
    tiling = training_windows(ds.train, config.data.max_len, model.causal,
                              "last" if tc.windows == "last" else "sliding", tc.window_stride)
    if not len(tiling):
        raise H2RecError(f"{config.data.interactions}: no user has enough items to train on")
    log_q = sampler_log_q(tc, ds.popularity)
    distill = build_distillation(config, ds, model)  # LLM-ESR's; None for other models
    melt = build_branches(config, ds, model)  # MELT's; None for other models
    # the decay horizon of the learning-rate schedule: train.epochs epochs of the deterministic tiling
    total_steps = tc.epochs * math.ceil(len(tiling) / tc.batch_size)

    def start_run() -> dict:  # rank 0: the last checkpoint, or the run folder's first files
        state = {"epoch": 0, "step": 0, "best_ndcg10": -1.0, "best_epoch": 0, "best_step": 0, "bad_epochs": 0,
                 "history": [], "stopped": False}
        if resume and (run_dir / "checkpoints" / "last.json").is_file():
            state = load_checkpoint(run_dir, model, optimizer, gen)
            files = state.pop("files")
            remove_leftovers(run_dir, files)
            # a kill between the checkpoint and metrics.jsonl loses no line: the checkpoint holds the history
            write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state["history"]))
            if changes:  # a new patience or length decides afresh whether the run is over
                state["stopped"] = stop_now(state, tc)
        else:
            if melt is not None and config.train.melt_init:
                warm_start(model, config, sids, ds)  # MELT's pretrained start
            remove_leftovers(run_dir, {})
            meta = {"h2rec_version": __version__, "format_version": FORMAT_VERSION, **config.to_dict()}
            write_json(run_dir / "config.json", meta)
            write_json(run_dir / "data_stats.json", ds.stats)
            runfolder.write_data_record(run_dir, config, sids, ds)
        if changes:  # config.json says what the run continues with, and what changed at which epoch
            meta = read_json(run_dir / "config.json")
            history = meta.get("resumed_with_changes", []) + [
                {"at_epoch": state["epoch"], **{key: [old, new] for key, (old, new) in changes.items()}}]
            write_json(run_dir / "config.json", {**meta, **config.to_dict(), "resumed_with_changes": history})
        return state

    # the others take rank 0's state, optimizer moments, run generator and weights
    handed = group.from_rank0(start_run, lambda state: {"state": state, "optimizer": cpu_state(optimizer),
                                                         "generator": gen.get_state()})
    state = handed if group.main else handed["state"]
    ddp = shard = None
    if group.distributed:
        if not group.main:
            optimizer.load_state_dict(handed["optimizer"])
            gen.set_state(handed["generator"])
        group.broadcast_module(model)
        ddp, shard = data_parallel(model, tc), Shard(group)

    def end_epoch(state: dict, record: dict, improved: bool) -> dict:  # rank 0: the checkpoint, the metrics line
        epoch = record["epoch"]
        save_checkpoint(run_dir, model, optimizer, gen, state, best_model=model if improved else None)
        write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state["history"]))
        logger.info(f"epoch {epoch}/{tc.epochs}: " + ", ".join(f"{k}={v}" for k, v in record.items() if k != "epoch")
            + (f" | best valid NDCG@10 {state['best_ndcg10']:.5f} at epoch {state['best_epoch']}"
               if state["best_epoch"] else ""))
        if on_epoch is not None:
            on_epoch(record)
        return state

    selection_negatives = selection_protocol(config)
    protocol = selection_name(config)
    logger.info(f"{config.model.kind}/{config.model.backbone} on {device}: {len(tiling)} training windows "
        f"({tc.windows}), {ds.n_items} items, {len(ds.valid)} evaluated users; "
        f"selecting on valid NDCG@10 ({protocol})")
    while state["epoch"] < tc.epochs and not state["stopped"]:
        epoch = state["epoch"] + 1
        model.train()
        start = time.perf_counter()
        sums: dict[str, float] = {}
        if group.distributed:  # each process's dropout stream, a function of (seed, rank, epoch): resume redraws it
            torch.manual_seed(group.epoch_seed(tc.seed, epoch))
        # a new random phase each epoch, drawn from the run's generator (so resume redraws it exactly)
        phase_state = gen.get_state()  # what the phases are drawn from: the distillation redraws them on a copy
        windows = tiling if tc.windows != "random" else training_windows(
            ds.train, config.data.max_len, model.causal, "random", tc.window_stride, gen)
        owners = None if distill is None else distill.owners(windows, model.causal, tc.windows, tc.window_stride,
                                                             phase_state)
        lengths = windows.lengths
        batches = epoch_batches(lengths, tc.batch_size, tc.bucket_batches, gen)
        n_batches = len(batches)
        if melt is not None:  # the curriculum's epoch, the tail items' refresh, the head users and items
            melt.start_epoch(model, epoch, n_batches, gen)
        bar = progress_bar(batches, f"epoch {epoch}/{tc.epochs}", progress)
        for index in bar:
            rows = windows.rows[index, : int(lengths[index].max())]  # right padding: drop all-padding columns
            for param_group in optimizer.param_groups:
                param_group["lr"] = learning_rate(tc, state["step"], total_steps)
            batch = (rows, tc, gen, windows.first_target[index], log_q, distill,
                     None if owners is None else owners[index], melt)
            parts = training_step(model, *batch) if ddp is None else ddp(*batch, shard=shard)
            optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            state["step"] += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            if progress:
                bar.set_postfix(loss=f"{float(parts['total'].detach()):.4f}", refresh=False)
        sums = group.mean(sums)  # each process's share of each batch's loss: their mean is the batch's
        train_seconds = time.perf_counter() - start
        record = {"epoch": epoch, "step": state["step"], "lr": round(optimizer.param_groups[0]["lr"], 8),
                  "train_seconds": round(train_seconds, 2),
                  **{f"loss_{k}": round(v / n_batches, 5) for k, v in sums.items()}}

        improved = False
        if epoch % tc.eval_every == 0 or epoch == tc.epochs:
            start = time.perf_counter()
            valid = evaluate_split(model, ds, "valid", config.eval, config.data.max_len, selection_negatives,
                                   progress, group)["overall"]
            record.update({"eval_seconds": round(time.perf_counter() - start, 2),
                           **{f"valid_{k}": round(v, 5) for k, v in valid.items() if k != "n"}})
            if valid["NDCG@10"] > state["best_ndcg10"]:
                state.update(best_ndcg10=valid["NDCG@10"], best_epoch=epoch, best_step=state["step"], bad_epochs=0)
                improved = True
            else:
                state["bad_epochs"] += tc.eval_every
                state["stopped"] = stop_now(state, tc)
        state["epoch"] = epoch
        state["history"].append(record)
        state = group.from_rank0(functools.partial(end_epoch, state, record, improved))  # rank 0 decides the stop

    logger.info(stop_reason(state, tc))
    group.from_rank0(lambda: load_weights(model, best_weights_path(run_dir)), lambda _: None)
    group.broadcast_module(model)
    results = final_results(model, ds, config, state, device, splits=("valid", "test") if test else ("valid",),
                            progress=progress, group=group)
    if group.distributed:
        results["processes"] = group.world_size
    if group.main:
        write_json(run_dir / "results.json", results)
    return results


def stop_now(state: dict, tc: TrainConfig) -> bool:
    """Early stopping: both clocks must run out: epochs for large data, optimizer steps for small data,
    where an epoch is a handful of steps and 10 epochs end a run long before convergence."""
    return state["bad_epochs"] >= tc.patience and state["step"] - state["best_step"] >= tc.patience_steps


def stop_reason(state: dict, tc: TrainConfig) -> str:
    """Why training ended, for the log."""
    best = f"best valid NDCG@10 {state['best_ndcg10']:.5f} at epoch {state['best_epoch']}"
    if state["stopped"]:
        return (f"stopped early after epoch {state['epoch']} of {tc.epochs}: no better validation NDCG@10 for "
                f"{state['bad_epochs']} epochs and {state['step'] - state['best_step']} optimizer steps "
                f"(patience {tc.patience} epochs and {tc.patience_steps} steps); {best}")
    return f"reached the last epoch ({tc.epochs}); {best}"
