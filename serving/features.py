"""Feature fetch for the service: the Feast online reads and the model's input frame.

Every feature value comes from ``feature_repo``: the candidate rows, the user row and SimTier from
:class:`~feature_repo.online.OnlineFeatureReader` (one read of the user row, one batched read of
the candidate and history-item rows that are not in the short-lived item-row cache, the shared
:func:`~feature_repo.history.gather` of the history vectors and the shared
:func:`~feature_repo.simtier.simtier`), and MAKE attends over those same gathered history vectors.
This module only hands those arrays to :func:`~training.models.inputs.inputs_from_arrays` (the
function ``build_inputs`` uses for the training-set frame), so the service computes no feature of its own.

Any failure inside Feast (SQLite file missing or locked, Redis down, registry unreadable) becomes a
:class:`~serving.errors.FeatureStoreUnavailableError` (HTTP 503) carrying the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from feature_repo.online import ItemRowCache, OnlineFeatureReader, OnlineFeatures, UserRow
from feature_repo.store import open_store
from infra.config import MmadsConfig
from infra.errors import FeatureError, MmadsError
from serving.errors import FeatureStoreUnavailableError
from training.models.inputs import CTRInputs, ItemVectorLookup, inputs_from_arrays
from training.models.ranker import Ranker

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class UserHistory:
    """A user's behavior history: the stored ids and the vectors gathered from the item rows.

    Attributes:
        item_ids: ``(L,)`` int64, newest first (empty for an unknown user).
        vectors: ``(L, d)`` float32, row i is ``item_ids[i]``'s vector (zeros: no vector).
    """

    item_ids: np.ndarray
    vectors: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> UserHistory:
        """The history of a user with no events."""
        return cls(np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32))

    def query_vectors(self, n: int) -> np.ndarray:
        """The ``n`` most recent non-zero vectors, ``(<= n, d)``: the ANN queries of ``/recommend``."""
        ok = np.flatnonzero(np.abs(self.vectors).sum(axis=1) > 0)
        return self.vectors[ok[:n]]

    def lookup(self) -> ItemVectorLookup:
        """The history vectors by id, for the model's history gather (MAKE)."""
        dim = self.vectors.shape[1]
        if len(self.item_ids) == 0:
            return ItemVectorLookup(np.zeros(0, dtype=np.int64), torch.zeros((1, dim), dtype=torch.float32))
        return ItemVectorLookup.from_arrays(self.item_ids, self.vectors)


class FeatureFetcher:
    """Opens the Feast store lazily and reads one request's features.

    Args:
        cfg: the configuration (the store under ``cfg.state_dir``; ``model.dim``, ``model.n_tiers``).
        reader: an existing reader (default: ``OnlineFeatureReader(open_store(cfg), cfg)`` on first use).
        via_odfv: read candidates through Feast's ``ctr_serving`` feature service, SimTier evaluated
            by the on-demand view per request (the slow reference path; benchmarks only).
    """

    def __init__(self, cfg: MmadsConfig, reader: OnlineFeatureReader | None = None, *, via_odfv: bool = False) -> None:
        self.cfg = cfg
        self.dim = cfg.model.dim
        self.via_odfv = via_odfv
        self._reader = reader
        self._lock = threading.Lock()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except FeatureStoreUnavailableError:
            raise
        except MmadsError as exc:
            raise FeatureStoreUnavailableError(f"Feast online store: {what}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - Feast surfaces sqlite, redis, OS and its own errors alike
            logger.debug("Feast %s failed", what, exc_info=True)
            raise FeatureStoreUnavailableError(
                f"Feast online store ({self.cfg.feast.online_store}) unreachable: {what} failed: "
                f"{exc.__class__.__name__}: {str(exc)[:200]}") from None

    @property
    def reader(self) -> OnlineFeatureReader:
        """The online reader (opens the store on first use)."""
        with self._lock:
            if self._reader is None:
                store = self._call("open store", lambda: open_store(self.cfg))
                self._reader = OnlineFeatureReader(store, self.cfg, item_cache=self._item_cache())
            return self._reader

    def _item_cache(self) -> ItemRowCache | None:
        ttl = self.cfg.serving.item_cache_ttl_s
        if self.via_odfv or ttl <= 0:
            return None
        return ItemRowCache(ttl, self.cfg.serving.item_cache_max_items)

    def user_row(self, user_id: int) -> UserRow:
        """One read of the user's row (an unknown user has an empty history)."""
        reader = self.reader
        return self._call("read user", lambda: reader.read_user(int(user_id)))

    def user_history(self, user_id: int, row: UserRow | None = None) -> UserHistory:
        """The user's history ids and vectors (``row``, or one read of it; the vectors gathered from item rows)."""
        row = row if row is not None else self.user_row(user_id)
        reader = self.reader
        vectors = self._call("read history items", lambda: reader.history_vectors(row))
        return UserHistory(row.item_ids[: len(vectors)], vectors)

    def candidates(self, user_id: int, item_ids: Sequence[int], row: UserRow | None = None) -> OnlineFeatures:
        """The fast path: user row (unless given) + candidate rows + SimTier (``OnlineFeatureReader.read``)."""
        reader = self.reader
        if self.via_odfv:
            return self._call("read candidates", lambda: reader.read_via_odfv(int(user_id), item_ids))
        return self._call("read candidates", lambda: reader.read(int(user_id), item_ids, user=row))

    def history_of(self, features: OnlineFeatures, user_id: int) -> UserHistory:
        """The history vectors that go with ``features`` (a read of the user row only on the ODFV path)."""
        if features.hist_emb is not None:
            vectors = np.asarray(features.hist_emb, np.float32)
            return UserHistory(np.asarray(features.hist_item_ids, np.int64)[: len(vectors)], vectors)
        return self.user_history(user_id)


def model_inputs(features: OnlineFeatures, history: UserHistory, ranker: Ranker) -> CTRInputs:
    """The model's inputs for one request: the arrays of ``features`` through ``inputs_from_arrays``.

    This is :func:`~training.models.inputs.build_inputs` without the DataFrame: the same id mapping,
    normalisation and history padding, so the scores equal the offline model's on the same features.

    Args:
        features: the request's online features (B candidates).
        history: the user's history (ids for the ID model, vectors for MAKE).
        ranker: the served model (vocabulary, history length, tiers).

    Raises:
        FeatureError: the SimTier columns are not the ones the model was trained on.
    """
    expected = ranker.simtier_columns
    if list(features.simtier_columns) != expected:
        raise FeatureError(f"SimTier columns {features.simtier_columns} differ from the model's {expected}")
    b = len(features.item_ids)
    ids = features.hist_item_ids[: ranker.history_len]
    # One user: every row has the same L <= N history ids, passed once as a (1, L) shared history
    # (the attention layers compute it once for all rows). Padding positions get exactly zero
    # attention weight, so L columns score the same as N at a fraction of the work.
    hist = np.asarray(ids, dtype=np.int64).reshape(1, -1) if len(ids) else np.full((1, 1), -1, dtype=np.int64)
    return inputs_from_arrays(
        user_ids=np.full(b, features.user_id, dtype=np.int64), item_ids=features.item_ids,
        categories=features.category, has_emb=features.has_emb, item_emb=features.item_emb, history=hist,
        simtier=features.simtier, lookup=history.lookup(), vocab=ranker.vocab,
        side=ranker.side, side_values=features.side,
    )
