"""The one place where a training-set frame becomes model input tensors.

Training (``training.data``) and inference (:class:`training.models.ranker.Ranker`) both call
:func:`build_inputs`, so the service's scores equal the offline model's scores on the same features.

Frame schema (the training-set contract): ``user_id``, ``item_id``, ``category``, ``has_emb``,
``item_emb`` (d floats, zeros when missing), ``hist_item_ids`` (newest first), ``tier_0..tier_{T-1}``,
``hist_len``, ``sim_max``, ``sim_mean`` and, for training only, ``clicked``.

Ids are mapped to dense indices by an :class:`IdVocab` fitted on the training rows: index 0 is
padding, 1 is out-of-vocabulary (ids unseen in training, e.g. new items), known ids start at 2.
Multimodal vectors are L2-normalised here; history vectors are gathered from an
:class:`ItemVectorLookup` by a precomputed ``(R, N)`` index tensor (0 = no vector: a zero row).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from feature_repo.simtier import SIMTIER_COLUMNS
from infra.errors import FeatureError, ModelArtifactError
from training.models.side import SideEncoder

PAD = 0
OOV = 1
FIRST_ID = 2
BASE_COLUMNS = ("user_id", "item_id", "category", "has_emb", "item_emb", "hist_item_ids")


def _index(known: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Dense index of each id in the sorted array ``known`` (FIRST_ID + position), OOV when absent."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(known) == 0:
        return np.full(ids.shape, OOV, dtype=np.int64)
    pos = np.searchsorted(known, ids)
    pos_c = np.minimum(pos, len(known) - 1)
    found = known[pos_c] == ids
    return np.where(found, pos_c + FIRST_ID, OOV).astype(np.int64)


@dataclass(frozen=True)
class IdVocab:
    """Dense id vocabularies for users, items and categories (0 = padding, 1 = OOV).

    Attributes:
        user_ids: known user ids, sorted, shape (U,).
        item_ids: known item ids, sorted, shape (I,).
        categories: known categories, sorted.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    categories: tuple[str, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame, *, min_item_count: int = 1) -> IdVocab:
        """Fit on training rows: target items seen at least ``min_item_count`` times plus history items.

        Items seen fewer times stay OOV, so the OOV embedding is trained on rare items and new items
        in test get a learned "cold item" vector rather than an untrained one.
        """
        counts = frame["item_id"].value_counts()
        targets = counts.index[counts >= min_item_count].to_numpy(np.int64)
        hist = _flatten_lists(frame["hist_item_ids"])[0]
        items = np.unique(np.concatenate([targets, hist]))
        users = np.unique(frame["user_id"].to_numpy(np.int64))
        cats = tuple(sorted(frame["category"].astype(str).unique().tolist()))
        return cls(user_ids=users, item_ids=items, categories=cats)

    @property
    def n_users(self) -> int:
        """Size of the user embedding table (with padding and OOV rows)."""
        return len(self.user_ids) + FIRST_ID

    @property
    def n_items(self) -> int:
        """Size of the item embedding table (with padding and OOV rows)."""
        return len(self.item_ids) + FIRST_ID

    @property
    def n_categories(self) -> int:
        """Size of the category embedding table (with padding and OOV rows)."""
        return len(self.categories) + FIRST_ID

    def users(self, ids: np.ndarray) -> np.ndarray:
        """Dense user indices, shape like ``ids``."""
        return _index(self.user_ids, ids)

    def items(self, ids: np.ndarray) -> np.ndarray:
        """Dense item indices, shape like ``ids``."""
        return _index(self.item_ids, ids)

    def category_index(self, cats: Sequence[object] | pd.Series) -> np.ndarray:
        """Dense category indices, shape (len(cats),); a value is matched by ``str(value)``."""
        lut = self.__dict__.get("_category_lut")
        if lut is None:
            lut = {c: k + FIRST_ID for k, c in enumerate(self.categories)}
            object.__setattr__(self, "_category_lut", lut)  # a cache, not state: frozen otherwise
        values = cats.tolist() if isinstance(cats, pd.Series) else cats
        return np.fromiter((lut.get(str(c), OOV) for c in values), dtype=np.int64, count=len(values))

    def save(self, path: Path) -> None:
        """Write the vocabulary to ``path`` (npz) and ``path.with_suffix('.json')`` (categories)."""
        np.savez(path, user_ids=self.user_ids, item_ids=self.item_ids)
        path.with_suffix(".json").write_text(json.dumps(list(self.categories)))

    @classmethod
    def load(cls, path: Path) -> IdVocab:
        """Read a vocabulary written by :meth:`save`."""
        npz = path if path.suffix == ".npz" else path.with_suffix(".npz")
        if not npz.is_file() or not npz.with_suffix(".json").is_file():
            raise ModelArtifactError(f"vocabulary files missing: {npz} / {npz.with_suffix('.json')}")
        arrays = np.load(npz)
        cats = tuple(json.loads(npz.with_suffix(".json").read_text()))
        return cls(user_ids=arrays["user_ids"], item_ids=arrays["item_ids"], categories=cats)


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _stack_vectors(values: Sequence[object], dim: int | None) -> np.ndarray:
    """Stack list/array cells into (R, d) float32; None cells become zeros."""
    if dim is None:
        dim = next((len(v) for v in values if v is not None), 0)  # type: ignore[arg-type]
    out = np.zeros((len(values), dim), dtype=np.float32)
    ok = [i for i, v in enumerate(values) if v is not None and len(v) > 0]  # type: ignore[arg-type]
    if ok:
        stacked = np.stack([np.asarray(values[i], dtype=np.float32) for i in ok])
        if stacked.shape[1] != dim:
            raise FeatureError(f"vector dimension {stacked.shape[1]} differs from the expected {dim}")
        out[ok] = stacked
    return out


class ItemVectorLookup:
    """Item id -> L2-normalised multimodal vector, as one dense tensor for vectorised gathers.

    Attributes:
        item_ids: sorted item ids, shape (I,).
        vectors: (I + 1, d) float32; row 0 is the zero "no vector" row, row ``k + 1`` is item_ids[k].
    """

    def __init__(self, item_ids: np.ndarray, vectors: torch.Tensor) -> None:
        self.item_ids = item_ids
        self.vectors = vectors

    @classmethod
    def from_frame(cls, item_vectors: pd.DataFrame) -> ItemVectorLookup:
        """Build from the item-vector table (``item_id``, ``emb``; other columns are ignored)."""
        for col in ("item_id", "emb"):
            if col not in item_vectors.columns:
                raise FeatureError(f"item-vector table lacks column '{col}'")
        table = item_vectors.drop_duplicates("item_id", keep="last").sort_values("item_id")
        return cls._sorted(table["item_id"].to_numpy(np.int64), _stack_vectors(table["emb"].tolist(), None))

    @classmethod
    def from_arrays(cls, item_ids: np.ndarray, vectors: np.ndarray) -> ItemVectorLookup:
        """Build from ``(I,)`` ids and their ``(I, d)`` vectors (any order; the last of a repeated id wins)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        rev = ids[::-1]
        uniq, first_in_rev = np.unique(rev, return_index=True)
        rows = len(ids) - 1 - first_in_rev
        return cls._sorted(uniq, np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)[rows])

    @classmethod
    def _sorted(cls, item_ids: np.ndarray, emb: np.ndarray) -> ItemVectorLookup:
        vectors = torch.zeros((len(item_ids) + 1, emb.shape[1]), dtype=torch.float32)
        vectors[1:] = torch.from_numpy(_normalise(emb))
        return cls(item_ids, vectors)

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return int(self.vectors.shape[1])

    def index(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in :attr:`vectors` (0 when the item has no vector), shape like ``ids``."""
        idx = _index(self.item_ids, ids)
        return np.where(idx == OOV, 0, idx - FIRST_ID + 1)

    def agreement(self, item_ids: np.ndarray, vectors: Sequence[object]) -> tuple[float, int]:
        """How well other vectors of some items match this table: ``(median cosine, items compared)``.

        Vectors of one encoder agree to ~1 (bf16 backbones move them in the last bits); vectors of
        two different encoders live in unrelated spaces and agree to ~0. Items absent from the
        table, or without a vector, are skipped; with none left the median is NaN.
        """
        rows = self.index(np.asarray(item_ids, dtype=np.int64))
        given = _normalise(_stack_vectors(list(vectors), self.dim))
        keep = (rows > 0) & (np.abs(given).sum(axis=1) > 0)
        if not keep.any():
            return float("nan"), 0
        cos = (given[keep] * self.vectors[rows[keep]].numpy()).sum(axis=1)
        return float(np.median(cos)), int(keep.sum())


@dataclass(frozen=True)
class CTRInputs:
    """Model inputs for R rows (a whole dataset or one batch).

    Attributes:
        user, item, category: dense ids, (R,) int64.
        hist_items: dense history item ids, newest first, 0-padded, (R, N) int64; or (1, N), one
            history shared by every row (the service: one user, many candidates), which the
            attention layers then compute once instead of R times.
        hist_vec_idx: rows of ``vectors`` for the history items (0 = none/padding), shaped like
            ``hist_items``.
        target_vec: L2-normalised target item vector (zeros when missing), (R, d) float32.
        has_emb: whether the target has a vector, (R,) bool.
        simtier: ``tier_0..tier_{T-1}, hist_len, sim_max, sim_mean``, (R, T + 3) float32.
        vectors: the shared item-vector table, (I + 1, d) float32 (not sliced by :meth:`select`).
        label: clicks as float (R,), or None at inference.
        side_cat: categorical side features as vocabulary indices, (R, C) int64, or None (no side
            features; see :class:`~training.models.side.SideEncoder`).
        side_num: normalised numeric side features, (R, M) float32, or None.
    """

    user: torch.Tensor
    item: torch.Tensor
    category: torch.Tensor
    hist_items: torch.Tensor
    hist_vec_idx: torch.Tensor
    target_vec: torch.Tensor
    has_emb: torch.Tensor
    simtier: torch.Tensor
    vectors: torch.Tensor
    label: torch.Tensor | None = None
    side_cat: torch.Tensor | None = None
    side_num: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def select(self, idx: torch.Tensor | slice) -> CTRInputs:
        """The rows ``idx`` (a slice or an index tensor); the vector table (and a shared history) is shared."""
        shared = self.shared_history
        return replace(
            self,
            user=self.user[idx], item=self.item[idx], category=self.category[idx],
            hist_items=self.hist_items if shared else self.hist_items[idx],
            hist_vec_idx=self.hist_vec_idx if shared else self.hist_vec_idx[idx],
            target_vec=self.target_vec[idx], has_emb=self.has_emb[idx], simtier=self.simtier[idx],
            label=None if self.label is None else self.label[idx],
            side_cat=None if self.side_cat is None else self.side_cat[idx],
            side_num=None if self.side_num is None else self.side_num[idx],
        )

    @property
    def shared_history(self) -> bool:
        """True when one history row serves all rows (see ``hist_items``)."""
        return int(self.hist_items.shape[0]) == 1 and len(self) != 1

    def hist_mask(self) -> torch.Tensor:
        """True at real (non-padding) history positions, (R, N) bool."""
        return self.hist_items != PAD

    def hist_vectors(self) -> torch.Tensor:
        """The history items' vectors (zeros where missing or padding), (R, N, d)."""
        return self.vectors[self.hist_vec_idx]


def _flatten_lists(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a column of id lists: (values (L,) int64, lengths (R,) int64); None counts as empty."""
    cells = [np.asarray(v if v is not None else (), dtype=np.int64) for v in col.tolist()]
    lengths = np.fromiter((len(c) for c in cells), dtype=np.int64, count=len(cells))
    values = np.concatenate(cells) if cells else np.zeros(0, dtype=np.int64)
    return values.astype(np.int64), lengths


def _pad_history(col: pd.Series, history_len: int) -> np.ndarray:
    """(R, N) int64 item ids, newest first, -1 padded (histories longer than N are truncated)."""
    values, lengths = _flatten_lists(col)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    pos = np.arange(history_len)
    take = pos[None, :] < lengths[:, None]
    src = np.where(take, starts[:, None] + pos[None, :], 0)
    safe = values[src] if len(values) else np.zeros_like(src)
    return np.where(take, safe, -1)


def check_columns(frame: pd.DataFrame, n_tiers: int, side: SideEncoder | None = None) -> None:
    """Raise FeatureError naming every missing training-set column (side features included)."""
    needed = [*BASE_COLUMNS, *SIMTIER_COLUMNS(n_tiers), *(side.names if side else [])]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise FeatureError(f"frame lacks training-set columns {missing}")


def build_inputs(
    frame: pd.DataFrame, lookup: ItemVectorLookup, vocab: IdVocab, *, n_tiers: int, history_len: int,
    side: SideEncoder | None = None,
) -> CTRInputs:
    """Turn a training-set frame into model inputs (the single path for training and serving).

    Args:
        frame: rows in the training-set schema (``clicked`` optional).
        lookup: item vectors for the history gather.
        vocab: the id vocabularies fitted on the training rows.
        n_tiers: T, the number of SimTier columns.
        history_len: N, the padded history length.
        side: the fitted side-feature encoder (None: the model uses no side features).

    Returns:
        The inputs for all R rows, with labels when ``clicked`` is present.
    """
    check_columns(frame, n_tiers, side)
    return inputs_from_arrays(
        user_ids=frame["user_id"].to_numpy(np.int64),
        item_ids=frame["item_id"].to_numpy(np.int64),
        categories=frame["category"],
        has_emb=frame["has_emb"].fillna(False).to_numpy(bool),
        item_emb=_stack_vectors(frame["item_emb"].tolist(), lookup.dim),
        history=_pad_history(frame["hist_item_ids"], history_len),
        simtier=frame[SIMTIER_COLUMNS(n_tiers)].astype("float64").to_numpy(),
        lookup=lookup,
        vocab=vocab,
        label=frame["clicked"].to_numpy(np.float32) if "clicked" in frame.columns else None,
        side=side,
        side_values={n: frame[n] for n in side.names} if side else None,
    )


def inputs_from_arrays(
    *, user_ids: np.ndarray, item_ids: np.ndarray, categories: Sequence[object] | pd.Series, has_emb: np.ndarray,
    item_emb: np.ndarray, history: np.ndarray, simtier: np.ndarray, lookup: ItemVectorLookup, vocab: IdVocab,
    label: np.ndarray | None = None, side: SideEncoder | None = None,
    side_values: Mapping[str, Sequence[object] | pd.Series] | None = None,
) -> CTRInputs:
    """Model inputs from column arrays: what :func:`build_inputs` does after reading the frame.

    The service calls this directly with one request's arrays (no DataFrame in the hot path); the
    id mapping, normalisation and padding are the same code either way.

    Args:
        user_ids: (R,) raw user ids.
        item_ids: (R,) raw target item ids.
        categories: (R,) category per row (None for unknown).
        has_emb: (R,) whether the target has a vector.
        item_emb: (R, d) raw target vectors (zeros when missing).
        history: (R, N) raw history item ids, newest first, -1 padded; or (1, N), shared by all rows.
        simtier: (R, T + 3) ``tier_*``, ``hist_len``, ``sim_max``, ``sim_mean`` (NaN counts as 0).
        lookup: item vectors for the history gather.
        vocab: the id vocabularies.
        label: (R,) clicks, or None at inference.
        side: the fitted side-feature encoder, or None (no side features).
        side_values: per side feature, its R raw values (one value: shared by all rows).

    Returns:
        The inputs for all R rows.
    """
    real = history >= 0
    hist_items = np.where(real, vocab.items(np.where(real, history, 0)), PAD)
    hist_vec = np.where(real, lookup.index(np.where(real, history, 0)), 0)
    has = np.array(has_emb, dtype=bool, copy=True)  # torch wants writable memory
    target = _normalise(np.asarray(item_emb, dtype=np.float32)) * has[:, None]
    sim = np.asarray(simtier, dtype=np.float64)
    sim = np.where(np.isnan(sim), 0.0, sim).astype(np.float32)
    side_cat = side_num = None
    if side is not None and side.specs:
        cat, num = side.transform(side_values or {}, len(item_ids))
        side_cat, side_num = torch.from_numpy(cat), torch.from_numpy(num)
    return CTRInputs(
        user=torch.from_numpy(vocab.users(user_ids)),
        item=torch.from_numpy(vocab.items(item_ids)),
        category=torch.from_numpy(vocab.category_index(categories)),
        hist_items=torch.from_numpy(hist_items.astype(np.int64)),
        hist_vec_idx=torch.from_numpy(hist_vec.astype(np.int64)),
        target_vec=torch.from_numpy(target.astype(np.float32)),
        has_emb=torch.from_numpy(has),
        simtier=torch.from_numpy(sim),
        vectors=lookup.vectors,
        label=None if label is None else torch.from_numpy(np.asarray(label, dtype=np.float32)),
        side_cat=side_cat,
        side_num=side_num,
    )
