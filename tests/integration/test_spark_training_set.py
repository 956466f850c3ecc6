"""The training set on Feast's Spark offline store (local[2]) equals the duckdb one, row for row.

The same tied, second-resolution log as tests/integration/test_point_in_time.py goes into two repos,
one per offline store; Spark's point-in-time join plus the per-partition SimTier step must give the
duckdb path's rows (same histories, features within 1e-6), keep the strictly-before rule and let the
later-written snapshot win among equal event times. One Spark session serves the module.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_repo.schema import USER_VIEW
from feature_repo.simtier import SIMTIER_COLUMNS
from feature_repo.store import append_offline, apply_repo
from infra.config import MmadsConfig, load_config
from infra.errors import FeatureError
from tests.integration.test_point_in_time import DIM, T0, TIERS, N, _strict_history, _tied_log
from training.spark_training_set import build_training_set_spark as build_spark
from training.training_set import build_training_set, check_parity, materialize_from_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = ["user_id", "item_id", "ts", "clicked"]


def _cfg(state_dir: Path, store: str) -> MmadsConfig:
    return load_config().with_overrides(
        state_dir=str(state_dir), model={"dim": DIM, "history_len": N, "n_tiers": TIERS},
        feast={"offline_store": store,
               "spark": {"master": "local[2]", "driver_memory": "1g", "shuffle_partitions": 4,
                         "arrow_batch_rows": 64}})


@pytest.fixture(scope="module")
def spark_cfg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MmadsConfig]:
    """A Spark repo and the module's one local[2] session (skips without pyspark or Java)."""
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install -e '.[spark]'; make setup)")
    if shutil.which("java") is None:
        pytest.skip("java is not installed (Debian package openjdk-17-jre-headless; make system-deps)")
    from training.spark_training_set import spark_session

    cfg = _cfg(tmp_path_factory.mktemp("spark_repo"), "spark")
    session = spark_session(cfg)
    yield cfg
    session.stop()


@pytest.fixture(scope="module")
def built(spark_cfg: MmadsConfig, tmp_path_factory: pytest.TempPathFactory):
    data = _tied_log()
    out = tmp_path_factory.mktemp("spark_out")
    frames = {}
    for name, cfg in (("duckdb", _cfg(tmp_path_factory.mktemp("duck_repo"), "duckdb")), ("spark", spark_cfg)):
        store = apply_repo(cfg)
        materialize_from_dataset(cfg, store, data["behaviors"], data["items"], data["vectors"])
        summary = build_training_set(cfg, store, data["impressions"], out / name, progress=False)
        frames[name] = (summary, pq.read_table(out / name).to_pandas())
    return data, store, frames, out


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(_h=df["hist_item_ids"].map(tuple)).sort_values(
        [*KEYS, "_h"], kind="stable").drop(columns="_h").reset_index(drop=True)


def test_spark_rows_equal_duckdb_rows(built):
    data, _, frames, out = built
    (duck_summary, duck), (spark_summary, spark) = frames["duckdb"], frames["spark"]
    assert (out / "spark").is_dir() and list((out / "spark").glob("part-*.parquet"))
    assert spark_summary.rows == duck_summary.rows == len(data["impressions"])
    assert spark_summary.rows_without_history == duck_summary.rows_without_history > 0
    assert spark_summary.rows_without_emb == duck_summary.rows_without_emb
    assert list(spark.columns) == list(duck.columns)
    a, b = _sorted(duck), _sorted(spark)
    pd.testing.assert_frame_equal(a[KEYS + ["category", "item_created_at", "has_emb"]],
                                  b[KEYS + ["category", "item_created_at", "has_emb"]])
    assert a["hist_item_ids"].map(tuple).tolist() == b["hist_item_ids"].map(tuple).tolist()
    np.testing.assert_array_equal(np.stack(a["item_emb"]), np.stack(b["item_emb"]))
    cols = SIMTIER_COLUMNS(TIERS)
    assert a[cols].to_numpy().std() > 0  # the features are not trivially zero
    np.testing.assert_allclose(a[cols].to_numpy(np.float64), b[cols].to_numpy(np.float64), atol=1e-6, rtol=0)


def test_spark_history_is_the_strict_replay(built):
    data, _, frames, _ = built
    spark = frames["spark"][1]
    for r in spark.itertuples():
        assert tuple(r.hist_item_ids) == _strict_history(data["behaviors"], r.user_id, r.ts), r


def test_odfv_parity_check_runs_on_the_spark_store(built, spark_cfg):
    data, store, _, _ = built
    result = check_parity(spark_cfg, store, data["impressions"], sample=40)
    assert result.rows == 40
    assert result.hist_mismatches == 0
    assert result.max_abs_diff <= 1e-6


def test_equal_time_snapshots_resolve_to_the_later_on_spark(built, spark_cfg, tmp_path: Path):
    """Two parts stamp one user at the same second: Spark's join takes the later-written one."""
    _, store, _, _ = built
    users = np.arange(1001, 1041, dtype=np.int64)
    s = T0 + pd.Timedelta(days=2)

    def part(hist: list[int]) -> pd.DataFrame:
        return pd.DataFrame({"user_id": users, "hist_item_ids": [hist] * len(users),
                             "hist_ts": [[0] * len(hist)] * len(users),
                             "last_event_ts": s, "event_timestamp": s})

    append_offline(spark_cfg, USER_VIEW, part([7]))
    append_offline(spark_cfg, USER_VIEW, part([8, 7]))
    imps = pd.DataFrame({"user_id": users, "item_id": np.ones(len(users), np.int64),
                         "clicked": np.zeros(len(users), np.int8), "ts": s + pd.Timedelta(seconds=1)})
    at_s = imps.assign(ts=s)  # looked up strictly before s: neither snapshot
    # a Parquet path this time: the lookup time is computed in Spark (lookup_time in a pandas UDF)
    src = tmp_path / "impressions.parquet"
    pq.write_table(pa.Table.from_pandas(pd.concat([imps, at_s], ignore_index=True)), src, coerce_timestamps="us")
    build_spark(spark_cfg, store, src, tmp_path / "t")
    got = pq.read_table(tmp_path / "t").to_pandas()
    after = got[got["ts"] > s]["hist_item_ids"].map(tuple)
    assert len(after) == len(users) and (after == (8, 7)).all(), after.value_counts()
    assert (got[got["ts"] == s]["hist_item_ids"].map(len) == 0).all()


def test_missing_column_or_another_store_is_an_error(built, spark_cfg, tmp_path: Path):
    data, store, _, _ = built
    with pytest.raises(FeatureError, match="lack columns"):
        build_training_set(spark_cfg, store, data["impressions"].drop(columns="clicked"), tmp_path / "x",
                           progress=False)
    duck = spark_cfg.with_overrides(feast={"offline_store": "duckdb"})
    with pytest.raises(FeatureError, match="needs feast.offline_store: spark"):
        build_spark(duck, store, data["impressions"], tmp_path / "y")
    assert not list(tmp_path.iterdir())  # nothing half-written is left behind
