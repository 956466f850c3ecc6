"""SCL training data: (query, purchased item) pairs over cached backbone features.

:func:`dataset_features` computes (or reuses) the backbone features of every item and query of a
dataset; :func:`build_pairs` joins queries to their purchased item and their clicked-not-bought
items by row; :func:`split_by_time` holds out the query pairs at or after the platform's one time cut.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from encoders.features_cache import Features, cache_key, cached, item_features, query_features
from infra.config import MmadsConfig
from infra.dataset import Dataset, dataset_cut
from infra.errors import DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairData:
    """Query pairs joined to item rows.

    Attributes:
        items: features of all n items (the retrieval corpus and the negatives).
        item_ids: ``(n,)`` int64 item ids.
        item_cats: ``(n,)`` int64 category codes.
        queries: features of the Q queries.
        pos_rows: ``(Q,)`` item row of each query's purchased item.
        clicked_rows: ``(Q, C)`` item rows of clicked-not-bought items, -1 padded (C may be 0).
    """

    items: Features
    item_ids: np.ndarray
    item_cats: np.ndarray
    queries: Features
    pos_rows: np.ndarray
    clicked_rows: np.ndarray

    def subset(self, rows: np.ndarray) -> PairData:
        """The pairs at the given query rows (items unchanged)."""
        return PairData(self.items, self.item_ids, self.item_cats, self.queries.take(rows),
                        self.pos_rows[rows], self.clicked_rows[rows])

    def __len__(self) -> int:
        return int(self.pos_rows.shape[0])


def dataset_features(dataset: Dataset, cfg: MmadsConfig, cache_dir: Path, *,
                     progress: bool = True) -> tuple[Features, Features]:
    """Backbone features of all items and all queries, cached under ``cache_dir``.

    The image tower runs only when the dataset has images. With ``model.scl.trainable_text_layers``
    k > 0 the text features are the token states below the top k layers.

    Returns:
        ``(item_features, query_features)`` in the frames' row order.
    """
    scl = cfg.model.scl
    size = scl.image_size if dataset.has_images else None
    mt, prec, top = scl.text_max_tokens, scl.backbone_precision, scl.trainable_text_layers
    ikey = cache_key("items", dataset.items, ["item_id", "title", "category", "image_path"],
                     max_tokens=mt, image_size=size, precision=prec, text_layers=top)
    qkey = cache_key("queries", dataset.queries, ["query_text", "query_image_path"],
                     max_tokens=mt, image_size=size, precision=prec, text_layers=top)
    suffix = f"_top{top}" if top else ""  # pooled and token-state features live side by side
    items = cached(cache_dir / f"items{suffix}.npz", ikey, lambda: item_features(
        dataset.items, dataset.root, max_tokens=mt, image_size=size, precision=prec, text_layers=top,
        progress=progress))
    queries = cached(cache_dir / f"queries{suffix}.npz", qkey, lambda: query_features(
        dataset.queries, dataset.root, max_tokens=mt, image_size=size, precision=prec, text_layers=top,
        progress=progress))
    return items, queries


def build_pairs(items: pd.DataFrame, queries: pd.DataFrame, item_feats: Features,
                query_feats: Features) -> PairData:
    """Join queries to item rows.

    Raises:
        DatasetError: there are no queries, or a query names an unknown item.
    """
    if len(queries) == 0:
        raise DatasetError("the dataset has no query pairs (queries.parquet) to train SCL on")
    ids = items["item_id"].to_numpy(dtype=np.int64)
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    pos = queries["item_id"].map(row_of)
    if pos.isna().any():
        raise DatasetError(f"queries name {int(pos.isna().sum())} unknown item ids")
    cats = pd.Categorical(items["category"].astype(str)).codes.astype(np.int64)
    return PairData(item_feats, ids, cats, query_feats, pos.to_numpy(dtype=np.int64),
                    _clicked_rows(queries, row_of))


def _clicked_rows(queries: pd.DataFrame, row_of: pd.Series) -> np.ndarray:
    if "clicked_item_ids" not in queries.columns:
        return np.zeros((len(queries), 0), dtype=np.int64)
    lists = [[] if v is None or (isinstance(v, float) and np.isnan(v)) else
             [int(row_of[i]) for i in v if i in row_of.index] for v in queries["clicked_item_ids"].tolist()]
    width = max((len(v) for v in lists), default=0)
    out = np.full((len(lists), width), -1, dtype=np.int64)
    for r, v in enumerate(lists):
        out[r, :len(v)] = v
    return out


def split_by_time(dataset: Dataset, cfg: MmadsConfig) -> tuple[np.ndarray, np.ndarray, pd.Timestamp]:
    """Train (strictly before the cut) and held-out (at or after it) query rows.

    The cut is the dataset's one time cut (:func:`infra.dataset.dataset_cut`: ``data.cut_time``, else
    the quantile of *impression* times), the same the CTR models, LightGBM and the retrieval
    evaluation use: no query pair at or after it reaches an encoder.

    Returns:
        ``(train_rows, test_rows, cut)``.
    """
    cut = dataset_cut(dataset, cfg)
    before = (dataset.queries["ts"] < cut).to_numpy()
    return np.flatnonzero(before), np.flatnonzero(~before), cut
