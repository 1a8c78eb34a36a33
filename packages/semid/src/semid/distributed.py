"""torchrun support: which rank this process is, and rank 0's one message to the others.

Under `torchrun --nproc_per_node N -m semid embed ITEMS -o OUT` every process runs the same command.
Rank 0 holds OUT's lock and does all that a single process does; the other ranks only embed their
share of the shards (semid.shards). Before they start they need one word from rank 0, sent once it
holds the lock and has read the items: embed (with the work area's key, which catches an item file
that changed between two reads), nothing to embed (cache hit, precomputed embeddings), or the error
that stopped it. After their shards all ranks meet in a barrier, and rank 0 joins the shards.

The process group ends as soon as the ranks have nothing more to say to each other (after the
barrier, or at once when there is nothing to embed): rank 0 then fits the quantizer alone, and
vector-quantize-pytorch would otherwise sync its k-means over the group (an all_gather that the
other ranks, gone by then, never answer).

A rank that dies is torchrun's to handle: it stops the other ranks, so none waits in the barrier
for ever; the shards already written stay, and the next run resumes from them.

The process group exists only when WORLD_SIZE > 1: gloo on the CPU, nccl when the encoder runs on
CUDA (rank r on cuda:LOCAL_RANK).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from semid.devices import resolve_device
from semid.errors import SemidError

# A rank that has finished its shards waits in the barrier for the slowest one, which after a resume may
# hold most of the remaining work: torch's default of 30 minutes would end long runs.
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Order:
    """Rank 0's word to the other ranks (see the module docstring)."""

    embed: bool  # whether there are shards to embed
    key: str | None = None  # semid.shards.ShardPlan.key of the shards to embed
    error: str | None = None  # why rank 0 stopped; the other ranks stop too


@dataclass
class Group:
    """This process's place in a torchrun job; the default, Group(), is a process on its own."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    cuda: bool = False  # nccl on CUDA, else gloo
    _told: bool = field(default=False, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def tell(self, order: Order) -> None:
        """Rank 0: send `order` to the other ranks (once per job); the group ends unless they are to embed."""
        assert self.rank == 0 and not self._told, "rank 0 tells the other ranks once per job"
        self._told = True
        if self.distributed:
            dist.broadcast_object_list([order], src=0)
            if not order.embed:
                _end()

    def hear(self) -> Order:
        """Another rank: wait for rank 0's order; the group ends unless it says to embed."""
        box: list[Order | None] = [None]
        dist.broadcast_object_list(box, src=0)
        order = box[0]
        assert isinstance(order, Order)
        if not order.embed:
            _end()
        return order

    def finish(self) -> None:
        """Every rank waits here until all have embedded their shards; then the group ends (no-op on its own)."""
        if not self.distributed:
            return
        if self.cuda:
            dist.barrier(device_ids=[self.local_rank])  # names the device nccl would otherwise guess
        else:
            dist.barrier()
        _end()

    @contextlib.contextmanager
    def leading(self) -> Iterator[None]:
        """Rank 0's job: if it ends before rank 0 has told the others anything, they are told why (an
        error) or that there is nothing to embed, so that none waits for an order that never comes."""
        self._told = False
        try:
            yield
        except BaseException as error:
            if not self._told:
                self.tell(Order(embed=False, error=str(error) or type(error).__name__))
            raise
        if not self._told:
            self.tell(Order(embed=False))


def join(device: str = "auto") -> Group:
    """This process's Group: from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), the process
    group initialised when WORLD_SIZE > 1; Group() otherwise. `device` is the encoder's (--device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Group()
    if "RANK" not in os.environ:
        raise SemidError(f"WORLD_SIZE is {world_size} but RANK is not set; start semid with torchrun, "
                         "or unset WORLD_SIZE")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)  # "cuda" then means this rank's GPU, for the encoder and nccl
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if cuda else "gloo", timeout=BARRIER_TIMEOUT)
        except (RuntimeError, ValueError) as error:
            raise SemidError(f"WORLD_SIZE is {world_size}, but torch.distributed cannot start ({error}); "
                             "run under torchrun, or unset WORLD_SIZE") from None
    return Group(rank=rank, world_size=world_size, local_rank=local_rank, cuda=cuda)


def leave(group: Group) -> None:
    """End the process group that `join` started, if it is still there (a job that stopped early)."""
    if group.distributed:
        _end()


def _end() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
