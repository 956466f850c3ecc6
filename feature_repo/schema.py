"""Column names and Arrow schemas of the two stored feature views (offline parquet and online rows).

``item_embeddings`` rows: ``item_id``, ``emb`` (d float32), ``category``, ``created_at``,
``event_timestamp`` (= the item's ``created_at`` when built from files, the write time when streamed).
``user_behavior`` rows (the lean user row): ``user_id``, ``hist_item_ids`` (newest first, <= N),
``hist_ts`` (per history item, the time of the user's latest behavior on it, epoch microseconds),
``last_event_ts``, ``event_timestamp``. No vectors: the history vectors are gathered from the item
rows by id (:func:`feature_repo.history.gather`).
Side-feature views (only when the run has side features, see :mod:`infra.side_features`):
``item_side`` rows ``item_id``, one column per item side feature, ``event_timestamp`` (= the item's
``created_at``); ``user_side`` rows ``user_id``, one column per user side feature,
``event_timestamp`` (:data:`USER_SIDE_TIME`: user attributes are static). Categoricals are strings,
numerics float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from infra.config import SideFeature

ITEM_VIEW = "item_embeddings"
USER_VIEW = "user_behavior"
SIMTIER_VIEW = "simtier"
ITEM_PUSH = "item_embeddings_push"
USER_PUSH = "user_behavior_push"
TRAINING_SERVICE = "ctr_training"
SERVING_SERVICE = "ctr_serving"
ITEM_SIDE_VIEW = "item_side"
USER_SIDE_VIEW = "user_side"
SIDE_VIEWS: dict[str, str] = {"items": ITEM_SIDE_VIEW, "users": USER_SIDE_VIEW}  # source -> view
USER_SIDE_TIME = pd.Timestamp("1970-01-01", tz="UTC")

TS_FIELD = "event_timestamp"
ITEM_COLUMNS = ["item_id", "emb", "category", "created_at", TS_FIELD]
# the item-vector table training, the CTR report and the serving checks take: one row per item
ITEM_VECTOR_COLUMNS = ITEM_COLUMNS[:-1]
USER_COLUMNS = ["user_id", "hist_item_ids", "hist_ts", "last_event_ts", TS_FIELD]
# the ODFV's request-time input: the history vectors gathered for the request, flattened (L x d)
HIST_VECTORS_FIELD = "hist_emb_flat"
HIST_VECTORS_REQUEST = "history_vectors"

_TS = pa.timestamp("us", tz="UTC")

ITEM_SCHEMA = pa.schema([
    ("item_id", pa.int64()),
    ("emb", pa.list_(pa.float32())),
    ("category", pa.string()),
    ("created_at", _TS),
    (TS_FIELD, _TS),
])
USER_SCHEMA = pa.schema([
    ("user_id", pa.int64()),
    ("hist_item_ids", pa.list_(pa.int64())),
    ("hist_ts", pa.list_(pa.int64())),
    ("last_event_ts", _TS),
    (TS_FIELD, _TS),
])
VIEW_SCHEMAS: dict[str, pa.Schema] = {ITEM_VIEW: ITEM_SCHEMA, USER_VIEW: USER_SCHEMA}

# When a part file's row was written: Feast's created_timestamp_column. Two rows of one entity with
# the same event_timestamp (two behaviors in the same second, a re-indexed item) are told apart by
# it, so a point-in-time join takes the one written last - the state the online store holds -
# instead of either at random.
CREATED_FIELD = "created_ts"


def part_schema(view_schema: pa.Schema) -> pa.Schema:
    """The schema of a view's offline part files: the view's columns and :data:`CREATED_FIELD`."""
    return view_schema.append(pa.field(CREATED_FIELD, _TS))
VIEW_KEYS: dict[str, str] = {
    ITEM_VIEW: "item_id", USER_VIEW: "user_id", ITEM_SIDE_VIEW: "item_id", USER_SIDE_VIEW: "user_id",
}


def side_arrow_type(spec: SideFeature) -> pa.DataType:
    """The stored type of a side feature: string (categorical) or float64 (numeric)."""
    return pa.string() if spec.kind == "categorical" else pa.float64()


def side_schema(source: str, specs: Sequence[SideFeature]) -> pa.Schema:
    """The Arrow schema of the side view of ``source`` (``items`` or ``users``) for ``specs``.

    Its part files add :data:`CREATED_FIELD`, like every view's.
    """
    key = "item_id" if source == "items" else "user_id"
    fields = [(s.name, side_arrow_type(s)) for s in specs if s.source == source]
    return pa.schema([(key, pa.int64()), *fields, (TS_FIELD, _TS)])


def item_vector_table(items: pd.DataFrame, vectors: np.ndarray | Sequence[np.ndarray]) -> pd.DataFrame:
    """The item-vector table (:data:`ITEM_VECTOR_COLUMNS`) of ``items`` (a dataset's items frame) and their vectors.

    Args:
        items: ``item_id``, ``category``, ``created_at`` per item.
        vectors: ``(len(items), d)`` vectors, row i belongs to ``items.iloc[i]``.
    """
    return pd.DataFrame({
        "item_id": items["item_id"].to_numpy(np.int64), "emb": list(vectors),
        "category": items["category"].to_numpy(), "created_at": items["created_at"].to_numpy(),
    })
