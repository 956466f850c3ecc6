"""Training sets on Spark: Feast's Spark offline store joins, the shared SimTier runs per partition.

The Spark counterpart of :func:`training.training_set.build_training_set`, chosen by
``feast.offline_store: spark``. Nothing is collected to the driver:

1. the impressions become the entity frame, staged as Parquet beside the output, with the lookup
   time of each one = :func:`feature_repo.history.lookup_time` of its ``ts`` (in pandas for a
   pandas frame, in a pandas UDF for a Spark DataFrame or Parquet path): the one rule, features
   for an event at t come from rows stamped strictly before t;
2. Feast's Spark store joins point-in-time (``RetrievalJob.to_spark_df``): the latest row with
   ``event_timestamp <=`` the lookup time, and among equal event times the one with the latest
   ``created_ts``, as on the duckdb path;
3. each partition's Arrow batches go through :func:`training.training_set.training_rows`, the very
   function the duckdb path writes its chunks with (target vectors, history vectors gathered by id,
   :func:`~feature_repo.simtier.simtier_from_table`), via ``mapInArrow`` - the Arrow form of
   ``mapInPandas``, which hands the list columns over without converting them to Python objects;
4. the result is written as Parquet, one directory of part files (``pandas.read_parquet`` and
   ``pyarrow.parquet.read_table`` read it as one table).

The item-vector table is read on the driver (:func:`training.training_set.item_table`, the same
latest row per item the duckdb path uses) and shipped to the workers with the function (Spark
broadcasts a large closure). On a cluster the workers need the mmads package installed, and the
offline part files and the output directory must be on storage every executor can reach.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore

from feature_repo.history import ItemVectors, lookup_time
from feature_repo.schema import TS_FIELD
from infra.config import MmadsConfig
from infra.errors import ConfigError, FeatureError
from infra.side_features import configured
from training.training_set import (
    FAST_REFS,
    TrainingSetSummary,
    item_table,
    side_refs,
    training_rows,
    training_set_schema,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

IMPRESSION_COLUMNS = ("user_id", "item_id", "clicked", "ts")
_STAGE_ROWS = 1_000_000  # rows per row group when staging a pandas frame as Parquet


def spark_session(cfg: MmadsConfig) -> SparkSession:
    """The Spark session of ``cfg.feast.spark`` (the active one when a session already runs).

    Feast's Spark store uses the active session too, so the join and the SimTier step run in the
    same one. Settings read at JVM start (``spark.driver.memory``) apply to the first session of a
    process only.

    Raises:
        ConfigError: pyspark is not installed, or a local master finds no Java runtime.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("feast.offline_store: spark needs pyspark: pip install -e '.[spark]' "
                          "(make setup installs it)") from None

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    conf = cfg.feast.spark.spark_conf()
    local = conf.get("spark.master", "").startswith("local")
    if local and not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise ConfigError("feast.offline_store: spark runs Spark in a local JVM, and no Java runtime was found "
                          "(no java on PATH, no JAVA_HOME): install Java 17+, e.g. Debian's "
                          "openjdk-17-jre-headless (make system-deps)")
    if "spark.pyspark.python" in conf:
        # PySpark takes the workers' interpreter from the environment when the driver is this process
        os.environ.setdefault("PYSPARK_PYTHON", conf["spark.pyspark.python"])
    if conf.get("spark.driver.bindAddress") == "127.0.0.1":
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName("mmads-training-set")
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    logger.info("spark session on %s", conf.get("spark.master") or conf.get("spark.remote"))
    return session


_ENTITY_SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("clicked", pa.int8()),
                            ("ts", pa.timestamp("us", tz="UTC")), (TS_FIELD, pa.timestamp("us", tz="UTC"))])


def _check_columns(columns: list[str]) -> None:
    missing = set(IMPRESSION_COLUMNS) - set(columns)
    if missing:
        raise FeatureError(f"impressions lack columns {sorted(missing)}")


def stage_impressions(impressions: pd.DataFrame, path: Path) -> Path:
    """Write the entity frame of ``impressions`` (user_id, item_id, clicked, ts) as Parquet for Spark.

    ``event_timestamp`` is :func:`~feature_repo.history.lookup_time` of ``ts``; timestamps are
    written in microseconds (Spark refuses nanosecond Parquet timestamps).

    Raises:
        FeatureError: a column is missing.
    """
    _check_columns(list(impressions.columns))
    path.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path / "part-0.parquet", _ENTITY_SCHEMA) as writer:
        for lo in range(0, len(impressions), _STAGE_ROWS):
            chunk = impressions.iloc[lo:lo + _STAGE_ROWS]
            ts = pd.to_datetime(chunk["ts"], utc=True).dt.floor("us")
            writer.write_table(pa.table({
                "user_id": pa.array(chunk["user_id"].to_numpy("int64")),
                "item_id": pa.array(chunk["item_id"].to_numpy("int64")),
                "clicked": pa.array(chunk["clicked"].to_numpy("int8")),
                "ts": pa.array(ts, type=_ENTITY_SCHEMA.field("ts").type),
                TS_FIELD: pa.array(lookup_time(ts), type=_ENTITY_SCHEMA.field(TS_FIELD).type),
            }, schema=_ENTITY_SCHEMA))
    return path


def entity_frame(frame: DataFrame) -> DataFrame:
    """The Feast entity frame in Spark: the impression columns plus ``event_timestamp`` = lookup time.

    The lookup time is :func:`~feature_repo.history.lookup_time` itself, run in a pandas UDF.

    Args:
        frame: impressions with columns user_id, item_id, clicked, ts.

    Raises:
        FeatureError: a column is missing.
    """
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention
    from pyspark.sql.functions import pandas_udf

    _check_columns(frame.columns)

    @pandas_udf("timestamp")  # type: ignore[call-overload]
    def _lookup(ts: pd.Series) -> pd.Series:
        return lookup_time(ts)

    return frame.select(
        F.col("user_id").cast("bigint"), F.col("item_id").cast("bigint"), F.col("clicked").cast("tinyint"),
        F.col("ts"), _lookup(F.col("ts")).alias(TS_FIELD))


def _staged_entities(spark: SparkSession, impressions: pd.DataFrame | DataFrame | str | Path, path: Path
                     ) -> DataFrame:
    """The entity frame, written once to ``path`` and read back.

    Feast scans it several times (its time range, the join) and the row count is checked against
    it: a Parquet copy makes each scan a cheap read instead of a rerun of the lookup-time UDF.
    """
    if isinstance(impressions, pd.DataFrame):
        stage_impressions(impressions, path)
    else:
        frame = spark.read.parquet(str(impressions)) if isinstance(impressions, str | Path) else impressions
        entity_frame(frame).write.parquet(str(path))
    return spark.read.parquet(str(path))


_BatchFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def _features_fn(cfg: MmadsConfig, vectors: ItemVectors) -> _BatchFn:
    """The per-partition step: retrieved Arrow batches in, training-set rows out (the shared code)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            table = pa.Table.from_batches([batch])
            keys = table.select(list(IMPRESSION_COLUMNS)).to_pandas()
            yield from training_rows(cfg, keys, table, vectors).to_batches()

    return run


def build_training_set_spark(
    cfg: MmadsConfig,
    store: FeatureStore,
    impressions: pd.DataFrame | DataFrame | str | Path,
    out: Path,
    *,
    progress: bool = True,
) -> TrainingSetSummary:
    """Build a training set with Feast's Spark offline store: one row per impression, written by Spark.

    Args:
        cfg: the configuration (``feast.offline_store: spark``; dim, history_len, n_tiers, side features).
        store: the applied store (its offline store is Spark).
        impressions: user_id, item_id, clicked, ts (UTC): a pandas frame, a Spark DataFrame, or a
            Parquet path (microsecond timestamps); the entity frame is staged as Parquet beside ``out``.
        out: the output directory of Parquet part files (replaced atomically on a local file system);
            columns :func:`~training.training_set.training_set_schema`.
        progress: unused (Spark reports its own progress: its UI, or ``spark.ui.showConsoleProgress``);
            the same signature as the duckdb path.

    Returns:
        A :class:`~training.training_set.TrainingSetSummary` (counted on the written files).

    Raises:
        FeatureError: the store is not Spark, a column is missing, or the join lost or duplicated rows.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    if cfg.feast.offline_store != "spark":
        raise FeatureError(f"build_training_set_spark needs feast.offline_store: spark, not {cfg.feast.offline_store}")
    started = time.perf_counter()
    spark = spark_session(cfg)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # not hidden ('.'/'_' prefixes): Spark skips hidden paths when it reads them back
    tmp = out.with_name(f"{out.name}.{uuid.uuid4().hex}.tmp")
    staging = out.with_name(f"{out.name}.{uuid.uuid4().hex}.entities")
    try:
        entity = _staged_entities(spark, impressions, staging)
        job = store.get_historical_features(entity_df=entity, features=FAST_REFS + side_refs(cfg))  # type: ignore[arg-type]
        retrieved = job.to_spark_df()  # type: ignore[attr-defined]
        schema = training_set_schema(cfg.model.n_tiers, configured(cfg))
        rows = retrieved.mapInArrow(_features_fn(cfg, item_table(cfg)), from_arrow_schema(schema))
        rows.write.parquet(str(tmp))
        summary = _summarize(spark, tmp, entity.count())
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - started
    result = TrainingSetSummary(out, summary[0], summary[1], summary[2], seconds, summary[0] / max(seconds, 1e-9))
    logger.info("training set %s (spark): %d rows in %.1f s (%.0f rows/s)", out, result.rows, seconds,
                result.rows_per_s)
    return result


def _summarize(spark: SparkSession, path: Path, expected: int) -> tuple[int, int, int]:
    """Rows, rows without history and rows without a target vector of the written set (one scan)."""
    from pyspark.sql import functions as F  # noqa: N812

    got = spark.read.parquet(str(path)).agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum((F.size("hist_item_ids") <= 0).cast("long")).alias("no_hist"),
        F.sum((~F.col("has_emb")).cast("long")).alias("no_emb"),
    ).collect()[0]
    rows = int(got["rows"])
    if rows != expected:
        raise FeatureError(f"the Spark point-in-time join returned {rows} rows for {expected} impressions")
    return rows, int(got["no_hist"] or 0), int(got["no_emb"] or 0)
