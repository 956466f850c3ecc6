"""Feature fetch for the service: the Feast online reads and the model's input frame.

Every feature value comes from ``feature_repo``: the candidate rows, the user row and SimTier from
:class:`~feature_repo.online.OnlineFeatureReader` (one batched read of each, the shared
:func:`~feature_repo.simtier.simtier`), and the history vectors MAKE attends over from the user's
``hist_emb_flat`` (decoded by :func:`~feature_repo.on_demand.history_matrix`). This module only
arranges them into the training-set schema that :meth:`training.models.ranker.Ranker.score` reads,
so the service computes no feature of its own.

Any failure inside Feast (SQLite file missing or locked, Redis down, registry unreadable) becomes a
:class:`~serving.errors.FeatureStoreUnavailableError` (HTTP 503) carrying the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

from feature_repo.on_demand import history_matrix
from feature_repo.online import OnlineFeatureReader, OnlineFeatures
from feature_repo.schema import USER_VIEW
from feature_repo.store import open_store
from infra.config import MmadsConfig
from infra.errors import MmadsError
from serving.errors import FeatureStoreUnavailableError
from training.models.inputs import ItemVectorLookup

logger = logging.getLogger(__name__)

_USER_REFS = [f"{USER_VIEW}:hist_item_ids", f"{USER_VIEW}:hist_emb_flat"]

T = TypeVar("T")


@dataclass(frozen=True)
class UserHistory:
    """A user's behavior history as stored online.

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
        return ItemVectorLookup.from_frame(pd.DataFrame({"item_id": self.item_ids, "emb": list(self.vectors)}))


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
                self._reader = OnlineFeatureReader(store, self.cfg)
            return self._reader

    def user_history(self, user_id: int) -> UserHistory:
        """One read of the user's row (an unknown user has an empty history)."""
        store = self.reader.store
        row = self._call("read user", lambda: store.get_online_features(
            features=_USER_REFS, entity_rows={"user_id": [int(user_id)]}).to_dict())
        ids = row["hist_item_ids"][0]
        vectors = history_matrix(row["hist_emb_flat"][0], self.dim)
        item_ids = np.asarray(ids if ids is not None else (), dtype=np.int64)
        if len(item_ids) != len(vectors):
            # The SimTier of this row sees no history vectors either (same decoding): MAKE gets none.
            logger.warning("user %d: %d history ids but %d history vectors of d=%d; serving without them "
                           "(is model.dim the dimension the streaming jobs write?)", user_id, len(item_ids),
                           len(vectors), self.dim)
            vectors = np.zeros((len(item_ids), self.dim), dtype=np.float32)
        return UserHistory(item_ids, vectors)

    def candidates(self, user_id: int, item_ids: Sequence[int]) -> OnlineFeatures:
        """The fast path: user row + candidate rows + SimTier (``OnlineFeatureReader.read``)."""
        reader = self.reader
        read = reader.read_via_odfv if self.via_odfv else reader.read
        return self._call("read candidates", lambda: read(int(user_id), item_ids))

    def history_of(self, features: OnlineFeatures, user_id: int) -> UserHistory:
        """The history vectors that go with ``features`` (from the reader when it returns them)."""
        vectors = getattr(features, "hist_emb", None)
        if vectors is not None:
            return UserHistory(np.asarray(features.hist_item_ids, np.int64), np.asarray(vectors, np.float32))
        return self.user_history(user_id)


def scoring_frame(features: OnlineFeatures, ts: pd.Timestamp) -> pd.DataFrame:
    """The model's input rows (training-set schema) for one request's features.

    Args:
        features: the request's online features (B candidates).
        ts: the request time (the rows' ``ts``).

    Returns:
        B rows: ``user_id``, ``item_id``, ``ts``, ``category``, ``item_created_at``, ``has_emb``,
        ``item_emb`` (d floats, zeros when missing), ``hist_item_ids`` and the SimTier columns.
    """
    b = len(features.item_ids)
    hist = features.hist_item_ids.tolist()
    sim = np.asarray(features.simtier, dtype=np.float64)
    columns: dict[str, Any] = {
        "user_id": np.full(b, features.user_id, dtype=np.int64),
        "item_id": np.asarray(features.item_ids, dtype=np.int64),
        "ts": pd.DatetimeIndex(np.full(b, ts.value, dtype="datetime64[ns]"), tz="UTC"),
        "category": np.asarray(features.category, dtype=object),
        "item_created_at": pd.to_datetime(np.asarray(features.item_created_at, dtype=object), utc=True),
        "has_emb": np.asarray(features.has_emb, dtype=bool),
        "item_emb": list(np.asarray(features.item_emb, dtype=np.float32)),
        "hist_item_ids": [hist] * b,
    }
    for k, name in enumerate(features.simtier_columns):
        columns[name] = sim[:, k]
    return pd.DataFrame(columns, copy=False)
