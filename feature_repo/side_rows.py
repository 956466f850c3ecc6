"""The rows of the side-feature views (``item_side`` / ``user_side``), one builder for every writer.

The main job materializes them from the dataset files; the item indexer writes the item rows of
items announced on Kafka (their side features travel as extra event fields, docs/events.md). Both
go through :func:`side_view_rows`, so a value is stored the same way whichever path wrote it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feature_repo.schema import TS_FIELD, USER_SIDE_TIME
from infra.config import MmadsConfig
from infra.side_features import configured, side_values


def side_view_rows(cfg: MmadsConfig, source: str, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The side-view rows of ``frame`` for the configured side features of ``source``.

    Item rows are stamped with the item's ``created_at`` (its attributes are known from then on),
    user rows with :data:`~feature_repo.schema.USER_SIDE_TIME` (static attributes). A configured
    feature missing from ``frame`` is stored as missing (null).

    Args:
        cfg: the configuration with a resolved ``data.side_features``.
        source: ``"items"`` or ``"users"``.
        frame: rows with the key (``item_id`` / ``user_id``), for items ``created_at``, and the
            side columns.

    Returns:
        key, one column per side feature (the stored form of :func:`~infra.side_features.side_values`)
        and ``event_timestamp``; None when no side feature of ``source`` is configured.
    """
    specs = configured(cfg, source)
    if not specs:
        return None
    missing = [s.name for s in specs if s.name not in frame.columns]
    full = frame.assign(**{name: None for name in missing}) if missing else frame
    key = "item_id" if source == "items" else "user_id"
    rows = side_values(specs, full)
    rows.insert(0, key, full[key].to_numpy(np.int64))
    rows[TS_FIELD] = pd.to_datetime(full["created_at"], utc=True) if source == "items" else USER_SIDE_TIME
    return rows.reset_index(drop=True)
