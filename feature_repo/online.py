"""Online features for one user x B candidates: the fast path and the ODFV path (identical values).

The fast path reads the user row once and the candidate rows in one batched call, then calls the
shared :func:`~feature_repo.simtier.simtier` with the user's history shared by all candidates. The
ODFV path asks Feast for the ``ctr_serving`` feature service, which evaluates the ``simtier``
on-demand view per request (slower; used to check parity and as the reference).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_repo.on_demand import history_matrix, target_matrix
from feature_repo.schema import ITEM_VIEW, SERVING_SERVICE, USER_VIEW
from feature_repo.simtier import SIMTIER_COLUMNS, simtier
from infra.config import MmadsConfig

logger = logging.getLogger(__name__)



def _python_value(value: ValueProto | None) -> Any:
    """A stored Value as Python: lists for list values, datetime for timestamps, None when unset."""
    kind = value.WhichOneof("val") if value is not None else None
    if value is None or kind is None or kind == "null_val":
        return None
    if kind == "unix_timestamp_val":
        return datetime.fromtimestamp(value.unix_timestamp_val, tz=UTC)
    raw = getattr(value, kind)
    return list(raw.val) if kind.endswith("_list_val") else raw


@dataclass(frozen=True)
class OnlineFeatures:
    """Features of one ranking request.

    Attributes:
        user_id: the user.
        item_ids: ``(B,)`` int64 candidate ids, request order.
        hist_item_ids: ``(L,)`` int64 the user's history, newest first (empty for a new user).
        item_emb: ``(B, d)`` float32 candidate vectors (zeros where missing).
        has_emb: ``(B,)`` bool, which candidates have a vector.
        category: per candidate, its category or None.
        item_created_at: per candidate, its creation time or None.
        simtier: ``(B, T + 3)`` float64, columns ``simtier_columns``.
        simtier_columns: :func:`SIMTIER_COLUMNS` of T.
    """

    user_id: int
    item_ids: np.ndarray
    hist_item_ids: np.ndarray
    item_emb: np.ndarray
    has_emb: np.ndarray
    category: list[str | None]
    item_created_at: list[datetime | None]
    simtier: np.ndarray
    simtier_columns: list[str]

    @property
    def missing_item_ids(self) -> list[int]:
        """Candidates without an embedding in the online store."""
        return [int(i) for i in self.item_ids[~self.has_emb]]

    def frame(self) -> pd.DataFrame:
        """One row per candidate: item_id, has_emb, category and the SimTier columns."""
        df = pd.DataFrame({"item_id": self.item_ids, "has_emb": self.has_emb, "category": self.category})
        return pd.concat([df, pd.DataFrame(self.simtier, columns=self.simtier_columns)], axis=1)


class OnlineFeatureReader:
    """Reads online features for ranking requests.

    Args:
        store: an open Feast store (:func:`feature_repo.store.open_store`).
        cfg: the configuration (``model.dim``, ``model.n_tiers``).
    """

    def __init__(self, store: FeatureStore, cfg: MmadsConfig) -> None:
        self.store = store
        self.dim = cfg.model.dim
        self.n_tiers = cfg.model.n_tiers
        self.columns = SIMTIER_COLUMNS(self.n_tiers)
        self._views: dict[str, FeatureView] = {}

    def _online_read(self, view: str, join_key: str, ids: Sequence[int], names: list[str]) -> dict[str, list[Any]]:
        """One batched online-store read of ``names`` for entity ``ids`` (request order; None = missing).

        Feast's ``get_online_features`` spends ~10 ms per 200 rows grouping entity keys and building
        its response; the provider's ``online_read`` is the same storage read without that.
        """
        if view not in self._views:
            self._views[view] = self.store.get_feature_view(view)
        keys = [EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=int(i))]) for i in ids]
        rows = self.store._get_provider().online_read(  # noqa: SLF001 - the public read path is the slow part
            config=self.store.config, table=self._views[view], entity_keys=keys, requested_features=names
        )
        out: dict[str, list[Any]] = {name: [] for name in names}
        for _, values in rows:
            for name in names:
                out[name].append(_python_value(values.get(name) if values else None))
        return out

    def read(self, user_id: int, item_ids: Sequence[int]) -> OnlineFeatures:
        """Fast path: one read of the user row, one batched read of the candidates, shared SimTier.

        Args:
            user_id: the user.
            item_ids: the B candidates.

        Returns:
            The request's :class:`OnlineFeatures`.
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        user = self._online_read(USER_VIEW, "user_id", [int(user_id)], ["hist_item_ids", "hist_emb_flat"])
        items = self._online_read(ITEM_VIEW, "item_id", ids.tolist(), ["emb", "category", "created_at"])
        history = history_matrix(user["hist_emb_flat"][0], self.dim)
        target = target_matrix(items["emb"], self.dim)
        return self._assemble(user_id, ids, user["hist_item_ids"][0], items, simtier(
            target, history, None, self.n_tiers
        ))

    def read_via_odfv(self, user_id: int, item_ids: Sequence[int]) -> OnlineFeatures:
        """Reference path: Feast's ``get_online_features`` through the ``ctr_serving`` service.

        Returns:
            The same :class:`OnlineFeatures` as :meth:`read` (values computed by the ODFV).
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        res = self.store.get_online_features(
            features=self.store.get_feature_service(SERVING_SERVICE),
            entity_rows={"user_id": [int(user_id)] * len(ids), "item_id": ids.tolist()},
            full_feature_names=False,  # True silently drops ODFV outputs online (Feast 0.67)
        ).to_dict()
        sim = np.zeros((len(ids), len(self.columns)), dtype=np.float64)
        for k, col in enumerate(self.columns):
            sim[:, k] = np.asarray(res[col], dtype=np.float64)
        hist = res["hist_item_ids"][0] if len(ids) else None
        return self._assemble(user_id, ids, hist, res, sim)

    def _assemble(
        self, user_id: int, ids: np.ndarray, hist: Any, items: dict[str, list[Any]], sim: np.ndarray
    ) -> OnlineFeatures:
        emb_rows = items.get("emb", [None] * len(ids))
        has_emb = np.array([e is not None and len(e) == self.dim for e in emb_rows], dtype=bool)
        return OnlineFeatures(
            user_id=int(user_id),
            item_ids=ids,
            hist_item_ids=np.asarray(hist if hist is not None else [], dtype=np.int64),
            item_emb=target_matrix(emb_rows, self.dim),
            has_emb=has_emb,
            category=list(items.get("category", [None] * len(ids))),
            item_created_at=list(items.get("created_at", [None] * len(ids))),
            simtier=sim,
            simtier_columns=self.columns,
        )
