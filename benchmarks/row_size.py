"""The size of ``user_behavior`` rows as the online store holds them (``user_row_bytes``).

A row's size is the sum of its stored feature values' serialized ``Value`` protobufs: what Feast
writes per user into SQLite or Redis, without the entity key and the write timestamp (a few dozen
bytes either way). ``user_row_bytes`` is the mean over rows holding a full history of N items (the
sizing case); ``user_row_bytes_mean`` is the mean over every row read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from feast import FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_repo.feast_internals import online_read
from feature_repo.schema import USER_VIEW
from feature_repo.sqlite_rows import SqliteRowReader


def user_row_sizes(store: FeatureStore, user_ids: Sequence[int], n: int) -> dict[str, Any]:
    """Sizes of the stored ``user_behavior`` rows of ``user_ids`` (absent users are skipped).

    Args:
        store: an open Feast store.
        user_ids: the users to read.
        n: the history cap ``N``: rows with ``n`` history items are the full rows.

    Returns:
        ``{"user_row_bytes": mean bytes of a full row (NaN when none is full), "user_row_bytes_mean":
        mean over the rows read, "user_rows_measured": rows read, "user_rows_full": full rows}``.
    """
    view = store.get_feature_view(USER_VIEW)
    names = [f.name for f in view.features]
    ids = [int(i) for i in user_ids]
    rows: list[dict[str, ValueProto] | None] = []
    for lo in range(0, len(ids), 500):
        part = ids[lo:lo + 500]
        if SqliteRowReader.supports(store):
            rows += SqliteRowReader(store).read(view, "user_id", part, names)
        else:
            keys = [EntityKeyProto(join_keys=["user_id"], entity_values=[ValueProto(int64_val=i)]) for i in part]
            rows += [values for _, values in online_read(store, view, keys, names)]
    sizes, full = [], []
    for values in rows:
        if not values:
            continue
        size = sum(v.ByteSize() for v in values.values())
        sizes.append(size)
        hist = values.get("hist_item_ids")
        if hist is not None and len(hist.int64_list_val.val) == n:
            full.append(size)
    return {"user_row_bytes": float(np.mean(full)) if full else float("nan"),
            "user_row_bytes_mean": float(np.mean(sizes)) if sizes else float("nan"),
            "user_rows_measured": len(sizes), "user_rows_full": len(full)}
