"""torchrun for ``h2rec train``: which process this is, its part of each batch, and rank 0's word to the others.

``torchrun --nproc_per_node N -m h2rec train ...`` starts N processes running the same command. The
process group exists only when WORLD_SIZE > 1: gloo on the CPU, nccl on CUDA (rank r on
cuda:LOCAL_RANK). Alone, a process is ``Group()`` and nothing here communicates.

The N processes train the run one process trains with the same global batch (``train.batch_size``):

- **batches**: every process holds the same run generator, so it cuts the same windows and the same
  global batches, and draws every random number of a batch (negatives, cloze masks, L_MSG levels,
  L_CA samples) for the whole batch, as one process does. Each then computes its rows of the batch,
  rank, rank + N, ... (:class:`Shard`; strided, so that batches sorted by length split evenly);
- **gradients**: each process's loss is its share of the batch's loss, scaled so that the gradients
  DistributedDataParallel averages are the one process's gradient. A ranking loss averaged over the
  positions (or users) of the batch becomes the process's sum over the batch's count, times N. L_CA
  and L_MSG contrast each item with the batch's others: every process gathers the batch's vectors
  (:func:`gather_rows`) and computes the whole loss; backward keeps its own rows' gradient, times N.
  A part that does not depend on the batch's rows (MELT's branches) every process computes whole,
  from the same draws: the mean of N equal gradients is that gradient;
- **evaluation**: batches of users go round-robin to the processes, the same batches one process
  makes; each user's target rank comes from one process, zeros from the others, and the processes'
  arrays are summed, so metrics are one process's;
- **rank 0 alone** holds the run folder's lock and writes its files (config.json, metrics.jsonl,
  checkpoints, results.json); the others never touch it. Rank 0 sends them the configuration, the
  checkpoint's state on resume, and after each epoch the run's state, which carries the
  early-stopping decision (:meth:`Group.from_rank0`). If rank 0 fails at those points the others
  stop with its message rather than wait; a process that dies elsewhere is torchrun's to handle (it
  stops the others);
- **dropout** is the one random draw that is per process: each seeds its stream from (seed, rank,
  epoch) at the start of every epoch, so a resumed run draws the same masks. With dropout off, N
  processes follow the one process's loss curve to float rounding.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from .errors import H2RecError

T = TypeVar("T")

# How long a process waits for another in a collective: the others wait while rank 0 reads and
# checks the data (a large file's SHA-256) or writes a checkpoint of a large item table, and a
# process on another node may have to build its dataset cache first. torch's 30 minutes could end
# such a run; a rank that dies is torchrun's to handle, so a long wait costs nothing there.
TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class _Stopped:
    """Rank 0's word instead of a value: why it stopped."""

    reason: str


@dataclass(frozen=True)
class Group:
    """This process's place in a torchrun job; ``Group()`` is a process on its own."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # under torchrun: cuda:LOCAL_RANK or cpu; None on its own (train.device)
    started: bool = False  # whether join() initialised the process group (and leave() ends it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder, logs and shows progress (rank 0)."""
        return self.rank == 0

    def from_rank0(self, work: Callable[[], T], message: Callable[[T], Any] = lambda value: value) -> Any:
        """Rank 0 runs ``work()`` and sends ``message(its value)`` to the others, which wait for it.
        Returns the value on rank 0 (alone: always) and the message on the others. When ``work``
        raises on rank 0, the others raise an H2RecError saying why. Every process calls this at the
        same point of the run."""
        if not self.distributed:
            return work()
        if self.main:
            try:
                value = work()
            except BaseException as error:
                dist.broadcast_object_list([_Stopped(str(error) or type(error).__name__)], src=0)
                raise
            dist.broadcast_object_list([message(value)], src=0)
            return value
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], _Stopped):
            raise H2RecError(f"rank 0 stopped: {box[0].reason}")
        return box[0]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes, in place (on this process's device for nccl)."""
        if not self.distributed:
            return tensor
        on_device = tensor.to(self.device)
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        tensor.copy_(on_device)
        return tensor

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The processes' mean of each value (every process passes the same keys)."""
        if not self.distributed:
            return values
        keys = list(values)
        summed = self.sum_(torch.tensor([values[k] for k in keys], dtype=torch.float64))
        return {k: float(v) / self.world_size for k, v in zip(keys, summed.tolist())}

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's weights (the state dict: what a checkpoint holds) into every process's ``module``."""
        if not self.distributed:
            return
        for tensor in module.state_dict().values():  # detached views of the module's own tensors
            dist.broadcast(tensor, src=0)

    def epoch_seed(self, seed: int, epoch: int) -> int:
        """The seed of this process's dropout stream in ``epoch``: a function of (seed, rank, epoch) alone."""
        return int(np.random.SeedSequence([seed, self.rank, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def main_process() -> bool:
    """Whether this process is rank 0 of a torchrun job, or alone: the one that prints and tracks.
    Read from torchrun's environment, so it holds before :func:`join` (the CLI asks it)."""
    return int(os.environ.get("RANK", "0")) == 0


def join(device: str = "auto") -> Group:
    """This process's Group. A process group the caller has initialised is used as it is (and left
    to the caller); otherwise torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) says, and the
    group is initialised when WORLD_SIZE > 1. ``device`` is train.device: "cpu" runs on gloo, a CUDA
    device (or "auto" where CUDA is present) on nccl, with this process on cuda:LOCAL_RANK."""
    started = not (dist.is_available() and dist.is_initialized())
    if started:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1 and "RANK" not in os.environ:
            raise H2RecError(f"WORLD_SIZE is {world_size} but RANK is not set; start h2rec with torchrun, "
                             "or unset WORLD_SIZE")
        rank = int(os.environ.get("RANK", "0"))
    else:
        world_size, rank = dist.get_world_size(), dist.get_rank()
    if world_size <= 1:
        return Group()
    from .assemble import resolve_device  # late: assemble imports the models

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    elif chosen.type != "cpu":
        raise H2RecError(f"train.device is {device!r} ({chosen.type}); torchrun trains on the CPU (gloo) "
                         "or on CUDA (nccl)")
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if not started and dist.get_backend() != backend:
        raise H2RecError(f"the process group runs {dist.get_backend()}, and training on {chosen} needs {backend}")
    if started:
        try:
            dist.init_process_group(backend, timeout=TIMEOUT)
        except (RuntimeError, ValueError) as error:
            raise H2RecError(f"WORLD_SIZE is {world_size}, but torch.distributed cannot start ({error}); "
                             "run under torchrun, or unset WORLD_SIZE") from None
    return Group(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen, started=started)


def leave(group: Group) -> None:
    """Ends the process group, if :func:`join` started it."""
    if group.started and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def quiet_unless_main(group: Group) -> Iterator[None]:
    """h2rec's information logs from rank 0 only: the others would repeat them. Warnings pass."""
    logger = logging.getLogger("h2rec")
    if group.main:
        yield
        return
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_batch_size(batch_size: int, group: Group) -> None:
    """The global batch must split evenly over the processes (per process: batch_size / N rows)."""
    if group.distributed and batch_size % group.world_size:
        raise H2RecError(f"--batch-size (train.batch_size) is {batch_size}, which {group.world_size} processes "
                         f"cannot share evenly; the batch is the global batch, each process computing "
                         f"batch_size / {group.world_size} of its rows: use a multiple of {group.world_size}")


# ----------------------------------------------------------------------------- a process's part of a batch
@dataclass(frozen=True)
class Shard:
    """The rows of a global batch that this process computes: rank, rank + N, rank + 2N, ...

    A batch with fewer rows than processes (an epoch's last) leaves some without a row. Such a
    process computes row 0 as a *ghost*, every part of its loss weighted 0: DistributedDataParallel
    needs each process to give every parameter a gradient, and the ghost's are zero."""

    group: Group

    def rows(self, n: int) -> tuple[torch.Tensor, bool]:
        """This process's rows of an ``n``-row batch (increasing), and whether they are a ghost row."""
        own = torch.arange(n)[self.group.rank :: self.group.world_size]
        return (own, False) if len(own) else (torch.zeros(1, dtype=torch.long), True)

    def local(self, rows: torch.Tensor) -> torch.Tensor:
        """Where each of this process's batch ``rows`` sits among its rows (their index in :meth:`rows`)."""
        return rows // self.group.world_size

    def holders(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """For each process, which of the entries (m,) sitting in batch ``rows`` (m,) it computes."""
        holder = rows % self.group.world_size
        return [(holder == rank).nonzero()[:, 0] for rank in range(self.group.world_size)]

    def share(self, local_sum: torch.Tensor, count: int, ghost: bool) -> torch.Tensor:
        """This process's share of a batch loss that is a sum over the batch's ``count`` positions
        (users, rows): its own sum over ``count``, times N, since DDP divides the summed gradients by N."""
        if ghost or count == 0:
            return local_sum * 0.0
        return local_sum * (self.group.world_size / count)


class _GatherRows(torch.autograd.Function):
    """Forward: every process's rows, placed where ``holders`` says. Backward: this process's rows
    of the gradient, times N. Every process computes the same loss from the gathered rows, so each
    has the whole gradient; its own rows, times N, become after DDP's mean the gradient of one process."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, holders: list[torch.Tensor], group: Group) -> torch.Tensor:
        own = holders[group.rank].to(rows.device)
        assert len(own) == len(rows), "a process gathers exactly the rows it holds"
        width = max(len(held) for held in holders)
        padded = rows.new_zeros((width, *rows.shape[1:]))
        padded[: len(rows)] = rows
        pieces = [torch.empty_like(padded) for _ in range(group.world_size)]
        dist.all_gather(pieces, padded)
        out = rows.new_empty((sum(len(held) for held in holders), *rows.shape[1:]))
        for piece, held in zip(pieces, holders):
            out[held.to(rows.device)] = piece[: len(held)]
        ctx.own, ctx.world_size = own, group.world_size
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad[ctx.own] * ctx.world_size, None, None


def gather_rows(rows: torch.Tensor, holders: list[torch.Tensor], group: Group) -> torch.Tensor:
    """(m, ...) from every process's ``rows``: entry ``holders[r][j]`` is process r's ``rows[j]``.
    Differentiable (see :class:`_GatherRows`)."""
    return _GatherRows.apply(rows, holders, group)
