"""Training-set loading, the time split, and batching over precomputed input tensors.

Split (docs/architecture.md): ``cut = time_cut(impressions, cfg.data.cut_quantile, cfg.data.cut_time)``; train
rows have ``ts < cut``, test rows ``ts > cut`` (rows exactly at the cut are dropped, so no test row
is at or before it). Every test row carries ``is_new`` = the item was created after the cut. The
validation slice (MAKE and LightGBM early stopping; never the test rows) is the last
``cfg.model.ctr.validation_fraction`` of the training period by time.

Batches are index selections of one :class:`~training.models.inputs.CTRInputs` built once per
dataset, so no per-row Python runs while training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from infra.config import MmadsConfig
from infra.dataset import time_cut
from infra.errors import DatasetError, FeatureError
from training.models.inputs import CTRInputs, check_columns

logger = logging.getLogger(__name__)


def load_training_set(source: pd.DataFrame | Path, n_tiers: int) -> pd.DataFrame:
    """Read (if a path) and check a training-set frame; return it sorted by ``ts`` (stable).

    Raises:
        DatasetError: the file is missing, or columns are missing or mistyped.
    """
    if isinstance(source, pd.DataFrame):
        frame = source
    else:
        path = Path(source)
        if not path.exists():
            raise DatasetError(f"training set {path} does not exist")
        frame = pd.read_parquet(path)
    try:
        check_columns(frame, n_tiers)
    except FeatureError as exc:
        raise DatasetError(f"training set: {exc}") from None
    for col in ("ts", "clicked"):
        if col not in frame.columns:
            raise DatasetError(f"training set lacks column '{col}'")
    if not isinstance(frame["ts"].dtype, pd.DatetimeTZDtype):
        raise DatasetError(f"training set column 'ts' must be a UTC timestamp, found {frame['ts'].dtype}")
    if not frame["clicked"].isin([0, 1]).all():
        raise DatasetError("training set column 'clicked' must hold only 0/1")
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class TimeSplit:
    """Train/validation/test frames of one time split.

    Attributes:
        cut: the train/test cut.
        valid_start: first time of the validation slice (inside the training period).
        train: rows with ``ts < cut`` (fit + validation).
        test: rows with ``ts > cut``, with a bool ``is_new`` column.
    """

    cut: pd.Timestamp
    valid_start: pd.Timestamp
    train: pd.DataFrame
    test: pd.DataFrame

    @property
    def fit(self) -> pd.DataFrame:
        """Training rows before the validation slice."""
        return self.train[self.train["ts"] < self.valid_start]

    @property
    def valid(self) -> pd.DataFrame:
        """The validation slice: the last part of the training period."""
        return self.train[self.train["ts"] >= self.valid_start]


def _created_at(frame: pd.DataFrame, item_vectors: pd.DataFrame | None) -> pd.Series:
    created = pd.to_datetime(frame["item_created_at"], utc=True) if "item_created_at" in frame else None
    if created is None:
        created = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
    if item_vectors is not None and "created_at" in item_vectors.columns:
        table = item_vectors.drop_duplicates("item_id", keep="last").set_index("item_id")["created_at"]
        fallback = frame["item_id"].map(pd.to_datetime(table, utc=True))
        created = created.fillna(fallback)
    return created


def time_split(frame: pd.DataFrame, cfg: MmadsConfig, item_vectors: pd.DataFrame | None = None, *,
               cut: pd.Timestamp | None = None) -> TimeSplit:
    """Split a training-set frame by time and flag new items in the test part.

    Args:
        frame: the training set, sorted by ``ts``.
        cfg: configuration (``data.cut_quantile``, ``data.cut_time``, ``model.ctr.validation_fraction``).
        item_vectors: optional item table whose ``created_at`` fills null ``item_created_at``.
        cut: the dataset's cut (:func:`infra.dataset.dataset_cut`, recorded by ``validate``); when
            None, ``data.cut_time`` or the quantile of the frame's ``ts`` (one row per impression,
            so the same instant up to the microsecond flooring of the training set).

    Returns:
        The split. Raises DatasetError when the train or test part is empty.
    """
    if cut is None:
        # time_cut reads ts as int64 nanoseconds: hand it ns (the contract's timestamps are us)
        ts_ns = frame[["ts"]].astype("datetime64[ns, UTC]")
        cut = time_cut(ts_ns, cfg.data.cut_quantile, cfg.data.cut_time)
    train = frame[frame["ts"] < cut].reset_index(drop=True)
    test = frame[frame["ts"] > cut].reset_index(drop=True)
    dropped = len(frame) - len(train) - len(test)
    if dropped:
        logger.info("dropped %d rows stamped exactly at the cut %s", dropped, cut)
    if train.empty or test.empty:
        raise DatasetError(f"time split at {cut} leaves {len(train)} train and {len(test)} test rows")
    created = _created_at(test, item_vectors)
    test["item_created_at"] = created
    test["is_new"] = (created > cut).fillna(False).to_numpy(bool)
    ts = train["ts"].astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    q = 1.0 - cfg.model.ctr.validation_fraction
    valid_start = pd.Timestamp(int(np.quantile(ts, q)), tz="UTC")
    logger.info(
        "split at %s: %d train (validation from %s), %d test (%d new-item rows)",
        cut, len(train), valid_start, len(test), int(test["is_new"].sum()),
    )
    return TimeSplit(cut=cut, valid_start=valid_start, train=train, test=test)


class CTRDataset(Dataset[CTRInputs]):
    """A map-style dataset whose items are whole batches: ``ds[indices]`` -> CTRInputs.

    Args:
        inputs: the precomputed inputs of all rows.
    """

    def __init__(self, inputs: CTRInputs) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, indices: list[int]) -> CTRInputs:  # type: ignore[override]
        return self.inputs.select(torch.as_tensor(indices, dtype=torch.long))


def _identity(batch: Any) -> Any:
    return batch


def batch_loader(inputs: CTRInputs, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches of CTRInputs; shuffled with a seeded generator when ``shuffle``.

    Args:
        inputs: the precomputed inputs.
        batch_size: rows per batch (the last batch may be smaller).
        shuffle: random order (training) or the row order (evaluation).
        seed: the shuffling seed.

    Returns:
        A DataLoader yielding CTRInputs batches.
    """
    ds = CTRDataset(inputs)
    if shuffle:
        gen = torch.Generator().manual_seed(seed)
        base: RandomSampler | SequentialSampler = RandomSampler(ds, generator=gen)
    else:
        base = SequentialSampler(ds)
    sampler = BatchSampler(base, batch_size=batch_size, drop_last=False)
    return DataLoader(ds, sampler=sampler, batch_size=None, collate_fn=_identity)
