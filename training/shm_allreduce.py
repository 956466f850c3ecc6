"""Gradient averaging through shared memory for data-parallel ranks on one host: a DDP comm hook.

With DDP on CPU every optimizer step averages the gradients over gloo: a TCP exchange through
gloo's worker and event-loop threads. On a host whose cores are all busy training, each hand-off
between those threads waits for a core, and every step pays it (about 3 ms a step on a 2-core VM,
whatever the gradient's size, against ~25 ms of backward per rank). When every rank runs on the same
host the exchange needs no network: each rank copies its bucket into its own slot of one
shared-memory segment, waits until every rank has posted, and sums the slots in rank order. The sum
is computed alike on every rank, so the ranks' gradients, hence their parameters, stay bitwise equal,
as DDP requires.

It is used only where it is safe, decided by every rank together when a model is wrapped
(:func:`register_shared_memory_allreduce`):

- CPU tensors (on GPUs NCCL is the exchange);
- an x86-64 CPU: the protocol relies on stores becoming visible to other cores in program order
  (total store order), which x86-64 guarantees and ARM does not;
- a ``/dev/shm`` (tmpfs, so local memory, never a network file) that every rank can map, checked by a
  random token rank 0 writes and every other rank must read back: ranks on another host, or in a
  container without the same ``/dev/shm``, fail the check and the whole group keeps gloo;
- room in it: the segment's pages are allocated up front (``posix_fallocate``), so a small
  ``/dev/shm`` (a container's 64 MiB default) means gloo, not a SIGBUS at the first page it cannot back.

A rank waiting for a slower one spins with ``sched_yield`` for about a millisecond, then sleeps in
50 µs steps; a rank that never arrives raises after the process group's timeout, as a collective would.
"""

# no ``from __future__ import annotations``: DDP checks the hook's annotations as live objects
import logging
import os
import platform
import secrets
import tempfile
import time
from collections.abc import Iterable
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
_LINE = 64  # bytes: each rank's counters and slot start on their own cache line
_SPIN_S = 1e-3  # spin (yielding the core) this long before sleeping between checks
_SLEEP_S = 50e-6
_TOKEN = 16  # bytes of the sharing check


def _round_up(n: int, to: int = _LINE) -> int:
    return -(-n // to) * to


class SharedMemoryAllreduce:
    """The state of one wrapped model's shared-memory gradient exchange (the hook's ``state``).

    Layout of the segment: per rank a posted counter and a read counter (one cache line each), then
    per rank a slot as large as all trainable parameters together (a DDP bucket is at most that).
    Exchange ``k`` of a rank: wait until every rank has read exchange ``k - 1``; copy the bucket into
    its slot; post ``k``; wait until every rank has posted ``k``; sum the slots in rank order into the
    bucket, divide by the world size; mark ``k`` read.

    Args:
        raw: the mapped segment (uint8), as :func:`register_shared_memory_allreduce` maps it.
        rank, world: this rank and the group size.
        capacity: bytes of one slot.
        timeout: how long to wait for another rank before raising.
    """

    def __init__(self, raw: torch.Tensor, *, rank: int, world: int, capacity: int, timeout: timedelta) -> None:
        head = 2 * world * _LINE
        if raw.numel() < head + world * capacity:
            raise ValueError(f"segment of {raw.numel()} bytes is too small for {world} slots of {capacity}")
        self.raw, self.rank, self.world, self.capacity = raw, rank, world, capacity
        counters = raw[:head].view(torch.int64).numpy()
        step = _LINE // 8
        self.posted: np.ndarray = counters[0: world * step: step]
        self.read: np.ndarray = counters[world * step:: step]
        self.slots = raw[head: head + world * capacity].view(world, capacity)
        self.timeout_s = timeout.total_seconds()
        self.exchanges = 0

    def _wait(self, counters: np.ndarray, value: int, what: str) -> None:
        start = time.perf_counter()
        while int(counters.min()) < value:
            waited = time.perf_counter() - start
            if waited < _SPIN_S:
                os.sched_yield()
                continue
            if waited > self.timeout_s:
                late = [r for r in range(self.world) if int(counters[r]) < value]
                raise RuntimeError(f"rank {self.rank}: rank(s) {late} did not {what} gradient exchange {value} "
                                   f"within {self.timeout_s:.0f} s (a rank died or hangs)")
            time.sleep(_SLEEP_S)

    def average(self, grads: torch.Tensor) -> torch.Tensor:
        """Replace ``grads`` (a flat CPU tensor, the same shape on every rank) by its mean over the ranks."""
        nbytes = grads.numel() * grads.element_size()
        if nbytes > self.capacity:
            raise ValueError(f"a gradient bucket of {nbytes} bytes exceeds the {self.capacity}-byte slot")
        self.exchanges += 1
        k = self.exchanges
        self._wait(self.read, k - 1, "finish reading")  # no rank still sums the previous exchange's slots
        self.slots[self.rank, :nbytes].view(grads.dtype).copy_(grads)
        self.posted[self.rank] = k
        self._wait(self.posted, k, "post")
        torch.sum(self.slots[:, :nbytes].view(grads.dtype), dim=0, out=grads)
        grads.div_(self.world)
        self.read[self.rank] = k
        return grads


def average_bucket(state: SharedMemoryAllreduce, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The DDP comm hook: the bucket's gradients averaged through shared memory (already complete)."""
    done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    done.set_result(state.average(bucket.buffer()))
    return done


def _trainable_bytes(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() * p.element_size() for p in params if p.requires_grad)


def _create_segment(nbytes: int) -> tuple[str, bytes] | None:
    """Rank 0's ``/dev/shm`` file of ``nbytes`` bytes, its pages allocated, ending in a random token.

    None when ``/dev/shm`` lacks the room (a container's default is often 64 MiB): a sparse file
    would map, then kill the process with SIGBUS on the first page tmpfs cannot back.
    """
    try:
        stat = os.statvfs(SHM_DIR)
        if stat.f_bavail * stat.f_frsize < 2 * nbytes:  # leave as much again to others
            logger.info("%s has %d bytes free, %d needed: gradients keep the backend's allreduce", SHM_DIR,
                        stat.f_bavail * stat.f_frsize, 2 * nbytes)
            return None
        fd, path = tempfile.mkstemp(prefix="mmads-ddp-", dir=SHM_DIR)
    except OSError as exc:
        logger.info("cannot create a file in %s (%s): gradients keep the backend's allreduce", SHM_DIR, exc)
        return None
    token = secrets.token_bytes(_TOKEN)
    try:
        os.posix_fallocate(fd, 0, nbytes)
        os.pwrite(fd, token, nbytes - _TOKEN)
    except OSError as exc:
        os.unlink(path)
        logger.info("cannot allocate %d bytes in %s (%s): gradients keep the backend's allreduce", nbytes, SHM_DIR, exc)
        return None
    finally:
        os.close(fd)
    return path, token


def _map_segment(nbytes: int) -> torch.Tensor | None:
    """Every rank maps one fresh ``/dev/shm`` file of ``nbytes`` bytes; None on every rank if any cannot.

    Rank 0 creates the file and writes a random token; a rank that cannot open it or reads another
    token is on another host (or another ``/dev/shm``). The file is unlinked once every rank answered:
    the mappings outlive it, and nothing is left behind.
    """
    rank = dist.get_rank()
    box: list[tuple[str, bytes] | None] = [None]
    if rank == 0 and os.path.isdir(SHM_DIR) and platform.machine().lower() in ("x86_64", "amd64"):
        box[0] = _create_segment(nbytes + _TOKEN)
    dist.broadcast_object_list(box, src=0)
    made, raw = box[0], None
    if made is not None:
        try:
            mapped = torch.from_file(made[0], shared=True, size=nbytes + _TOKEN, dtype=torch.uint8)
            if bytes(mapped[nbytes:].numpy()) == made[1]:
                raw = mapped[:nbytes]
        except (OSError, RuntimeError):
            raw = None
    answers: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(answers, raw is not None)
    if rank == 0 and made is not None:
        os.unlink(made[0])
    return raw if all(answers) else None


def register_shared_memory_allreduce(ddp: DistributedDataParallel, *, timeout: timedelta | None = None) -> bool:
    """Average ``ddp``'s gradients through shared memory when every rank is on this host (a collective).

    Every rank of the group must call it, right after wrapping the same model.

    Returns:
        True when the hook is registered on every rank; False (on every rank) when the group keeps
        its backend's allreduce: parameters on a GPU, a CPU without total store order, or ranks that
        do not share ``/dev/shm``.
    """
    params = list(ddp.module.parameters())
    world = dist.get_world_size()
    on_cpu = all(p.device.type == "cpu" for p in params)
    every_cpu: list[object] = [None] * world
    dist.all_gather_object(every_cpu, on_cpu)
    if not all(every_cpu):
        return False
    capacity = _round_up(max(_trainable_bytes(params), 1))
    raw = _map_segment(2 * world * _LINE + world * capacity)
    if raw is None:
        logger.info("gradients averaged by the %s backend (the ranks share no /dev/shm)", dist.get_backend())
        return False
    state = SharedMemoryAllreduce(raw, rank=dist.get_rank(), world=world, capacity=capacity,
                                  timeout=timeout or dist.default_pg_timeout)
    ddp.register_comm_hook(state, average_bucket)
    if dist.get_rank() == 0:
        logger.info("gradients averaged through shared memory (%d ranks on one host, %d-byte slots)", world, capacity)
    return True


__all__ = ["SHM_DIR", "SharedMemoryAllreduce", "average_bucket", "register_shared_memory_allreduce"]
