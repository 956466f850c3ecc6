"""Feast feature views: ``item_embeddings`` (the item's SCL vector) and ``user_behavior`` (history)."""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String, UnixTimestamp

from feature_repo import entities
from feature_repo.data_sources import item_embeddings_push, user_behavior_push
from feature_repo.schema import ITEM_VIEW, USER_VIEW
from infra.config import MmadsConfig


def item_embeddings_view(cfg: MmadsConfig) -> FeatureView:
    """``item_embeddings``: ``emb`` Array(Float32) of length ``cfg.model.dim``, category, created_at."""
    return FeatureView(
        name=ITEM_VIEW,
        entities=[entities.item],
        ttl=timedelta(days=cfg.feast.item_ttl_days),
        schema=[
            Field(name="emb", dtype=Array(Float32), tags={"dim": str(cfg.model.dim)}),
            Field(name="category", dtype=String),
            Field(name="created_at", dtype=UnixTimestamp),
        ],
        source=item_embeddings_push(cfg),
        online=True,
    )


def user_behavior_view(cfg: MmadsConfig) -> FeatureView:
    """``user_behavior``: last N item ids (newest first), their vectors flattened, last event time."""
    return FeatureView(
        name=USER_VIEW,
        entities=[entities.user],
        ttl=timedelta(days=cfg.feast.user_ttl_days),
        schema=[
            Field(name="hist_item_ids", dtype=Array(Int64), tags={"max_len": str(cfg.model.history_len)}),
            Field(name="hist_emb_flat", dtype=Array(Float32)),
            Field(name="last_event_ts", dtype=UnixTimestamp),
        ],
        source=user_behavior_push(cfg),
        online=True,
    )
