"""Gradient averaging through shared memory: the protocol, and DDP on two real gloo ranks with and without it."""

from __future__ import annotations

import glob
import os
import pickle
import platform
import socket
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import training.shm_allreduce as shm
from training.shm_allreduce import SharedMemoryAllreduce, register_shared_memory_allreduce

X86 = platform.machine().lower() in ("x86_64", "amd64")


def _segment(world: int, capacity: int) -> torch.Tensor:
    return torch.zeros(2 * world * 64 + world * capacity, dtype=torch.uint8)


def test_ranks_get_the_mean_in_every_exchange_and_sizes_vary() -> None:
    # three ranks as threads over one segment: every exchange must see each rank's own bucket, even
    # when one rank is far ahead (the read counters stop it overwriting a slot still being summed)
    world, capacity = 3, 4096
    raw = _segment(world, capacity)
    states = [SharedMemoryAllreduce(raw, rank=r, world=world, capacity=capacity, timeout=timedelta(seconds=30))
              for r in range(world)]
    sizes = [7, 1000, 3, 1024, 50] * 4
    got: dict[int, list[torch.Tensor]] = {r: [] for r in range(world)}

    def run(rank: int) -> None:
        for k, n in enumerate(sizes):
            grads = torch.arange(n, dtype=torch.float32) * (rank + 1) + k
            got[rank].append(states[rank].average(grads).clone())

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for k, n in enumerate(sizes):
        want = torch.arange(n, dtype=torch.float32) * 2 + k  # mean of (rank + 1) over ranks 0..2 is 2
        for rank in range(world):
            assert torch.allclose(got[rank][k], want), (k, rank)
            assert torch.equal(got[rank][k], got[0][k])  # bitwise the same on every rank


def test_a_rank_that_never_arrives_is_named_after_the_timeout() -> None:
    state = SharedMemoryAllreduce(_segment(2, 64), rank=0, world=2, capacity=64, timeout=timedelta(seconds=0.05))
    with pytest.raises(RuntimeError, match=r"rank\(s\) \[1\] did not post gradient exchange 1"):
        state.average(torch.ones(4))


def test_a_bucket_larger_than_the_slot_is_refused() -> None:
    state = SharedMemoryAllreduce(_segment(1, 64), rank=0, world=1, capacity=64, timeout=timedelta(seconds=1))
    with pytest.raises(ValueError, match="exceeds the 64-byte slot"):
        state.average(torch.ones(17))


def _rank(rank: int, world: int, port: int, shm_dir: str, out: Path) -> None:
    """One gloo rank: the gradients of one step of a small model, with DDP's allreduce and through the hook."""
    torch.set_num_threads(1)
    shm.SHM_DIR = shm_dir
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x = torch.randn(64, 12, generator=torch.Generator().manual_seed(rank))  # each rank its own rows
        grads, used = {}, None
        for hook in (False, True):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Embedding(100, 12), nn.Flatten(), nn.Linear(12 * 12, 1))
            ddp = DistributedDataParallel(model)
            if hook:
                used = register_shared_memory_allreduce(ddp)
            ddp((x.abs() * 99 / x.abs().max()).long()).pow(2).mean().backward()
            grads[hook] = [p.grad.clone() for p in model.parameters()]
        (out / f"rank{rank}.pkl").write_bytes(pickle.dumps((grads, used)))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _two_ranks(tmp_path: Path, shm_dir: str) -> list[tuple[dict[bool, list[torch.Tensor]], bool]]:
    mp.start_processes(_rank, args=(2, _free_port(), shm_dir, tmp_path), nprocs=2, start_method="spawn")
    return [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]


@pytest.mark.skipif(not X86 or not os.path.isdir("/dev/shm"), reason="needs x86-64 and /dev/shm")
def test_ddp_through_shared_memory_matches_gloo_and_leaves_no_file(tmp_path: Path) -> None:
    before = set(glob.glob("/dev/shm/mmads-ddp-*"))
    ranks = _two_ranks(tmp_path, "/dev/shm")
    assert [used for _, used in ranks] == [True, True]
    for grads, _ in ranks:
        for via_gloo, via_shm in zip(grads[False], grads[True], strict=True):
            assert torch.allclose(via_gloo, via_shm, rtol=1e-6, atol=1e-7)
    for a, b in zip(ranks[0][0][True], ranks[1][0][True], strict=True):
        assert torch.equal(a, b)  # the ranks' averaged gradients are bitwise equal
    assert set(glob.glob("/dev/shm/mmads-ddp-*")) == before  # unlinked once mapped


def test_without_a_shared_dev_shm_every_rank_keeps_gloo(tmp_path: Path) -> None:
    ranks = _two_ranks(tmp_path, str(tmp_path / "no-such-dir"))
    assert [used for _, used in ranks] == [False, False]
    for grads, _ in ranks:
        for via_gloo, again in zip(grads[False], grads[True], strict=True):
            assert torch.equal(via_gloo, again)  # the same DDP allreduce both times


def _map_too_much(rank: int, world: int, port: int, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        free = os.statvfs(shm.SHM_DIR).f_bavail * os.statvfs(shm.SHM_DIR).f_frsize
        (out / f"rank{rank}.pkl").write_bytes(pickle.dumps(shm._map_segment(free + 2**30) is None))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not X86 or not os.path.isdir("/dev/shm"), reason="needs x86-64 and /dev/shm")
def test_a_segment_larger_than_dev_shm_has_room_for_falls_back_on_every_rank(tmp_path: Path) -> None:
    before = set(glob.glob("/dev/shm/mmads-ddp-*"))
    mp.start_processes(_map_too_much, args=(2, _free_port(), tmp_path), nprocs=2, start_method="spawn")
    assert [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)] == [True, True]
    assert set(glob.glob("/dev/shm/mmads-ddp-*")) == before
