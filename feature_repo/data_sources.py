"""Feast data sources: parquet part-file directories (offline) and the push sources in front of them.

Layout under ``cfg.state_dir / "feature_repo"``: ``offline/<view>/part-*.parquet``. Writers append a
part file (never rewrite); the duckdb and the file (Dask) offline store read the glob, the Spark
offline store the directory (``SparkSource``s over the same files).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat
from feast.data_source import DataSource

from feature_repo.schema import CREATED_FIELD, ITEM_PUSH, ITEM_VIEW, TS_FIELD, USER_PUSH, USER_VIEW
from infra.config import MmadsConfig


def repo_dir(cfg: MmadsConfig) -> Path:
    """The Feast repo directory (absolute): ``<state_dir>/feature_repo``."""
    return (Path(cfg.state_dir) / "feature_repo").resolve()


def offline_dir(cfg: MmadsConfig, view: str) -> Path:
    """The directory of parquet part files backing ``view``."""
    return repo_dir(cfg) / "offline" / view


def _parquet_source(cfg: MmadsConfig, view: str) -> DataSource:
    """The part files of ``view``: a FileSource, or a SparkSource for the Spark offline store."""
    if cfg.feast.offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        # the directory, not a glob: Spark reads every part in it and skips the hidden .tmp files
        # writers rename from (a glob also makes Spark log a stack trace per read)
        with warnings.catch_warnings():  # "alpha" warning on every construction; docs/scaling.md says so once
            warnings.simplefilter("ignore", RuntimeWarning)
            return SparkSource(name=f"{view}_offline", path=str(offline_dir(cfg, view)), file_format="parquet",
                               timestamp_field=TS_FIELD, created_timestamp_column=CREATED_FIELD)
    return FileSource(
        name=f"{view}_offline",
        path=str(offline_dir(cfg, view) / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field=TS_FIELD,
        created_timestamp_column=CREATED_FIELD,
    )


def item_embeddings_push(cfg: MmadsConfig) -> PushSource:
    """Push source of ``item_embeddings``, batch-backed by the item part files."""
    return PushSource(name=ITEM_PUSH, batch_source=_parquet_source(cfg, ITEM_VIEW))


def user_behavior_push(cfg: MmadsConfig) -> PushSource:
    """Push source of ``user_behavior``, batch-backed by the history snapshot part files."""
    return PushSource(name=USER_PUSH, batch_source=_parquet_source(cfg, USER_VIEW))


def side_source(cfg: MmadsConfig, view: str) -> DataSource:
    """The batch source of a side-feature view (written from the dataset files, never streamed)."""
    return _parquet_source(cfg, view)
