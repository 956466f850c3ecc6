"""Data-parallel training: pieces, rank streams, the counting passes, and a real 2-process run (gloo)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.errors import DatasetError
from tests.unit.training.fake_market import Market
from training.data import SHUFFLE_BATCHES, Period, ShardStream, load_training_set, time_split, training_set_pieces
from training.distributed import synthetic_training_set
from training.experiment import train_and_evaluate
from training.models.inputs import IdVocab, ItemVectorLookup, build_inputs
from training.models.side import SideEncoder
from training.shard_plan import plan_shards

ROOT = Path(__file__).resolve().parents[3]


def _write_parts(frame: pd.DataFrame, out: Path, files: int, row_group: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    step = -(-len(frame) // files)
    for k, lo in enumerate(range(0, len(frame), step)):
        pq.write_table(table.slice(lo, step), out / f"part-{k}.parquet", row_group_size=row_group)
    (out / "_SUCCESS").write_text("")  # a Spark marker is not a piece
    return out


def test_pieces_of_a_file_and_of_a_directory(market: Market, tmp_path) -> None:
    single = tmp_path / "set.parquet"
    market.frame.to_parquet(single, row_group_size=1000)
    parts = _write_parts(market.frame, tmp_path / "parts", files=3, row_group=700)
    one, many = training_set_pieces(single), training_set_pieces(parts)
    assert sum(p.rows for p in one) == sum(p.rows for p in many) == len(market.frame)
    assert len(one) == -(-len(market.frame) // 1000)
    assert len({p.path for p in many}) == 3 and len(many) > 3
    with pytest.raises(DatasetError, match="does not exist"):
        training_set_pieces(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no parquet"):
        training_set_pieces(tmp_path / "empty")


def _row_keyed(market: Market) -> tuple[pd.DataFrame, IdVocab, ItemVectorLookup]:
    """The market with one user id per row, so a batch's dense user ids name its rows."""
    frame = market.frame.assign(user_id=np.arange(1, len(market.frame) + 1, dtype=np.int64))
    return frame, IdVocab.fit(frame), ItemVectorLookup.from_frame(market.item_vectors)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_streams_share_every_row_once_in_equal_steps(market: Market, tmp_path, world: int) -> None:
    frame, vocab, lookup = _row_keyed(market)
    pieces = training_set_pieces(_write_parts(frame, tmp_path / "parts", files=2, row_group=450))
    hi = frame["ts"].iloc[int(len(frame) * 0.7)]
    period = Period(hi=hi)
    counts = [int(period.mask(pq.ParquetFile(p.path).read_row_group(p.row_group, columns=["ts"])
                              .to_pandas()["ts"]).sum()) for p in pieces]
    expected = set(vocab.users(frame.loc[frame["ts"] < hi, "user_id"].to_numpy()).tolist())
    build = functools.partial(build_inputs, lookup=lookup, vocab=vocab, n_tiers=10, history_len=20)
    per_epoch = []
    for epoch in (0, 1):
        seen: list[int] = []
        for rank in range(world):
            stream = ShardStream(pieces, counts, period, build, rank=rank, world=world, batch_size=64, seed=3)
            batches = list(stream(epoch))
            assert len(batches) == stream.steps  # every rank in every allreduce
            assert max(len(b) for b in batches) <= 64
            seen += [u for b in batches for u in b.user.tolist()]
        assert set(seen) == expected
        assert len(seen) - len(expected) < world  # at most one padding row per rank
        per_epoch.append(seen)
    assert per_epoch[0] != per_epoch[1]  # each epoch reshuffles


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_builds_its_inputs_at_the_same_steps(market: Market, tmp_path, world: int) -> None:
    # pieces of uneven sizes put each rank's piece boundaries at different rows; the costly build
    # must still fall on the same steps everywhere, or a rank waits in the allreduce while another builds
    frame, vocab, lookup = _row_keyed(market)
    pieces = training_set_pieces(_write_parts(frame, tmp_path / "parts", files=3, row_group=333))
    counts = [p.rows for p in pieces]
    built_at: list[list[int]] = []
    for rank in range(world):
        steps, sizes = [0], []

        def build(rows: pd.DataFrame, sizes: list[int] = sizes) -> object:
            sizes.append(len(rows))
            return build_inputs(rows, lookup=lookup, vocab=vocab, n_tiers=10, history_len=20)

        stream = ShardStream(pieces, counts, Period(), build, rank=rank, world=world, batch_size=32, seed=5)
        at = []
        for _ in stream(0):
            if len(sizes) > len(at):
                at.append(steps[0])  # this batch came from a build made just now
            steps[0] += 1
        chunks = len(sizes) - 2 if len(sizes) > 1 and sizes[-2] % 32 == 0 and sizes[-1] < 32 else len(sizes) - 1
        assert all(n == SHUFFLE_BATCHES * 32 for n in sizes[:chunks]), sizes  # whole chunks, then the rest
        assert sum(sizes[chunks:]) < SHUFFLE_BATCHES * 32
        built_at.append(at)
    assert all(at == built_at[0] for at in built_at), built_at
    assert built_at[0][:3] == [0, SHUFFLE_BATCHES, 2 * SHUFFLE_BATCHES]


def test_plan_fits_what_one_process_fits(market: Market, small_cfg, tmp_path) -> None:
    rng = np.random.default_rng(0)
    frame = market.frame.assign(price=rng.lognormal(size=len(market.frame)),
                                brand=rng.choice(["a", "b", None], len(market.frame)))
    cfg = small_cfg.with_overrides(data={"side_features": [
        {"name": "price", "kind": "numeric", "source": "items"},
        {"name": "brand", "kind": "categorical", "source": "items"}]})
    plan = plan_shards(_write_parts(frame, tmp_path / "parts", files=3, row_group=500), market.item_vectors, cfg)
    split = time_split(load_training_set(frame, 10), cfg, market.item_vectors)
    vocab = IdVocab.fit(split.train, min_item_count=2)
    side = SideEncoder.fit(split.train, cfg.data.side_features or [])
    assert (plan.cut, plan.valid_start) == (split.cut, split.valid_start)
    assert (plan.n_train, plan.n_fit) == (len(split.train), len(split.fit))
    assert np.array_equal(plan.vocab.item_ids, vocab.item_ids) and np.array_equal(plan.vocab.user_ids, vocab.user_ids)
    assert plan.vocab.categories == vocab.categories
    assert plan.side == side  # the same statistics, bit for bit


def test_two_processes_agree_with_one_and_write_one_artifact(small_cfg, tmp_path) -> None:
    # one learning rate for every parameter: at this size the ID tables' 0.1 step alone moves one
    # process's AUC by 0.002-0.004 (std) from one shuffle to another, the tolerance's scale
    vectors = synthetic_training_set(tmp_path / "set", rows=40_000, seed=1, n_users=800, n_items=1500,
                                     row_group=1000)
    cfg = small_cfg.with_overrides(model={"ctr": {"batch_size": 512, "epoch_study": 0, "bootstrap": 10,
                                                  "make_epochs": 2, "emb_lr": None}}, data={"side_features": []})
    models = ["simtier", "make"]
    one = train_and_evaluate(pd.read_parquet(tmp_path / "set"), vectors, cfg, tmp_path / "one", models=models,
                             progress=False, nproc=1)
    two = train_and_evaluate(tmp_path / "set", vectors, cfg, tmp_path / "two", models=models, progress=False,
                             nproc=2)
    for name in models:
        assert abs(two[name]["auc"] - one[name]["auc"]) <= 0.005, (name, one[name]["auc"], two[name]["auc"])
    listing = sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two").rglob("*"))
    assert listing == sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*"))
    assert sorted(p.name for p in (tmp_path / "two" / "models").iterdir()) == sorted(models)  # rank 0's, once
    report = json.loads((tmp_path / "two" / "ctr_report.json").read_text())
    assert report["ctr"]["make"]["gauc"] == pytest.approx(two["make"]["gauc"])
    logs = report["training"]["make"][0]
    assert logs["make_pretrain"]["epochs"] == 2 and logs["id_stage"]["epochs"] == 1  # the schedules kept
    assert logs["processes"] == 2
    assert report["split"]["n_train"] <= logs["id_stage"]["samples"] < report["split"]["n_train"] + 2  # (+ padding)


def test_torchrun_ranks_join_its_group_and_rank_zero_writes(market: Market, tmp_path) -> None:
    parts = _write_parts(market.frame, tmp_path / "parts", files=2, row_group=500)
    market.item_vectors.to_parquet(tmp_path / "vectors.parquet")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(Path(__file__).with_name("torchrun_entry.py")), str(parts), str(tmp_path / "vectors.parquet"),
         str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    said = dict(line.split(" ", 2)[1:] for line in done.stdout.splitlines() if line.startswith("RANK "))
    assert said == {"0": '["id_only"]', "1": "[]"}  # rank 0 returns the section, rank 1 nothing
    assert sorted(p.name for p in (tmp_path / "run" / "models").iterdir()) == ["id_only"]
    assert json.loads((tmp_path / "run" / "ctr_report.json").read_text())["training"]["id_only"][0]["processes"] == 2
