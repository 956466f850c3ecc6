"""Feast feature services: ``ctr_training`` and ``ctr_serving`` name the same features."""

from __future__ import annotations

from collections.abc import Sequence

from feast import FeatureService, FeatureView, OnDemandFeatureView

from feature_repo.schema import SERVING_SERVICE, TRAINING_SERVICE


def ctr_services(
    items: FeatureView, users: FeatureView, simtier: OnDemandFeatureView, sides: Sequence[FeatureView] = ()
) -> list[FeatureService]:
    """Both CTR services: target item vector, category, created_at, history ids, SimTier, side features."""
    features = [items[["emb", "category", "created_at"]], users[["hist_item_ids", "last_event_ts"]], simtier,
                *sides]
    return [
        FeatureService(name=TRAINING_SERVICE, features=list(features), description="CTR training set."),
        FeatureService(name=SERVING_SERVICE, features=list(features), description="CTR ranking requests."),
    ]
