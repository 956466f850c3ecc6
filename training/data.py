"""Training-set loading, the time split, and batching over precomputed input tensors.

Split (docs/architecture.md): ``cut = time_cut(impressions, cfg.data.cut_quantile, cfg.data.cut_time)``; train
rows have ``ts < cut``, test rows ``ts > cut`` (rows exactly at the cut are dropped, so no test row
is at or before it). Every test row carries ``is_new`` = the item was created after the cut. The
validation slice (MAKE and LightGBM early stopping; never the test rows) is the last
``cfg.model.ctr.validation_fraction`` of the training period by time.

Batches are index selections of one :class:`~training.models.inputs.CTRInputs` built once per
dataset, so no per-row Python runs while training.

Data-parallel training (``training.distributed``) streams instead: a training set (one parquet file
or a directory of them) is a list of :class:`Piece` (file, row group); a :class:`ShardStream` gives
each rank its share of the rows of a period, one row group at a time, in a random order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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


def flag_new_items(test: pd.DataFrame, cut: pd.Timestamp, item_vectors: pd.DataFrame | None = None) -> None:
    """Fill ``test``'s ``item_created_at`` (from ``item_vectors`` where null); ``is_new``: created after ``cut``."""
    created = _created_at(test, item_vectors)
    test["item_created_at"] = created
    test["is_new"] = (created > cut).fillna(False).to_numpy(bool)


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
    flag_new_items(test, cut, item_vectors)
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


# --- streaming: a training set as pieces, and one data-parallel rank's batches -------------------------

READ_ROWS = 4096  # rows per record batch of the counting passes (bounds their memory)
SHUFFLE_BATCHES = 8  # a rank turns this many of its batches at a time into model inputs


def _arrow_threads() -> bool:
    """Whether Arrow should decode on its thread pool.

    Not with one thread: the hand-off to the pool's only thread costs a wake-up and, with every core
    busy training, a preemption.
    """
    return pa.cpu_count() > 1


@dataclass(frozen=True)
class Piece:
    """One row group of one parquet file: the unit ranks share out.

    Attributes:
        path: the parquet file.
        row_group: the row group's index in the file.
        rows: its row count.
    """

    path: str
    row_group: int
    rows: int


def training_set_pieces(source: Path) -> list[Piece]:
    """Every (file, row group) of a training set: one parquet file, or a directory of them (recursively).

    Files are taken in sorted path order, row groups in file order, so the pieces' concatenation
    is the set's row order. Hidden files and Spark/Hadoop markers (``_SUCCESS``, ``.crc``) are skipped.

    Raises:
        DatasetError: the path does not exist, or holds no parquet file.
    """
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"training set {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet")
                       if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
    else:
        files = [path]
    if not files:
        raise DatasetError(f"training set directory {path} holds no parquet file")
    pieces = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        pieces += [Piece(str(f), g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    return pieces


def read_piece(piece: Piece, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """The rows of one piece as frames of at most :data:`READ_ROWS` rows, in file order."""
    with pq.ParquetFile(piece.path) as f:
        for batch in f.iter_batches(batch_size=READ_ROWS, row_groups=[piece.row_group], columns=columns):
            yield batch.to_pandas()


@dataclass(frozen=True)
class Period:
    """A half-open time range ``lo <= ts < hi`` (a None end is open), or ``lo < ts`` when ``after``.

    Attributes:
        lo, hi: the ends.
        after: exclude ``lo`` itself (the test period starts strictly after the cut).
    """

    lo: pd.Timestamp | None = None
    hi: pd.Timestamp | None = None
    after: bool = False

    def mask(self, ts: pd.Series) -> np.ndarray:
        """Which of ``ts`` lie in the period, (R,) bool."""
        keep = np.ones(len(ts), dtype=bool)
        if self.lo is not None:
            keep &= (ts > self.lo).to_numpy() if self.after else (ts >= self.lo).to_numpy()
        if self.hi is not None:
            keep &= (ts < self.hi).to_numpy()
        return keep


def read_period(pieces: Sequence[Piece], period: Period, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of ``pieces`` in ``period`` as one frame, sorted by ``ts`` (stable, like :func:`load_training_set`)."""
    cols = None if columns is None else list(dict.fromkeys(["ts", *columns]))
    parts = [chunk[period.mask(chunk["ts"])] for piece in pieces for chunk in read_piece(piece, cols)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


class ShardStream:
    """One data-parallel rank's batches of the training rows in a period, streamed from the pieces.

    Epoch ``e`` orders the pieces by a permutation seeded with ``seed + 7919 * e`` (the same on every
    rank), lays their in-period rows end to end and gives rank ``r`` of ``W`` the contiguous range
    ``[R r / W, R (r + 1) / W)``: rank row counts differ by at most one, and a piece on a boundary
    is read by the two ranks that share it. A rank reads one piece at a time (its part of one row
    group, columnar) and visits its rows in a random order, turning :data:`SHUFFLE_BATCHES` batches
    at a time into model inputs at the same steps on every rank: it holds a row group and a few
    batches, never its shard, and a training set written in one or two large row groups is still
    shuffled row by row.

    Every rank yields exactly :attr:`steps` batches per epoch (DDP needs every rank in every
    allreduce): a rank one row short of a batch boundary repeats its last row as a one-row batch.

    Args:
        pieces: the training set's pieces.
        counts: per piece, its rows in ``period`` (from one counting pass).
        period: the rows this stream trains on (e.g. before the validation slice).
        build: turns a frame of rows into model inputs (:func:`~training.models.inputs.build_inputs`).
        rank, world: this rank and the number of ranks.
        batch_size: rows per batch on this rank.
        seed: the shuffling seed.
    """

    def __init__(self, pieces: Sequence[Piece], counts: Sequence[int], period: Period,
                 build: Callable[[pd.DataFrame], CTRInputs], *, rank: int, world: int, batch_size: int,
                 seed: int) -> None:
        if len(pieces) != len(counts):
            raise ValueError("one row count per piece")
        self.pieces, self.counts, self.period, self.build = list(pieces), np.asarray(counts, np.int64), period, build
        self.rank, self.world, self.batch_size, self.seed = rank, world, batch_size, seed
        self.total = int(self.counts.sum())
        if self.total < world:
            raise DatasetError(f"{self.total} training rows cannot be shared by {world} processes")

    @property
    def steps(self) -> int:
        """Batches per epoch on every rank: the largest rank's rows over the batch size, rounded up."""
        per_rank = -(-self.total // self.world)  # ceil
        return -(-per_rank // self.batch_size)

    def rank_range(self) -> tuple[int, int]:
        """The rank's rows ``[start, stop)`` in an epoch's piece order."""
        return self.total * self.rank // self.world, self.total * (self.rank + 1) // self.world

    def __call__(self, epoch: int) -> Iterator[CTRInputs]:
        """The batches of epoch ``epoch`` (0-based)."""
        order = np.random.default_rng(self.seed + 7919 * epoch).permutation(len(self.pieces))
        gen = torch.Generator().manual_seed(self.seed + 7919 * epoch + 104729 * self.rank)
        emitted, last = 0, None
        for batch in self._batches(order, gen):
            emitted += 1
            last = batch
            yield batch
        if emitted < self.steps and last is not None:  # a short rank: pad with one repeated row
            yield last.select(slice(len(last) - 1, None))
            emitted += 1
        if emitted != self.steps:
            raise RuntimeError(f"rank {self.rank} made {emitted} batches, expected {self.steps}")

    def _parts(self, order: np.ndarray) -> Iterator[pa.Table]:
        """The rank's in-period rows, one piece's part at a time in ``order``."""
        start, stop = self.rank_range()
        pos = 0  # in-period rows of the pieces before the current one
        for k in order:
            n = int(self.counts[k])
            if n and pos + n > start and pos < stop:
                piece = self.pieces[k]
                with pq.ParquetFile(piece.path) as f:
                    table = f.read_row_group(piece.row_group, use_threads=_arrow_threads())
                rows = table.filter(pa.array(self.period.mask(table.column("ts").to_pandas())))
                lo, hi = max(start - pos, 0), min(stop - pos, n)
                yield rows.slice(lo, hi - lo)
            pos += n
            if pos >= stop:
                return

    def _batches(self, order: np.ndarray, gen: torch.Generator) -> Iterator[CTRInputs]:
        """Batches of a random order within each part, built :data:`SHUFFLE_BATCHES` at a time.

        A part's shuffled rows queue behind the previous part's; whenever the queue holds a chunk
        (``SHUFFLE_BATCHES`` batches) the chunk is built, so every rank builds at the same steps (0,
        8, 16, ...) whatever its piece boundaries: the conversion, the costly part of reading, runs
        in lockstep and no rank waits in an allreduce while another builds. The last rows (fewer than
        a chunk) are built once, as full batches and one short one.
        """
        chunk, size = SHUFFLE_BATCHES * self.batch_size, self.batch_size
        queued: list[pa.Table] = []
        held = 0
        for part in self._parts(order):
            queued.append(part.take(pa.array(torch.randperm(part.num_rows, generator=gen).numpy())))
            held += part.num_rows
            while held >= chunk:
                rows = pa.concat_tables(queued)
                inputs = self.build(rows.slice(0, chunk).to_pandas(use_threads=_arrow_threads()))
                queued, held = [rows.slice(chunk)], held - chunk
                for b in range(0, chunk, size):
                    yield inputs.select(slice(b, b + size))
        if not held:
            return
        frame = pa.concat_tables(queued).to_pandas(use_threads=_arrow_threads())
        full = held // size * size
        if full:
            inputs = self.build(frame.iloc[:full])
            for b in range(0, full, size):
                yield inputs.select(slice(b, b + size))
        if full < held:
            yield self.build(frame.iloc[full:].reset_index(drop=True))
