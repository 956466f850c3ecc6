"""The plan of a data-parallel training run: counting passes over a training set, no rank holding it.

:func:`plan_shards` reads a few columns of a training set (one parquet file or a directory of them)
a record batch at a time and fits what one process fits on the whole frame: the cut and the
validation start (the quantiles of ``ts`` that :func:`training.data.time_split` takes), the id
vocabulary (:meth:`IdVocab.fit`'s sets), the side-feature statistics (the training period's rows,
in the frame's order, so the same values bit for bit) and per piece its rows in each period, which
the ranks' :class:`~training.data.ShardStream` share out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from infra.config import MmadsConfig
from infra.dataset import time_cut
from infra.errors import DatasetError
from infra.side_features import configured
from training.data import Period, Piece, load_training_set, read_piece, training_set_pieces
from training.experiment import check_same_encoder
from training.models.inputs import IdVocab, ItemVectorLookup
from training.models.side import SideEncoder


@dataclass(frozen=True)
class ShardPlan:
    """What every rank needs before streaming: the split times, the fitted vocabularies, row counts.

    Attributes:
        pieces: the training set's (file, row group) pieces, in row order.
        cut: the train/test cut; ``test_end`` ends the scored rows (the original cut when the
            validation slice is the holdout, else None).
        valid_start: the first time of the validation slice.
        fit_counts, train_counts: per piece, its rows before ``valid_start`` / before ``cut``.
        vocab: the id vocabularies (fitted on the training period, as :meth:`IdVocab.fit` does).
        side: the side-feature encoder (the training period's statistics), or None.
        item_counts: (ids, training impressions) per target item (the report's slices read them).
        vec_dim: the multimodal vector width.
    """

    pieces: tuple[Piece, ...]
    cut: pd.Timestamp
    test_end: pd.Timestamp | None
    valid_start: pd.Timestamp
    fit_counts: tuple[int, ...]
    train_counts: tuple[int, ...]
    vocab: IdVocab
    side: SideEncoder | None
    item_counts: tuple[np.ndarray, np.ndarray]
    vec_dim: int

    @property
    def n_train(self) -> int:
        """Rows before the cut."""
        return sum(self.train_counts)

    @property
    def n_fit(self) -> int:
        """Rows before the validation slice."""
        return sum(self.fit_counts)


def _ts_ns(pieces: Sequence[Piece]) -> list[np.ndarray]:
    """Per piece, its impression times as int64 nanoseconds (one column; also checks ``clicked``)."""
    out = []
    for piece in pieces:
        parts = []
        for chunk in read_piece(piece, ["ts", "clicked"]):
            if not chunk["clicked"].isin([0, 1]).all():
                raise DatasetError("training set column 'clicked' must hold only 0/1")
            parts.append(chunk["ts"].dt.as_unit("ns").astype("int64").to_numpy())
        out.append(np.concatenate(parts) if parts else np.zeros(0, np.int64))
    return out


def _split_times(ts: list[np.ndarray], cfg: MmadsConfig, cut: pd.Timestamp | None,
                 holdout: str) -> tuple[pd.Timestamp, pd.Timestamp | None, pd.Timestamp]:
    """``(cut, test_end, valid_start)`` exactly as :func:`training.data.time_split` (twice for ``validation``)."""
    every = np.concatenate(ts)

    def valid_start_before(c: pd.Timestamp) -> pd.Timestamp:
        train = every[every < c.value]
        test = int((every > c.value).sum())
        if len(train) == 0 or test == 0:
            raise DatasetError(f"time split at {c} leaves {len(train)} train and {test} test rows")
        return pd.Timestamp(int(np.quantile(train, 1.0 - cfg.model.ctr.validation_fraction)), tz="UTC")

    if cut is None:
        cut = time_cut(pd.DataFrame({"ts": pd.to_datetime(every, utc=True)}), cfg.data.cut_quantile,
                       cfg.data.cut_time)
    valid_start = valid_start_before(cut)
    if holdout == "test":
        return cut, None, valid_start
    return valid_start, cut, valid_start_before(valid_start)


def _fit_vocab_and_side(pieces: Sequence[Piece], period: Period, cfg: MmadsConfig,
                        min_item_count: int) -> tuple[IdVocab, SideEncoder | None, tuple[np.ndarray, np.ndarray]]:
    """The vocabularies and side statistics of the rows in ``period``, a record batch at a time.

    The same sets as :meth:`IdVocab.fit` on the whole period; the side features are fitted on the
    period's side columns alone (scalars per row), sorted like the in-memory frame, so the
    statistics are the ones one process computes.
    """
    specs = configured(cfg)
    side_cols = [s.name for s in specs]
    cols = ["ts", "user_id", "item_id", "category", "hist_item_ids", *side_cols]
    items, counts, hist, users, cats, side_parts = [], [], [], [], set(), []
    for piece in pieces:
        for chunk in read_piece(piece, cols):
            rows = chunk[period.mask(chunk["ts"])]
            ids, n = np.unique(rows["item_id"].to_numpy(np.int64), return_counts=True)
            items.append(ids)
            counts.append(n)
            hist.append(np.unique(_flat_ids(rows["hist_item_ids"])))
            users.append(np.unique(rows["user_id"].to_numpy(np.int64)))
            cats.update(rows["category"].astype(str).unique().tolist())
            if side_cols:
                side_parts.append(rows[["ts", *side_cols]])
    all_ids = np.concatenate(items) if items else np.zeros(0, np.int64)
    uniq, inverse = np.unique(all_ids, return_inverse=True)
    totals = np.zeros(len(uniq), np.int64)
    np.add.at(totals, inverse, np.concatenate(counts) if counts else np.zeros(0, np.int64))
    targets = uniq[totals >= min_item_count]
    known = np.unique(np.concatenate([targets, *hist]))
    vocab = IdVocab(user_ids=np.unique(np.concatenate(users)) if users else np.zeros(0, np.int64),
                    item_ids=known.astype(np.int64), categories=tuple(sorted(cats)))
    side = None
    if specs:
        frame = pd.concat(side_parts, ignore_index=True).sort_values("ts", kind="stable").reset_index(drop=True)
        side = SideEncoder.fit(frame, specs)
    return vocab, side, (uniq, totals)


def _flat_ids(col: pd.Series) -> np.ndarray:
    """Every id of a column of id lists (None counts as empty), int64."""
    cells = [np.asarray(v, dtype=np.int64) for v in col.tolist() if v is not None]
    return np.concatenate(cells) if cells else np.zeros(0, np.int64)


def _period_counts(ts: list[np.ndarray], hi: pd.Timestamp) -> tuple[int, ...]:
    return tuple(int((t < hi.value).sum()) for t in ts)


def plan_shards(source: Path, item_vectors: pd.DataFrame, cfg: MmadsConfig, *, cut: pd.Timestamp | None = None,
                holdout: str = "test", min_item_count: int = 2) -> ShardPlan:
    """Counting passes over a training set (file or directory) for data-parallel training.

    Args:
        source: one parquet file or a directory of parquet files in the training-set contract.
        item_vectors: the item-vector table (its width is checked against the set's vectors).
        cfg: configuration (``data.cut_*``, ``model.ctr.validation_fraction``, side features).
        cut: the dataset's cut, or None to take ``cfg.data``'s quantile of the set's ``ts``.
        holdout: ``test`` or ``validation`` (as :func:`training.experiment.train_and_evaluate`).
        min_item_count: target items seen fewer times stay out of the vocabulary.

    Returns:
        The plan.

    Raises:
        DatasetError: missing set or columns, bad labels, or an empty train or test period.
    """
    pieces = training_set_pieces(source)
    first = next(read_piece(pieces[0]), None)
    if first is None:
        raise DatasetError(f"training set {source} has no rows")
    first = load_training_set(first, cfg.model.n_tiers)  # columns, dtypes, labels of the first record batch
    lookup = ItemVectorLookup.from_frame(item_vectors)
    check_same_encoder(first, lookup)
    ts = _ts_ns(pieces)
    cut, test_end, valid_start = _split_times(ts, cfg, cut, holdout)
    vocab, side, item_counts = _fit_vocab_and_side(pieces, Period(hi=cut), cfg, min_item_count)
    return ShardPlan(pieces=tuple(pieces), cut=cut, test_end=test_end, valid_start=valid_start,
                     fit_counts=_period_counts(ts, valid_start), train_counts=_period_counts(ts, cut), vocab=vocab,
                     side=side, item_counts=item_counts, vec_dim=lookup.dim)
