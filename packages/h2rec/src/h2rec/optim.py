"""The optimizer, the learning-rate schedule and the weight average."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import TrainConfig

FUSED_DEVICES = ("cpu", "cuda")  # devices with a fused AdamW kernel in torch 2.13


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.AdamW | LazyTableAdam:
    """AdamW (Loshchilov & Hutter, ICLR 2019). As in nanoGPT, weight decay applies to matrices
    (embedding tables, projections) and not to biases, layer norms or other vectors.

    Torch's fused kernel where the parameters' device has one (CPU, CUDA): the same update in one
    pass over each tensor instead of a chain of foreach operations, which is what a step costs once
    the item table is large (SASRec with 10^6 items, d = 64: 63 ms against 317 ms a step on one CPU
    thread, benchmarks/optimizer_step.py); other rounding, so runs differ from the foreach path in the last bits.

    With ``train.sparse_ids`` the item ID table leaves AdamW for SparseAdam (:class:`LazyTableAdam`), and
    its embedding is switched to sparse gradients, which SparseAdam needs."""
    table = model.hid if tc.sparse_ids else None  # config and assemble admit sparse_ids for models with one
    params = [p for p in model.parameters() if p.requires_grad and (table is None or p is not table.weight)]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = bool(params) and all(p.device.type in FUSED_DEVICES for p in params)
    adamw = torch.optim.AdamW(groups, lr=tc.lr, fused=True if fused else None)
    if table is None:
        return adamw
    table.sparse = True  # its backward now gives the rows read, not a zeroed (n, d) tensor with them added in
    return LazyTableAdam(adamw, torch.optim.SparseAdam([table.weight], lr=tc.lr))


class LazyTableAdam:
    """AdamW for every parameter but the item ID table, torch's SparseAdam for the table (train.sparse_ids),
    stepping as one optimizer. SparseAdam is Adam made lazy: a row the step's batch did not read keeps its
    weights and its moments, where Adam would move it by its decaying momentum.

    ``state_dict`` is one torch-style dict with the table's entries after the others', so checkpoints
    keep their format, and ``load_state_dict`` splits it again."""

    def __init__(self, dense: torch.optim.AdamW, table: torch.optim.SparseAdam):
        self.dense, self.table = dense, table

    @property
    def param_groups(self) -> list[dict]:
        return self.dense.param_groups + self.table.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none)
        self.table.zero_grad(set_to_none)

    def step(self) -> None:
        self.dense.step()
        self.table.step()

    def _offset(self, dense_groups: list[dict]) -> int:
        return sum(len(group["params"]) for group in dense_groups)

    def state_dict(self) -> dict:
        dense, table = self.dense.state_dict(), self.table.state_dict()
        offset = self._offset(dense["param_groups"])
        return {"state": {**dense["state"], **{offset + i: s for i, s in table["state"].items()}},
                "param_groups": dense["param_groups"] + [{**g, "params": [offset + i for i in g["params"]]}
                                                         for g in table["param_groups"]]}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        n_dense = len(self.dense.param_groups)
        offset = self._offset(groups[:n_dense])
        self.dense.load_state_dict({"state": {i: s for i, s in state_dict["state"].items() if i < offset},
                                    "param_groups": groups[:n_dense]})
        # SparseAdam counts its steps in a Python int (a checkpoint holds a tensor): beta ** step must
        # round as it did before the checkpoint
        self.table.load_state_dict({
            "state": {i - offset: {**s, "step": int(s["step"])} for i, s in state_dict["state"].items() if i >= offset},
            "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in groups[n_dense:]]})


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


def ema_decay(tc: TrainConfig, steps_per_epoch: int) -> float:
    """The average's decay per optimizer step: ``train.ema_decay`` when set, else the decay whose
    horizon 1 / (1 - decay) is ``train.ema_epochs`` epochs of ``steps_per_epoch`` steps; 0 = no average."""
    if tc.ema_decay > 0 or tc.ema_epochs <= 0:
        return tc.ema_decay
    return max(0.0, 1.0 - 1.0 / (tc.ema_epochs * steps_per_epoch))


def make_average(model: torch.nn.Module, decay: float, warmup: bool = False) -> AveragedModel | None:
    """An exponential moving average of the weights (None when ``decay`` is 0), torch's AveragedModel:
    after each optimizer step, average = decay * average + (1 - decay) * weights.
    With ``warmup`` the decay of the n-th update is min(decay, (n - 1) / n): until a horizon's worth of
    steps, the average is the plain mean of every step's weights so far, not mostly the first step's
    (which a short run would otherwise validate and keep).
    Validation, the best checkpoint and so every reported figure read the average; training moves the
    weights. Buffers (codes, text embeddings) are copied, not averaged."""
    if decay <= 0:
        return None
    update = warmed_ema(decay) if warmup else get_ema_multi_avg_fn(decay)
    average = AveragedModel(model, multi_avg_fn=update, use_buffers=False)
    average.requires_grad_(False)
    return average


def warmed_decay(decay: float, n: int) -> float:
    """The warm-up's decay for the average's update after ``n`` updates (the first, a copy, included)."""
    return min(decay, n / (n + 1))


def warmed_ema(decay: float):
    """AveragedModel's multi_avg_fn for an average with a warm-up of its decay (see make_average)."""
    warming = [True]  # until (n - 1) / n reaches the decay; then no more reads of the count

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        step_decay = decay
        if warming[0]:
            # updates so far, the first (a copy) included: a buffer, so resume keeps it. Reading it
            # waits for the device, so only during the warm-up (a resumed run past it reads it once)
            step_decay = warmed_decay(decay, int(n_averaged))
            warming[0] = step_decay < decay
        torch._foreach_lerp_(averaged, current, 1.0 - step_decay)
    return update


class LazyTableAverage:
    """The weights' moving average under ``train.sparse_ids``, its ID table updated lazily per row.

    SparseAdam leaves a row alone until a batch reads it, and while a row's weights w stand still its
    average a only closes in on them: a <- w + d (a - w) each step. So a row can owe its decays: when a
    step reads it (weights w_old before the step, w after), the average first pays what it owes over
    the steps it sat still, a <- w_old + (d_s+1 ... d_t-1) (a - w_old), then takes the step,
    a <- d_t a + (1 - d_t) w. The product is the exp of a difference of running sums of log d (one
    scalar, and per row its value when last paid). :meth:`flush` settles every row (before validation
    reads the average and before a checkpoint saves it) and resets the sums, so a resumed run starts
    from the state the straight run had. Every other parameter is averaged every step, as
    ``make_average``'s. The same average as the dense update, up to rounding (test), without writing
    every row of the table each step."""

    def __init__(self, average: torch.optim.swa_utils.AveragedModel, model: torch.nn.Module, decay: float,
                 warmup: bool):
        self.average, self.decay, self.warmup = average, decay, warmup
        self.table, self.averaged_table = model.hid.weight, average.module.hid.weight
        self.rest = [(a, p) for a, p in zip(average.module.parameters(), model.parameters()) if p is not self.table]
        self.paid = torch.zeros(len(self.table), dtype=torch.float64, device=self.table.device)
        self.owed_since_start = 0.0  # running sum of log d since the last flush
        # the update count is read (a device sync) only until the first copy and the warm-up are behind
        self.started, self.warming = False, warmup

    def rows_read(self) -> tuple[Tensor, Tensor]:
        """After the backward, before the optimizer step: the rows the step will move and their weights.
        The gradient is left coalesced, so SparseAdam does not sort the rows a second time."""
        self.table.grad = self.table.grad.coalesce()
        rows = self.table.grad.indices()[0]
        return rows, self.table.detach()[rows].clone()

    def _owed(self, rows: Tensor | slice) -> Tensor:
        """The product of the decays each row has not paid yet, as a column to scale its rows by."""
        return torch.exp(self.owed_since_start - self.paid[rows]).to(self.table.dtype)[:, None]

    @torch.no_grad()
    def update(self, model: torch.nn.Module, rows: Tensor, before: Tensor) -> None:
        """After the optimizer step (``rows`` and ``before`` from :meth:`rows_read`)."""
        if not self.started:
            self.started = True
            if int(self.average.n_averaged) == 0:  # the first update copies every weight, as AveragedModel's
                self.average.update_parameters(model)
                return
        d = self.decay
        if self.warming:
            d = warmed_decay(self.decay, int(self.average.n_averaged))
            self.warming = d < self.decay
        averaged, current = zip(*self.rest)
        torch._foreach_lerp_(list(averaged), [p.detach() for p in current], 1.0 - d)
        caught_up = before + self._owed(rows) * (self.averaged_table[rows] - before)
        self.averaged_table[rows] = d * caught_up + (1.0 - d) * self.table.detach()[rows]
        self.owed_since_start += math.log(d)
        self.paid[rows] = self.owed_since_start
        self.average.n_averaged += 1

    @torch.no_grad()
    def flush(self) -> None:
        """Every row's average paid up to this step; then the running sums start again from 0."""
        weights = self.table.detach()
        self.averaged_table.copy_(weights + self._owed(slice(None)) * (self.averaged_table - weights))
        self.paid.zero_()
        self.owed_since_start = 0.0
