"""Data-parallel CTR training with ``torch.distributed`` (DDP): ``mmads train --nproc N`` and ``torchrun``.

Every rank runs the same ablation schedule as one process (``training.trainer``: MAKE's multi-epoch
pre-training with early stopping, the one-epoch ID stage, the epoch study) with its model wrapped in
``DistributedDataParallel`` (gloo on CPU, nccl when every local rank has a GPU), so each optimizer
step averages the gradients of ``W`` rank batches of ``batch_size // W`` rows: one step sees the same
``batch_size`` rows as with one process.

Data: :func:`training.shard_plan.plan_shards` makes counting passes over the training set (one
parquet file or a directory of them) that fit what one process fits (cut, validation start, id
vocabulary, side statistics) and count each piece's (file, row group) rows per period. Each rank
then streams its share with a :class:`~training.data.ShardStream`: every rank makes the same number
of steps per epoch (one repeated row pads a rank one row short), and no rank holds its shard.

Rank 0 alone holds the validation slice and the test rows (it scores them: MAKE's early stopping
reads its validation AUC, broadcast to every rank so all stop at the same epoch), writes the model
artifacts, the report and the predictions; the other ranks write nothing. LightGBM is not
data-parallel: rank 0 fits it on the training period in memory, as one process does.

Launch: :func:`train_data_parallel` spawns ``W`` local processes (a free ``MASTER_PORT`` on
127.0.0.1) or, under ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT`` set), joins the group torchrun started: multi-node is the same code under
``torchrun --nnodes``.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import pickle
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from feature_repo.simtier import SIMTIER_COLUMNS, simtier
from infra.config import MmadsConfig
from infra.errors import ConfigError
from training.data import (
    READ_ROWS,
    Period,
    ShardStream,
    TimeSplit,
    flag_new_items,
    read_period,
)
from training.experiment import AblationRuns, finish
from training.lightgbm_baseline import fit_lightgbm
from training.metrics import auc
from training.models.ctr import MAKE, CTRModelConfig, model_config, predict_logits
from training.models.inputs import CTRInputs, ItemVectorLookup, build_inputs
from training.models.ranker import save_model
from training.models.registry import MAKE_MODELS
from training.models.side import SideEncoder
from training.shard_plan import ShardPlan, plan_shards
from training.shm_allreduce import register_shared_memory_allreduce
from training.trainer import (
    EpochBatches,
    Scorer,
    TrainingLog,
    ctr_schedule,
    curve_schedule,
    make_schedule,
    predict_proba,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


# --- the process group -----------------------------------------------------------------------------------


def under_torchrun() -> bool:
    """True when ``torchrun`` (or any launcher setting ``WORLD_SIZE``) started this process."""
    return "WORLD_SIZE" in os.environ


def _device(local_rank: int, local_world: int) -> torch.device:
    """The rank's GPU when every local rank has one, else the CPU."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world:
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def join_group() -> torch.device:
    """Join the process group ``torchrun`` describes in the environment (once); this rank's device.

    Raises:
        ConfigError: a torchrun variable is missing.
    """
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise ConfigError(f"a data-parallel launch needs the environment variables {missing} (torchrun sets them)")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    device = _device(int(os.environ["LOCAL_RANK"]), local_world)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return device


def rank_zero() -> bool:
    """True in a process that is not a rank, or is rank 0 of the group (the one that writes)."""
    return not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


def share_from_rank0(make: Callable[[], T]) -> T:
    """``make()`` on rank 0, its result on every rank; an error on rank 0 is raised on every rank."""
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", make())
        except Exception as exc:  # every rank must leave the broadcast, then all raise
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- one rank ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What every rank of one ablation receives."""

    plan: ShardPlan
    item_vectors: pd.DataFrame
    cfg: MmadsConfig
    out_dir: Path
    models: tuple[str, ...]
    seeds: int
    progress: bool
    holdout: str
    threads: int


def _to_device(batch: CTRInputs, device: torch.device) -> CTRInputs:
    moved = {f: getattr(batch, f).to(device, non_blocking=True) for f in batch.__dataclass_fields__
             if isinstance(getattr(batch, f), torch.Tensor)}
    return replace(batch, **moved)


def _on(device: torch.device, epochs: EpochBatches) -> EpochBatches:
    if device.type == "cpu":
        return epochs
    return lambda e: (_to_device(b, device) for b in epochs(e))


def _ddp(device: torch.device, shared_memory: bool) -> Callable[[nn.Module], nn.Module]:
    """The wrapper every schedule trains through: DDP with its defaults, on one host through shared memory.

    Every trainable parameter gets a gradient each step (a frozen MAKE has none to reduce), so no
    unused-parameter search is needed. ``static_graph=True`` was measured slower here: with it the
    2-process loop of :func:`measure_ddp` ran at 54,300 samples/s against 59,100-73,300 with the
    defaults on a 2-core AMD EPYC VM (``gradient_as_bucket_view`` made no difference). With
    ``shared_memory`` (``model.ctr.ddp_shared_memory``) CPU ranks that all share this host's
    ``/dev/shm`` average their gradients there (:mod:`training.shm_allreduce`) instead of over gloo.
    """

    def wrap(module: nn.Module) -> nn.Module:
        module.to(device)
        ddp = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        if shared_memory and device.type == "cpu":
            register_shared_memory_allreduce(ddp)
        return ddp

    return wrap


def _cpu_auc(model: nn.Module, data: CTRInputs) -> float:
    if any(p.is_cuda for p in model.parameters()):
        model = copy.deepcopy(model).cpu()
    logits = predict_logits(model, data).numpy()
    return auc(data.label.numpy() if data.label is not None else np.zeros(0), logits)


def _rank0_auc(data: CTRInputs | None) -> Scorer:
    """An AUC rank 0 computes on ``data`` and broadcasts, so every rank's schedule decides alike."""

    def score(model: nn.Module) -> float:
        box = [_cpu_auc(model, data) if data is not None else 0.0]
        dist.broadcast_object_list(box, src=0)
        return float(box[0])

    return score


@dataclass
class _RankData:
    """A rank's batch sources; on rank 0 also the scored rows."""

    fit: Callable[[int], EpochBatches]  # seed -> batches of the rows before the validation slice
    train: Callable[[int], EpochBatches]  # seed -> batches of every training row
    valid: CTRInputs | None
    test: CTRInputs | None
    test_frame: pd.DataFrame | None


def _rank_data(job: _Job, rank: int, world: int, device: torch.device) -> _RankData:
    plan, cfg = job.plan, job.cfg
    lookup = ItemVectorLookup.from_frame(job.item_vectors)
    build = functools.partial(build_inputs, lookup=lookup, vocab=plan.vocab, n_tiers=cfg.model.n_tiers,
                              history_len=cfg.model.history_len, side=plan.side)
    batch = max(1, cfg.model.ctr.batch_size // world)

    def stream(counts: tuple[int, ...], hi: pd.Timestamp) -> Callable[[int], EpochBatches]:
        return lambda seed: _on(device, ShardStream(plan.pieces, counts, Period(hi=hi), build, rank=rank,
                                                    world=world, batch_size=batch, seed=seed))

    data = _RankData(stream(plan.fit_counts, plan.valid_start), stream(plan.train_counts, plan.cut), None, None, None)
    if rank == 0:
        valid = read_period(plan.pieces, Period(plan.valid_start, plan.cut))
        test = read_period(plan.pieces, Period(plan.cut, plan.test_end, after=True))
        flag_new_items(test, plan.cut, job.item_vectors)
        data.valid, data.test, data.test_frame = build(valid), build(test), test
    return data


def _count_every_rank(log: TrainingLog) -> None:
    """Make ``log.samples`` the rows every rank trained on (its seconds stay this rank's loop time)."""
    counts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(counts, log.samples)  # objects: the same call under gloo and nccl
    log.samples = int(sum(counts))


def _train_seed(job: _Job, data: _RankData, seed: int, runs: AblationRuns, device: torch.device, first: bool) -> None:
    """One seed of the ablation on every rank (the data-parallel twin of ``experiment._train_seed``)."""
    cfg, plan, ctr = job.cfg, job.plan, job.cfg.model.ctr
    rank0 = dist.get_rank() == 0
    wrap, progress = _ddp(device, ctr.ddp_shared_memory), job.progress and rank0

    def config(name: str, side: SideEncoder | None = plan.side) -> CTRModelConfig:
        return model_config(name, plan.vocab, id_dim=ctr.id_dim, mlp_hidden=ctr.mlp_hidden,
                            n_tiers=cfg.model.n_tiers, vec_dim=plan.vec_dim, side=side)

    study = first and ctr.epoch_study > 0
    if study and "id_only" in job.models:
        mc = config("id_only")
        curves = curve_schedule(mc, ctr, seed=seed, n_epochs=ctr.epoch_study, epochs=data.fit(seed),
                                probes={"valid": _rank0_auc(data.valid), "test": _rank0_auc(data.test)}, wrap=wrap)
        runs.epochs["id_only"] = {"epochs": list(range(1, ctr.epoch_study + 1)), "valid_auc": curves["valid"],
                                  "test_auc": curves["test"]}
    make: MAKE | None = None
    make_log = TrainingLog()
    if any(m in MAKE_MODELS for m in job.models):
        mc = config("make", side=None)
        assert mc.make is not None  # "make" always carries a MAKE part
        make, make_log = make_schedule(mc.make, ctr, seed=seed, epochs=data.fit(seed), score=_rank0_auc(data.valid),
                                       probe=_rank0_auc(data.test) if study else None, wrap=wrap, progress=progress)
        _count_every_rank(make_log)
        if study:
            runs.epochs["make"] = {"epochs": list(range(1, make_log.epochs + 1)), "valid_auc": make_log.val_auc,
                                   "test_auc": make_log.probe_auc, "best_epoch": make_log.best_epoch}
    for name in job.models:
        if name == "lightgbm":
            continue  # not data-parallel: rank 0 fits it after the torch models
        mc = config(name)
        with_make = make if mc.make is not None else None
        model, log = ctr_schedule(mc, ctr, seed=seed, epochs=data.train(seed), make=with_make, wrap=wrap,
                                  progress=progress, desc=name)
        _count_every_rank(log)
        if not rank0 or data.test is None:
            continue
        model.cpu()
        seconds = log.seconds + (make_log.seconds if with_make is not None else 0.0)
        entry = {"id_stage": log.to_dict(), **({"make_pretrain": make_log.to_dict()} if with_make else {}),
                 "processes": dist.get_world_size()}
        runs.add(name, predict_proba(model, data.test), entry, seconds)
        if first:
            save_model(model, plan.vocab, job.out_dir / "models" / name, name=name, n_tiers=cfg.model.n_tiers,
                       history_len=cfg.model.history_len, vec_dim=plan.vec_dim, extra={"seed": seed},
                       side=plan.side)


def _lightgbm(job: _Job, split: TimeSplit, seed: int, runs: AblationRuns, first: bool) -> None:
    res = fit_lightgbm(split, job.cfg.model.n_tiers, job.cfg.model.ctr, seed=seed, side=job.plan.side)
    runs.add("lightgbm", res.test_proba, {"valid_logloss": res.valid_logloss}, res.seconds)
    if first:
        (job.out_dir / "models" / "lightgbm").mkdir(parents=True, exist_ok=True)
        res.booster.save_model(str(job.out_dir / "models" / "lightgbm" / "model.txt"))


def _run_rank(job: _Job, device: torch.device) -> dict[str, Any] | None:
    """The whole ablation on this rank; rank 0 returns the report's "ctr" section, the others None."""
    start = time.perf_counter()
    _use_threads(job.threads)
    rank, world = dist.get_rank(), dist.get_world_size()
    data = _rank_data(job, rank, world, device)
    runs = AblationRuns()
    plan, cfg = job.plan, job.cfg
    for i in range(job.seeds):
        _train_seed(job, data, cfg.model.seed + i, runs, device, first=i == 0)
    if rank != 0:
        return None
    assert data.test_frame is not None  # rank 0 read it
    ids, counts = plan.item_counts
    train = pd.DataFrame({"item_id": np.repeat(ids, counts)})  # what the report's slices read of the train rows
    split = TimeSplit(cut=plan.cut, valid_start=plan.valid_start, train=train, test=data.test_frame)
    if "lightgbm" in job.models:
        full = read_period(plan.pieces, Period(hi=plan.cut))
        split = replace(split, train=full)
        for i in range(job.seeds):
            _lightgbm(job, split, cfg.model.seed + i, runs, first=i == 0)
        order = [m for m in job.models if m in runs.proba]  # the report lists models in the order asked
        runs.proba = {m: runs.proba[m] for m in order}
        runs.logs = {m: runs.logs[m] for m in order}
        runs.seconds = {m: runs.seconds[m] for m in order}
    return finish(job.out_dir, cfg, split, runs, n_fit=plan.n_fit, side=plan.side, holdout=job.holdout,
                  n_seeds=job.seeds, start=start)


def _spawned(rank: int, world: int, port: int, job: _Job, result: Path) -> None:
    """Entry point of a locally spawned rank."""
    device = _device(rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    try:
        section = _run_rank(job, device)  # no barrier after: rank 0's LightGBM and report need no other rank
        if rank == 0:
            result.write_bytes(pickle.dumps(section))
    finally:
        dist.destroy_process_group()


def _use_threads(n: int) -> None:
    """Give torch and Arrow's decoding pool ``n`` threads (Arrow takes every core by default)."""
    torch.set_num_threads(n)
    pa.set_cpu_count(n)


def _threads(world: int) -> int:
    """Torch threads per rank: the cores shared out, at most 2 (what one process uses)."""
    return max(1, min(2, (os.cpu_count() or 1) // world))


def train_data_parallel(
    train_set: pd.DataFrame | Path, item_vectors: pd.DataFrame, cfg: MmadsConfig, out_dir: Path, *,
    models: Sequence[str], seeds: int, progress: bool, cut: pd.Timestamp | None, holdout: str, nproc: int,
) -> dict[str, Any]:
    """The ablation of :func:`training.experiment.train_and_evaluate` on ``nproc`` data-parallel ranks.

    Under ``torchrun`` this process is one rank of the launched group; otherwise it spawns ``nproc``
    local ranks and waits for them. A frame is written to a temporary parquet file first (local
    spawn only).

    Returns:
        The report's "ctr" section (on rank 0, and in the spawning process); ``{}`` on other ranks.
    """
    out_dir = Path(out_dir)
    if under_torchrun():
        if isinstance(train_set, pd.DataFrame):
            raise ConfigError("under torchrun pass the training set as a parquet file or directory, not a frame")
        device = join_group()
        plan = share_from_rank0(lambda: plan_shards(Path(train_set), item_vectors, cfg, cut=cut, holdout=holdout))
        job = _Job(plan, item_vectors, cfg, out_dir, tuple(models), seeds, progress, holdout,
                   _threads(int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))))
        mine = _run_rank(job, device)  # the last collective is the last torch model's; rank 0 goes on alone
        return mine or {}
    with tempfile.TemporaryDirectory(prefix="mmads-ddp-") as tmp:
        source = _as_file(train_set, Path(tmp))
        plan = plan_shards(source, item_vectors, cfg, cut=cut, holdout=holdout)
        job = _Job(plan, item_vectors, cfg, out_dir, tuple(models), seeds, progress, holdout, _threads(nproc))
        result = Path(tmp) / "section.pkl"
        logger.info("training on %d data-parallel processes (%d pieces, %d training rows)", nproc, len(plan.pieces),
                    plan.n_train)
        mp.start_processes(_spawned, args=(nproc, _free_port(), job, result), nprocs=nproc, start_method="spawn")
        section: dict[str, Any] = pickle.loads(result.read_bytes())
    return section


def _as_file(train_set: pd.DataFrame | Path, tmp: Path) -> Path:
    if not isinstance(train_set, pd.DataFrame):
        return Path(train_set)
    path = tmp / "training_set.parquet"
    pq.write_table(pa.Table.from_pandas(train_set, preserve_index=False), path, row_group_size=READ_ROWS)
    return path


# --- the 1 -> 2 process benchmark ----------------------------------------------------------------------


def synthetic_training_set(out: Path, *, rows: int, seed: int = 0, n_users: int = 2000, n_items: int = 4000,
                           dim: int = 16, history_len: int = 20, n_tiers: int = 10, files: int = 4,
                           row_group: int = 8192, alpha: float = 6.0) -> pd.DataFrame:
    """Write a seeded training set in the contract's schema: ``files`` parquet files of ``row_group``-row groups.

    Items have a latent vector (category centre + noise) and an ID-level quality; users browse items
    near an interest point. A click's log-odds are ``alpha`` times the dot product of the target's
    latent with the history's mean latent, plus the item's quality and a user bias, so both the ID
    tables and the SimTier features have something to learn. Rows are sorted by ``ts`` across the files.

    Returns:
        The item-vector table (``item_id``, ``emb``, ``category``, ``created_at``).
    """
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-03-01", tz="UTC")
    centres = rng.normal(size=(12, dim))
    cat = rng.integers(0, len(centres), n_items)
    latent = centres[cat] + 0.9 * rng.normal(size=(n_items, dim))
    latent /= np.linalg.norm(latent, axis=1, keepdims=True)
    emb = latent + 0.3 * rng.normal(size=latent.shape)
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    quality, bias = rng.normal(0, 0.6, n_items), rng.normal(0, 0.5, n_users)
    interest = latent[rng.integers(0, n_items, n_users)]
    near = np.argsort(-(interest @ latent.T), axis=1)[:, :64]  # (U, 64) items each user browses
    user = rng.integers(0, n_users, rows)
    lengths = rng.integers(0, history_len + 1, rows)
    hist = near[user[:, None], rng.integers(0, near.shape[1], (rows, history_len))]  # (R, N)
    target = np.where(rng.random(rows) < 0.5, near[user, rng.integers(0, near.shape[1], rows)],
                      rng.integers(0, n_items, rows))
    real = np.arange(history_len)[None, :] < lengths[:, None]
    mean_latent = (latent[hist] * real[:, :, None]).sum(1) / np.maximum(lengths, 1)[:, None]
    logit = alpha * (mean_latent * latent[target]).sum(1) + quality[target] + bias[user] - 1.5
    clicked = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    ts = np.sort(rng.uniform(0, 10 * 86400e6, rows)).astype("timedelta64[us]")
    sim = np.concatenate([simtier(emb[target[lo:lo + 8192]], emb[hist[lo:lo + 8192]], lengths[lo:lo + 8192], n_tiers)
                          for lo in range(0, rows, 8192)])
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    frame = pd.DataFrame({
        "user_id": (user + 1).astype(np.int64), "item_id": ids[target],
        "ts": (t0 + pd.to_timedelta(ts)).astype("datetime64[us, UTC]"), "clicked": clicked,
        "category": [f"c{c}" for c in cat[target]], "item_created_at": t0 - pd.Timedelta(days=30),
        "has_emb": np.ones(rows, dtype=bool), "item_emb": list(emb[target]),
        "hist_item_ids": [ids[h[:n]] for h, n in zip(hist, lengths, strict=True)],
    })
    frame = pd.concat([frame, pd.DataFrame(sim, columns=SIMTIER_COLUMNS(n_tiers)).astype(np.float32)], axis=1)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    step = -(-rows // files)
    for k, lo in enumerate(range(0, rows, step)):
        pq.write_table(table.slice(lo, step), out / f"part-{k:05d}.parquet", row_group_size=row_group)
    created = pd.Series(t0 - pd.Timedelta(days=30), index=range(n_items))
    return pd.DataFrame({"item_id": ids, "emb": list(emb), "category": [f"c{c}" for c in cat], "created_at": created})


@dataclass(frozen=True)
class _Bench:
    """One timed training of one model (the benchmark's unit)."""

    plan: ShardPlan
    item_vectors: pd.DataFrame
    cfg: MmadsConfig
    model: str


def _warm_up() -> None:
    """Pay torch's lazy imports of a first backward pass and Adam step (~1.5 s) before the clock runs.

    They are process start-up, which the benchmark leaves out; inside the loop they weighed on the
    2-process run twice (once per rank).
    """
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([p])
    (p * 2).sum().backward()
    opt.step()


def _bench_rank(rank: int, world: int, port: int, bench: _Bench, result: Path) -> None:
    """Train ``bench.model`` on this rank with one thread; rank 0 writes samples/s and the test AUC."""
    _use_threads(1)
    _warm_up()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        plan, cfg, ctr = bench.plan, bench.cfg, bench.cfg.model.ctr
        job = _Job(plan, bench.item_vectors, cfg, result.parent, (bench.model,), 1, False, "test", 1)
        data = _rank_data(job, rank, world, torch.device("cpu"))
        mc = model_config(bench.model, plan.vocab, id_dim=ctr.id_dim, mlp_hidden=ctr.mlp_hidden,
                          n_tiers=cfg.model.n_tiers, vec_dim=plan.vec_dim, side=plan.side)
        wrap = _ddp(torch.device("cpu"), ctr.ddp_shared_memory) if world > 1 else (lambda m: m)  # 1: no DDP
        model, log = ctr_schedule(mc, ctr, seed=cfg.model.seed, epochs=data.train(cfg.model.seed), wrap=wrap)
        logs: list[Any] = [None] * world
        dist.all_gather_object(logs, (log.samples, log.seconds))
        if rank == 0 and data.test is not None:
            samples = sum(n for n, _ in logs)
            seconds = max(s for _, s in logs)  # the ranks train in lockstep: the slowest sets the pace
            result.write_bytes(pickle.dumps({"samples_per_s": samples / seconds, "auc": _cpu_auc(model, data.test)}))
    finally:
        dist.destroy_process_group()


def _bench_run(bench: _Bench, world: int, tmp: Path) -> dict[str, float]:
    result = tmp / f"bench-{world}.pkl"
    mp.start_processes(_bench_rank, args=(world, _free_port(), bench, result), nprocs=world, start_method="spawn")
    out: dict[str, float] = pickle.loads(result.read_bytes())
    return out


def measure_ddp(quick: bool, rounds: int = 5) -> dict[str, Any]:
    """Samples/s of the data-parallel training loop with 1 and 2 processes, and their test-AUC gap.

    A seeded synthetic training set (:func:`synthetic_training_set`: 60,000 rows quick, 240,000
    otherwise, four files) trains ``simtier`` (ID tables + DIN attention + SimTier) for 4 epochs,
    batch 4,096 rows (2,048 per rank with 2 processes), once in one process (no DDP) and once on 2
    DDP ranks (gradients averaged as ``model.ctr.ddp_shared_memory`` says: through shared memory on
    one host), every process with one thread (torch's and Arrow's pools). Samples/s counts the
    training loop only (reading and batching the shard included; process start-up with torch's lazy
    imports, the counting passes and scoring excluded): all rows trained over the slowest rank's
    loop time. The two runs alternate ``rounds`` times and each figure is the median of its rounds.

    Returns:
        ``ddp_samples_per_s_1proc``, ``ddp_samples_per_s_2proc`` and ``ddp_auc_diff`` (absolute
        difference of the two runs' test AUC, same seed and data); ``ddp_rounds`` (each round's two
        rates) and ``ddp_ratio_median_of_rounds``.
    """
    from infra.config import load_config

    rows, epochs = (60_000, 4) if quick else (240_000, 4)
    cfg = load_config(env={}).with_overrides(
        model={"dim": 16, "history_len": 20, "n_tiers": 10, "seed": 0,
               "ctr": {"batch_size": 4096, "id_epochs": epochs, "epoch_study": 0}},
        data={"side_features": []})
    with tempfile.TemporaryDirectory(prefix="mmads-ddp-bench-") as tmp:
        vectors = synthetic_training_set(Path(tmp) / "set", rows=rows, seed=0)
        plan = plan_shards(Path(tmp) / "set", vectors, cfg)
        bench = _Bench(plan, vectors, cfg, "simtier")
        ones, twos = [], []
        for k in range(rounds):  # interleaved, so a noisy neighbour weighs on both sides alike
            ones.append(_bench_run(bench, 1, Path(tmp)))
            twos.append(_bench_run(bench, 2, Path(tmp)))
            logger.info("DDP round %d/%d: 1 process %.0f samples/s, 2 processes %.0f samples/s", k + 1, rounds,
                        ones[-1]["samples_per_s"], twos[-1]["samples_per_s"])
    one_rates, two_rates = [r["samples_per_s"] for r in ones], [r["samples_per_s"] for r in twos]
    return {"ddp_samples_per_s_1proc": float(np.median(one_rates)),
            "ddp_samples_per_s_2proc": float(np.median(two_rates)),
            "ddp_auc_diff": abs(twos[0]["auc"] - ones[0]["auc"]),
            "ddp_rounds": [{"1proc": a, "2proc": b} for a, b in zip(one_rates, two_rates, strict=True)],
            "ddp_ratio_median_of_rounds": float(np.median([b / a for a, b in zip(one_rates, two_rates, strict=True)]))}


__all__ = ["ShardPlan", "join_group", "measure_ddp", "plan_shards", "rank_zero", "share_from_rank0",
           "synthetic_training_set", "train_data_parallel", "under_torchrun"]
