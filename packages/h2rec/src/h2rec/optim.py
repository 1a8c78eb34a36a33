"""The optimizer and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

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
