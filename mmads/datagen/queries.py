"""Query pairs for SCL: (query text, optional query image latent, purchased item, near misses).

Each purchase yields one to four queries issued minutes before it; a further share of queries is
not tied to any behavior (a popular item looked up at a random time). The text paraphrases the
item's facets from a latent *near* the item's (noise), the optional image renders another nearby
latent, and ``clicked`` lists 0-3 near misses: existing items of the same category closest to the
purchased one, clicked but not bought.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmads.datagen.latent import sample_facet_groups
from mmads.datagen.simulate import US_PER_S, Catalogue
from mmads.datagen.text import make_query

QUERY_LATENT_NOISE = 0.25
IMAGE_LATENT_NOISE = 0.3
IMAGE_SHARE = 0.3
UNTIED_SHARE = 0.25
NEAR_MISS_POOL = 8
NEAR_MISS_P = np.array([0.25, 0.35, 0.25, 0.15])


@dataclass(frozen=True)
class Queries:
    """Generated queries, sorted by time.

    Attributes:
        text: query texts, length Q.
        item: purchased item (catalogue index), shape (Q,).
        ts: microseconds since the epoch, shape (Q,).
        clicked: near-miss catalogue indices per query, length Q.
        image_latent: per query a latent to render (shape (D,)) or None.
    """

    text: list[str]
    item: np.ndarray
    ts: np.ndarray
    clicked: list[list[int]]
    image_latent: list[np.ndarray | None]


def _anchors(rng: np.random.Generator, cat: Catalogue, purchases: np.ndarray,
             end_us: int) -> tuple[np.ndarray, np.ndarray]:
    """(item, ts) of every query: several per purchase, plus queries tied to no behavior."""
    repeat = 1 + rng.binomial(3, 0.5, size=len(purchases))
    item = np.repeat(purchases[:, 0], repeat)
    ts = np.repeat(purchases[:, 1], repeat) - rng.integers(30, 1200, size=len(item)) * US_PER_S
    n_untied = int(round(UNTIED_SHARE * len(item)))
    free = np.searchsorted(cat.pop_cum, rng.random(n_untied) * cat.pop_cum[-1], side="right")
    lo = cat.created_us[free]
    free_ts = lo + (rng.random(n_untied) * np.maximum(end_us - lo, 1)).astype(np.int64)
    item = np.concatenate([item, free])
    ts = np.maximum(np.concatenate([ts, free_ts]), cat.created_us[item] + US_PER_S)
    order = np.lexsort((item, ts))
    return item[order], ts[order]


def _near_misses(rng: np.random.Generator, cat: Catalogue, category: np.ndarray, item: int,
                 ts: int) -> list[int]:
    n = int(rng.choice(len(NEAR_MISS_P), p=NEAR_MISS_P))
    if n == 0:
        return []
    k = cat.available(ts)
    pool = np.flatnonzero(category[:k] == category[item])
    pool = pool[pool != item]
    if len(pool) == 0:
        return []
    sims = cat.unit[pool] @ cat.unit[item]
    best = pool[np.argsort(-sims, kind="stable")[:NEAR_MISS_POOL]]
    return sorted(int(i) for i in rng.choice(best, size=min(n, len(best)), replace=False))


def make_queries(rng: np.random.Generator, cat: Catalogue, category: np.ndarray,
                 purchases: np.ndarray, end_us: int) -> Queries:
    """Build the query set.

    Args:
        rng: the random generator.
        cat: the catalogue.
        category: category index per catalogue item, shape (N,).
        purchases: rows (item, ts) of purchase behaviors, shape (P, 2).
        end_us: the end of the simulated period (microseconds).

    Returns:
        The queries, sorted by time.
    """
    item, ts = _anchors(rng, cat, purchases, end_us)
    noisy = cat.latents[item] + rng.normal(0.0, QUERY_LATENT_NOISE, size=(len(item), cat.latents.shape[1]))
    groups = sample_facet_groups(noisy, rng)
    text = [make_query(int(category[i]), {f: int(g[q]) for f, g in groups.items()}, rng)
            for q, i in enumerate(item.tolist())]
    clicked = [_near_misses(rng, cat, category, int(i), int(t)) for i, t in zip(item, ts, strict=True)]
    with_image = rng.random(len(item)) < IMAGE_SHARE
    jitter = rng.normal(0.0, IMAGE_LATENT_NOISE, size=(len(item), cat.latents.shape[1]))
    image_latent = [cat.latents[i] + jitter[q] if with_image[q] else None
                    for q, i in enumerate(item.tolist())]
    return Queries(text=text, item=item, ts=ts, clicked=clicked, image_latent=image_latent)
