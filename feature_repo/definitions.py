"""All Feast objects of the mmads feature repo, built from the configuration."""

from __future__ import annotations

from typing import Any

from feature_repo import entities
from feature_repo.features import item_embeddings_view, side_views, user_behavior_view
from feature_repo.on_demand import simtier_view
from feature_repo.services import ctr_services
from infra.config import MmadsConfig


def build_definitions(cfg: MmadsConfig) -> list[Any]:
    """Every Feast object to apply: entities, push sources, views, the ODFV and the services.

    Args:
        cfg: the configuration (paths under ``cfg.state_dir``, dim, n_tiers, TTLs).

    Returns:
        ``[user, item, item push source, user push source, item_embeddings, user_behavior,
        simtier, ctr_training, ctr_serving]``, with the side-feature views (``item_side``,
        ``user_side``) before the services when the config lists side features.
    """
    items = item_embeddings_view(cfg)
    users = user_behavior_view(cfg)
    odfv = simtier_view(cfg, items)
    sides = side_views(cfg)
    return [
        entities.user, entities.item, items.stream_source, users.stream_source,
        items, users, odfv, *sides, *ctr_services(items, users, odfv, sides),
    ]
