"""Data-parallel training across processes with ``torch.distributed``, as ``torchrun`` starts them.

``torchrun --nproc_per_node=N -m elbox train ...`` (or ``elbox train --nproc N``, which calls
torchrun) starts N copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a
rendezvous address in their environment; ``init`` joins them into one process group (gloo on
CPU, NCCL on GPUs). Multi-node runs are the same command on every node with ``--nnodes`` and a
rendezvous endpoint: nothing here assumes one machine.

How a step is shared: every rank draws the same global order (the data generator is seeded
alike everywhere), global batch b is ``order[b B : (b + 1) B]``, and rank r takes its rows
``r::N`` of it, as ``DistributedSampler`` interleaves. Each rank's loss is scaled by its share of
the batch so that DDP's average of the gradients is the gradient of the global batch mean: N
processes take the steps one process would take with batch B, up to float rounding and the
particles' noise (each rank draws its own).
"""

import atexit
import os
import subprocess
import sys
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import ElboxError

__all__ = [
    "World",
    "all_gather_tensors",
    "barrier",
    "device_of",
    "from_main",
    "init",
    "launch",
    "leave",
    "shard",
    "sum_over_ranks",
    "worker_threads",
    "world",
]


class World(NamedTuple):
    """This process's place among ``size`` processes; ``rank`` 0 writes files and prints."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The process group this process belongs to, or a world of one when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes in the environment, once.

    Without ``WORLD_SIZE`` > 1 (a plain ``elbox train``) nothing happens. On GPUs each process
    takes the GPU of its ``LOCAL_RANK``.
    """
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size <= 1 or dist.is_initialized():
        return world()
    if not dist.is_available():
        raise ElboxError("this torch build has no torch.distributed; train in one process (without torchrun).")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    atexit.register(leave)
    return world()


def leave() -> None:
    """Destroy the process group while the interpreter is still whole; nothing when there is none.

    A process that exits with its gloo group alive aborts now and then (SIGABRT, "terminate called
    without an active exception"): gloo's threads still hold tensors when finalisation frees them
    (pytorch/pytorch#190489). ``init`` registers this at exit.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_of(device: torch.device, w: World) -> torch.device:
    """The device this rank computes on: its own GPU under torchrun, else ``device``."""
    return torch.device("cuda", w.local_rank) if device.type == "cuda" and w.size > 1 else device


def shard(batch: Tensor, w: World) -> Tensor:
    """This rank's rows of a global batch ``[B, ...]``: rows ``rank::size`` (as DistributedSampler)."""
    return batch if w.size == 1 else batch[w.rank :: w.size]


def sum_over_ranks(t: Tensor, op: str = "sum") -> Tensor:
    """``t`` summed (or its ``max``) over every rank, in place; unchanged in a world of one."""
    if world().size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def all_gather_tensors(t: Tensor) -> list[Tensor]:
    """Every rank's ``t`` (same shape on all), in rank order, on ``t``'s device: ``[t]`` in a world of one."""
    w = world()
    if w.size == 1:
        return [t]
    device = torch.device("cuda", w.local_rank) if dist.get_backend() == "nccl" else t.device  # NCCL: GPU only
    out = [torch.empty_like(t, device=device) for _ in range(w.size)]
    dist.all_gather(out, t.to(device))
    return [o.to(t.device) for o in out]


def from_main(value: str | None) -> str | None:
    """Rank 0's string (or ``None``) on every rank: a path it chose, or an error to raise alike."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)  # pickles between our own processes only
    return box[0]


def barrier() -> None:
    """Wait for every rank (rank 0 writing files, say); nothing in a world of one."""
    if world().size > 1:
        dist.barrier()


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``torchrun --nproc_per_node=nproc -m elbox <argv>`` on this machine; its exit status.

    For several machines call torchrun yourself (README: multi-node), with ``--nnodes`` and a
    rendezvous endpoint; the command after ``-m elbox`` is the same.
    """
    if nproc < 1:
        raise ElboxError(f"--nproc must be at least 1, got {nproc}.")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "elbox", *without_nproc(argv)]  # fmt: skip
    return subprocess.run(command, check=False, env=os.environ | worker_threads(nproc)).returncode


def without_nproc(argv: list[str]) -> list[str]:
    """The command line without ``--nproc N`` (or ``--nproc=N``): what each torchrun worker runs."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--nproc="):
            skip = False
            continue
        skip = a == "--nproc"
        if not skip:
            out.append(a)
    return out


def worker_threads(nproc: int) -> dict[str, str]:
    """``OMP_NUM_THREADS`` for each of ``nproc`` workers: their share of the cores this process may use.

    torchrun otherwise gives every worker one thread, leaving most cores of a large machine idle;
    a value the user set is kept.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"OMP_NUM_THREADS": str(max(1, cores // nproc))}
