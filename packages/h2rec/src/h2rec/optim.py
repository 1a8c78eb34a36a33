"""The optimizer, the learning-rate schedule and the weight average."""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import TrainConfig


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


def make_average(model: torch.nn.Module, tc: TrainConfig) -> AveragedModel | None:
    """An exponential moving average of the weights (``train.ema_decay`` > 0; None when off), torch's
    AveragedModel: after each optimizer step, average = decay * average + (1 - decay) * weights.
    Validation, the best checkpoint and so every reported figure read the average; training moves the
    weights. Buffers (codes, text embeddings) are copied, not averaged."""
    if tc.ema_decay <= 0:
        return None
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=False)
    average.requires_grad_(False)
    return average
