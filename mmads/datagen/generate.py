"""``generate_dataset``: the synthetic marketplace, written in the dataset-directory format.

Order of work: the world (categories, sub-styles), the session plan (so the 80th-percentile time cut
of impressions is known), the items (about 20% created after the cut), titles, users and their
events, queries, images; then the four parquet files and the truth side files under ``_truth/``.
One seed drives one generator in a fixed order; each image has its own generator seeded from
(seed, kind, index), so the same seed gives the same tables with or without images.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from infra.dataset import time_cut
from infra.errors import DatasetError
from mmads.datagen import tables
from mmads.datagen.images import render_image, save_png
from mmads.datagen.latent import World, make_world, sample_facet_groups
from mmads.datagen.queries import Queries, make_queries
from mmads.datagen.regimes import REGIMES, Regime
from mmads.datagen.simulate import (
    ACTIONS,
    US_PER_DAY,
    US_PER_S,
    Catalogue,
    ClickModel,
    Events,
    Sessions,
    Users,
    make_users,
    plan_sessions,
    simulate_events,
)
from mmads.datagen.text import make_title
from mmads.datagen.vocab import CATEGORIES

logger = logging.getLogger(__name__)

START = pd.Timestamp("2024-03-01", tz="UTC")
DAYS = 45
NEW_ITEM_SHARE = 0.2
CATALOGUE_DAYS = 90  # items existing before the first day were created within this many days


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`generate_dataset` wrote.

    Attributes:
        items, users, behaviors, impressions, queries: row counts.
        cut_time: the 80th percentile of impression ``ts`` (the default train/test cut).
        new_item_share: share of items created after the cut.
        new_item_test_impression_share: share of test impressions (after the cut) that show new items.
        ctr: share of impressions clicked.
        seconds: wall time of the generation.
    """

    items: int
    users: int
    behaviors: int
    impressions: int
    queries: int
    cut_time: pd.Timestamp
    new_item_share: float
    new_item_test_impression_share: float
    ctr: float
    seconds: float


@dataclass(frozen=True)
class _Items:
    """Items in creation order; ``substyle`` is global (category * S + local sub-style)."""

    category: np.ndarray
    substyle: np.ndarray
    catalogue: Catalogue
    titles: list[str]


def _make_items(rng: np.random.Generator, world: World, n: int, start_us: int, cut_us: int,
                end_us: int) -> _Items:
    """Items in creation order: ~80% before the cut (most before the first day), ~20% after it."""
    n_new = int(round(NEW_ITEM_SHARE * n))
    n_pre = int(round(0.65 * (n - n_new)))
    created = np.sort(np.concatenate([
        rng.integers(start_us - CATALOGUE_DAYS * US_PER_DAY, start_us, size=n_pre),
        rng.integers(start_us, cut_us, size=n - n_new - n_pre),
        rng.integers(cut_us + US_PER_S, end_us - US_PER_DAY, size=n_new),
    ]))
    category = rng.choice(world.n_categories, size=n, p=world.category_weights)
    substyle = rng.integers(0, world.n_substyles, size=n)
    latents = world.point(category, substyle, rng)
    quality = rng.normal(0.0, 1.0, size=n)
    groups = sample_facet_groups(latents, rng)
    titles = [make_title(int(category[i]), {f: int(g[i]) for f, g in groups.items()}, rng) for i in range(n)]
    return _Items(category=category, substyle=category * world.n_substyles + substyle,
                  catalogue=Catalogue.build(latents, quality, created), titles=titles)


def _ts(us: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(us, dtype=np.int64), unit="us", utc=True)


def _render_images(out: Path, items: _Items, queries: Queries, seed: int, size: int,
                   progress: bool) -> tuple[list[str], list[str | None]]:
    """Write item and query PNGs; return their paths relative to ``out`` (None: no query image)."""
    item_paths = [f"{tables.IMAGE_DIR}/items/{i + 1}.png" for i in range(len(items.titles))]
    query_paths: list[str | None] = [
        None if lat is None else f"{tables.IMAGE_DIR}/queries/{q}.png"
        for q, lat in enumerate(queries.image_latent)]
    total = len(item_paths) + sum(p is not None for p in query_paths)
    with tqdm(total=total, desc="rendering images", unit="img", disable=not progress, leave=False) as bar:
        for i, rel in enumerate(item_paths):
            rng = np.random.default_rng([seed, 0, i])
            save_png(render_image(items.catalogue.latents[i], int(items.category[i]), size, rng), out / rel)
            bar.update()
        for q, (rel_q, lat) in enumerate(zip(query_paths, queries.image_latent, strict=True)):
            if rel_q is None or lat is None:
                continue
            cat = int(items.category[int(queries.item[q])])
            save_png(render_image(lat, cat, size, np.random.default_rng([seed, 1, q])), out / rel_q)
            bar.update()
    return item_paths, query_paths


def _write_dataset(out: Path, items: _Items, events: Events, queries: Queries,
                   item_paths: list[str | None], query_paths: list[str | None]) -> None:
    cat = items.catalogue
    ids = np.arange(1, len(items.titles) + 1, dtype=np.int64)
    names = [CATEGORIES[int(c)][0] for c in items.category]
    tables.write(out, "items.parquet", {"item_id": ids, "title": items.titles, "category": names,
                                        "image_path": item_paths, "created_at": _ts(cat.created_us)},
                 tables.ITEMS)
    beh, imp = events.behaviors, events.impressions
    tables.write(out, "behaviors.parquet", {"user_id": beh[:, 0] + 1, "item_id": beh[:, 1] + 1,
                                            "action": [ACTIONS[a] for a in beh[:, 2]], "ts": _ts(beh[:, 3])},
                 tables.BEHAVIORS)
    tables.write(out, "impressions.parquet", {"user_id": imp[:, 0] + 1, "item_id": imp[:, 1] + 1,
                                              "clicked": imp[:, 2].astype(np.int8), "ts": _ts(imp[:, 3])},
                 tables.IMPRESSIONS)
    tables.write(out, "queries.parquet", {
        "query_text": queries.text, "query_image_path": query_paths, "item_id": queries.item + 1,
        "ts": _ts(queries.ts), "clicked_item_ids": [[i + 1 for i in c] for c in queries.clicked]},
        tables.QUERIES)


def _write_truth(out: Path, items: _Items, users: Users, sessions: Sessions, click_model: ClickModel) -> None:
    tables.write(out, f"{tables.TRUTH_DIR}/items_truth.parquet", {
        "item_id": np.arange(1, len(items.titles) + 1, dtype=np.int64),
        "latent": list(items.catalogue.latents.astype(np.float32)),
        "category": [CATEGORIES[int(c)][0] for c in items.category],
        "substyle": items.substyle,
        "quality": items.catalogue.quality.astype(np.float32)}, tables.ITEMS_TRUTH)
    tables.write(out, f"{tables.TRUTH_DIR}/users_truth.parquet", {
        "user_id": np.arange(1, len(users.weights) + 1, dtype=np.int64),
        "activity": sessions.activity.astype(np.float32),
        "interests": [[row.astype(np.float32) for row in x[:, 0]] for x in users.interests],
        "interest_weights": [w.astype(np.float32) for w in users.weights],
        "interest_categories": [[CATEGORIES[int(c)][0] for c in cs] for cs in users.categories]},
        tables.USERS_TRUTH)
    (out / tables.TRUTH_DIR / "click_model.json").write_text(json.dumps(asdict(click_model), indent=2) + "\n")


def _long_tail(seed: int, regime: Regime, items: _Items) -> _Items:
    """The regime's log-normal ad popularity factor, from a generator of its own.

    Drawn apart from the main stream so that a regime without it draws exactly what it always did.
    """
    if not regime.popularity_sigma:
        return items
    side = np.random.default_rng([seed, 7])
    popularity = np.exp(regime.popularity_sigma * side.normal(size=len(items.titles)))
    cat = items.catalogue
    return replace(items, catalogue=Catalogue.build(cat.latents, cat.quality, cat.created_us, popularity=popularity))


def _summary(items: _Items, events: Events, queries: Queries, n_users: int, cut: pd.Timestamp,
             seconds: float) -> GenerationSummary:
    cut_us = cut.value // 1000
    imp = events.impressions
    new = items.catalogue.created_us > cut_us
    test = imp[imp[:, 3] > cut_us]
    return GenerationSummary(
        items=len(items.titles), users=n_users, behaviors=len(events.behaviors), impressions=len(imp),
        queries=len(queries.item), cut_time=cut, new_item_share=float(new.mean()),
        new_item_test_impression_share=float(new[test[:, 1]].mean()) if len(test) else 0.0,
        ctr=float(imp[:, 2].mean()) if len(imp) else 0.0, seconds=seconds)


GENERATION_FILE = f"{tables.TRUTH_DIR}/generation.json"  # the arguments a dataset was generated with


def generation_params(out: Path) -> dict[str, Any] | None:
    """The ``seed``, ``scale``, ``image_size``, ``images`` and ``regime`` a dataset was generated with.

    None when the dataset does not record them.
    """
    path = Path(out) / GENERATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def generate_dataset(out: Path, *, seed: int = 0, scale: float = 1.0, image_size: int = 64,
                     images: bool = True, progress: bool = True,
                     click_model: ClickModel | None = None, regime: str = "default") -> GenerationSummary:
    """Generate the synthetic marketplace into a dataset directory.

    Args:
        out: the dataset directory (created; earlier generated files in it are replaced).
        seed: the random seed; the same seed gives the same tables.
        scale: multiplies items, users and so events (1.0: the regime's sizes; 4,000 items and 2,000
            users in the default regime).
        image_size: width and height of the PNGs in pixels.
        images: write images; False writes a text-only dataset (all image paths null).
        progress: show progress bars.
        click_model: the click-probability coefficients (default :class:`ClickModel`); only the
            ``clicked`` labels depend on it. Recorded in ``_truth/click_model.json``. Its
            content and quality weights are the regime's when the model is not given.
        regime: the world's regime (:data:`mmads.datagen.regimes.REGIMES`): ``default`` or
            ``production``. Recorded in ``_truth/regime.json``.

    Returns:
        Counts, the time cut and the new-item shares.

    Raises:
        DatasetError: ``scale`` or ``image_size`` is out of range, or the regime is unknown.
    """
    if not scale > 0 or image_size < 8:
        raise DatasetError(f"scale must be > 0 and image_size >= 8, got scale={scale}, image_size={image_size}")
    if regime not in REGIMES:
        raise DatasetError(f"unknown regime '{regime}'; choose from {sorted(REGIMES)}")
    world_regime = REGIMES[regime]
    click_model = click_model or world_regime.click_model()
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables.clear_outputs(out)
    rng = np.random.default_rng(seed)
    n_items, n_users = max(60, round(world_regime.items * scale)), max(30, round(world_regime.users * scale))
    start_us = START.value // 1000
    end_us = start_us + DAYS * US_PER_DAY
    world = make_world(rng)
    sessions = plan_sessions(rng, n_users, start_us, DAYS, sessions_per_day=world_regime.sessions_per_day,
                             ads_per_session=world_regime.ads_per_session)
    cut = time_cut(pd.DataFrame({"ts": _ts(sessions.impression_ts())}), 0.8)
    items = _make_items(rng, world, n_items, start_us, cut.value // 1000, end_us)
    users = make_users(rng, world, n_users, DAYS)
    items = _long_tail(seed, world_regime, items)
    events = simulate_events(rng, items.catalogue, sessions, users, start_us, model=click_model,
                             progress=progress)
    purchases = events.behaviors[events.behaviors[:, 2] == ACTIONS.index("purchase")][:, [1, 3]]
    queries = make_queries(rng, items.catalogue, items.category, purchases, end_us)
    item_paths: list[str | None] = [None] * n_items
    query_paths: list[str | None] = [None] * len(queries.item)
    if images:
        rendered, query_paths = _render_images(out, items, queries, seed, image_size, progress)
        item_paths = list(rendered)
    _write_dataset(out, items, events, queries, item_paths, query_paths)
    _write_truth(out, items, users, sessions, click_model)
    (out / tables.TRUTH_DIR / "regime.json").write_text(json.dumps(asdict(world_regime), indent=2) + "\n")
    params = {"seed": seed, "scale": scale, "image_size": image_size, "images": images, "regime": regime}
    (out / GENERATION_FILE).write_text(json.dumps(params, indent=2) + "\n")
    summary = _summary(items, events, queries, n_users, cut, time.perf_counter() - t0)
    logger.info("generated %s: %s", out, summary)
    return summary
