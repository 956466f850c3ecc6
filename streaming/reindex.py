"""Re-encode every item after a model change (``mmads stream reindex``).

Upserts by id, so the running indexer can keep going while this runs; rows written by it carry the
new ``model_version``. Items are read from a dataset directory (the catalogue of record) or passed
as a frame.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from feature_repo.store import open_store
from infra.config import MmadsConfig
from infra.dataset import load_dataset
from streaming.item_indexer import OfflineItemRows, load_encoder, write_items
from streaming.milvus_sink import MilvusSink

logger = logging.getLogger(__name__)


def reindex(cfg: MmadsConfig, encoder: Any, items_df: pd.DataFrame, image_root: Path | None = None,
            batch_size: int = 256, progress: bool = True) -> int:
    """Re-encode every item with ``encoder`` (after a model change) and rewrite Milvus and Feast.

    Args:
        cfg: the configuration.
        encoder: the new ``ItemEncoder``.
        items_df: columns item_id, title, category, image_path, created_at, optionally item_key.
        image_root: directory image paths are relative to (a dataset root), None for absolute paths.
        batch_size: items per encode/write call.
        progress: show a progress bar.

    Returns:
        The number of items written.
    """
    milvus = MilvusSink(cfg, encoder.dim)
    milvus.ensure_collection()
    store = open_store(cfg)
    offline = OfflineItemRows()
    done = 0
    try:
        for s in tqdm(range(0, len(items_df), batch_size), disable=not progress, desc="reindex", unit="batch"):
            chunk = items_df.iloc[s:s + batch_size].reset_index(drop=True)
            offline.add(write_items(cfg, encoder, milvus, store, chunk, image_root))
            done += len(chunk)
        offline.append(cfg)
        milvus.maybe_flush(force=True)
    finally:
        milvus.close()
    logger.info("reindexed %d items with encoder %s", done, encoder.version)
    return done


def run_reindex(cfg: MmadsConfig, data_dir: Path | str, model_dir: Path | str | None = None,
                progress: bool = True) -> int:
    """Re-encode the items of a dataset with the model in ``model_dir`` (CLI entry point).

    Returns:
        The number of items written.
    """
    ds = load_dataset(data_dir, window=cfg.data.plausible_time_window)
    items = ds.items.assign(item_key=[ds.item_keys.get(int(i), "") for i in ds.items["item_id"]])
    return reindex(cfg, load_encoder(cfg, model_dir), items, image_root=ds.root, progress=progress)
