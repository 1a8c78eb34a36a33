"""Training (Algorithm 1): the loop. Epochs of batches, each an optimizer step on Eq. 11
(h2rec.step computes the loss), early stopping on validation NDCG@10, checkpoints, exact resume.

All randomness of the data side (shuffling, negatives, cloze masks, L_MSG levels, L_CA samples)
comes from one CPU ``torch.Generator`` seeded with ``train.seed``; dropout uses torch's global
RNG, seeded the same way. Both are saved in every checkpoint, so ``resume=True`` after a crash
continues exactly where the run stopped and ends with the same numbers as an uninterrupted run (on CPU).
Under torchrun, N processes share each batch (h2rec.distributed).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import semid
import torch
from semid.io import one_writer

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
from .compiled import compile_blocks
from .config import Config, TrainConfig, build_config
from .data import Dataset, training_windows
from .ddp import cpu_state, data_parallel
from .distributed import Group, Shard, check_batch_size, join, leave, quiet_unless_main
from .errors import H2RecError
from .evaluate import evaluate_split, final_results, selection_name, selection_protocol
from .optim import LazyTableAverage, ema_decay, learning_rate, make_average, make_optimizer
from .progress import progress_bar
from .rivals.llmesr_distill import build_distillation
from .rivals.melt_branches import build_branches, warm_start
from .runfolder import read_run_config
from .step import sampler_log_q, training_step
from .version import __version__

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the epoch's batches
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
        if group.distributed:
            # the run's DistributedDataParallel wrapper sits in reference cycles and holds the process
            # group; collected only at interpreter exit, after destroy_process_group, its gloo work can
            # abort the process ("terminate called without an active exception", rank 1, rarely). So
            # collect it here, whoever owns the group: a caller's group (started False) is destroyed
            # by the caller, after this returns (CI's abort was in such a run: tests/h2rec/test_ddp.py)
            gc.collect()
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
    if tc.sparse_ids and group.distributed:  # DDP's gradient buckets are dense
        raise H2RecError("train.sparse_ids trains in one process; under torchrun leave it off")
    gen = seed_everything(tc.seed)
    model = build_model(config, sids).to(device)
    optimizer = make_optimizer(model, tc)
    # the deterministic tiling (a random phase changes the count by a little): it sizes the schedule
    tiling = training_windows(ds.train, config.data.max_len, model.causal,
                              "last" if tc.windows == "last" else "sliding", tc.window_stride)
    if not len(tiling):
        raise H2RecError(f"{config.data.interactions}: no user has enough items to train on")
    steps_per_epoch = math.ceil(len(tiling) / tc.batch_size)
    decay = ema_decay(tc, steps_per_epoch)
    average = make_average(model, decay, tc.ema_warmup)  # None unless train.ema_epochs or train.ema_decay > 0
    # under train.sparse_ids the average's table rows are updated as the steps read them (optim.LazyTableAverage)
    lazy = LazyTableAverage(average, model, decay, tc.ema_warmup) if average is not None and tc.sparse_ids else None
    chosen = model if average is None else average.module  # the weights validation reads and keeps
    if tc.compile:  # the trained model's blocks; the average, a copy, stays eager (h2rec.compiled)
        compile_blocks(model)
    log_q = sampler_log_q(tc, ds.popularity)
    distill = build_distillation(config, ds, model)  # LLM-ESR's; None for other models
    melt = build_branches(config, ds, model)  # MELT's; None for other models
    # the decay horizon of the learning-rate schedule: train.epochs epochs of the deterministic tiling
    total_steps = tc.epochs * steps_per_epoch

    def start_run() -> dict:  # rank 0: the last checkpoint, or the run folder's first files
        state = {"epoch": 0, "step": 0, "best_ndcg10": -1.0, "best_epoch": 0, "best_step": 0, "bad_epochs": 0,
                 "history": [], "stopped": False}
        if resume and (run_dir / "checkpoints" / "last.json").is_file():
            state = load_checkpoint(run_dir, model, optimizer, gen, average)
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
        if average is not None:
            group.broadcast_module(average)
        ddp, shard = data_parallel(model, tc), Shard(group)

    def end_epoch(state: dict, record: dict, improved: bool) -> dict:  # rank 0: the checkpoint, the metrics line
        epoch = record["epoch"]
        save_checkpoint(run_dir, model, optimizer, gen, state, best_model=chosen if improved else None,
                        average=average)
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
        + (f"validating a weight average of decay {decay:.5f} a step; " if decay else "") +
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
            read = lazy.rows_read() if lazy is not None else None
            optimizer.step()
            if lazy is not None:
                lazy.update(model, *read)
            elif average is not None:
                average.update_parameters(model)
            state["step"] += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            if progress:
                bar.set_postfix(loss=f"{float(parts['total'].detach()):.4f}", refresh=False)
        sums = group.mean(sums)  # each process's share of each batch's loss: their mean is the batch's
        if lazy is not None:  # before validation reads the average and the checkpoint saves it
            lazy.flush()
        train_seconds = time.perf_counter() - start
        record = {"epoch": epoch, "step": state["step"], "lr": round(optimizer.param_groups[0]["lr"], 8),
                  "train_seconds": round(train_seconds, 2),
                  **{f"loss_{k}": round(v / n_batches, 5) for k, v in sums.items()}}

        improved = False
        if epoch % tc.eval_every == 0 or epoch == tc.epochs:
            start = time.perf_counter()
            valid = evaluate_split(chosen, ds, "valid", config.eval, config.data.max_len, selection_negatives,
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
