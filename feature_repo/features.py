"""Feast feature views: ``item_embeddings`` (the item's SCL vector) and ``user_behavior`` (history)."""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float32, Float64, Int64, String, UnixTimestamp

from feature_repo import entities
from feature_repo.data_sources import item_embeddings_push, side_source, user_behavior_push
from feature_repo.schema import ITEM_VIEW, SIDE_VIEWS, USER_VIEW
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
    """``user_behavior`` (the lean row): last N item ids (newest first), their behavior times (µs), last event time.

    The history vectors are not stored: readers gather them from ``item_embeddings`` by id.
    """
    return FeatureView(
        name=USER_VIEW,
        entities=[entities.user],
        ttl=timedelta(days=cfg.feast.user_ttl_days),
        schema=[
            Field(name="hist_item_ids", dtype=Array(Int64), tags={"max_len": str(cfg.model.history_len)}),
            Field(name="hist_ts", dtype=Array(Int64), tags={"unit": "us"}),
            Field(name="last_event_ts", dtype=UnixTimestamp),
        ],
        source=user_behavior_push(cfg),
        online=True,
    )


def side_views(cfg: MmadsConfig) -> list[FeatureView]:
    """``item_side`` / ``user_side``: one field per configured side feature (none when there are none).

    Categoricals are ``String``, numerics ``Float64``; the user view has no TTL (static attributes).
    """
    views = []
    for source, name in SIDE_VIEWS.items():
        specs = [s for s in cfg.data.side_features or () if s.source == source]
        if not specs:
            continue
        views.append(FeatureView(
            name=name,
            entities=[entities.item if source == "items" else entities.user],
            ttl=timedelta(days=cfg.feast.item_ttl_days) if source == "items" else timedelta(0),
            schema=[Field(name=s.name, dtype=String if s.kind == "categorical" else Float64,
                          tags={"kind": s.kind}) for s in specs],
            source=side_source(cfg, name),
            online=True,
        ))
    return views
