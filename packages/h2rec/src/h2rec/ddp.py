"""The training loss under DistributedDataParallel (torchrun; the process group itself is
h2rec.distributed): which parameters no step uses, the model and its loss as one module, and the
optimizer state sent to the other processes.
"""

from __future__ import annotations

import inspect

import torch
from torch.nn.parallel import DistributedDataParallel

from .config import TrainConfig
from .model import H2Rec
from .rivals.ccfrec import CCFRec
from .rivals.llmesr import LLMESR
from .rivals.pcrca import PCRCA
from .step import training_step


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
    if isinstance(model, PCRCA):
        return {"sem_mask"} if model.causal else set()
    if isinstance(model, CCFRec):
        return {"cloze_item"} if model.causal else set()
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
