"""Titles and query texts drawn from an item's facet word groups.

A title names most facets in a fixed, readable order ("pale crimson linen boho summer dress"). A
query paraphrases the same groups: it keeps a subset, re-draws every synonym, shuffles the order,
sometimes swaps one facet for a wrong group and adds words that carry no meaning ("cheap", "gift").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mmads.datagen.vocab import CATEGORIES, FACETS, QUERY_NOISE, TITLE_FILLERS, TITLE_KEEP, TITLE_ORDER

_FACET_BY_NAME = {f.name: f for f in FACETS}
QUERY_KEEP = 0.6
QUERY_CATEGORY_KEEP = 0.85
QUERY_WRONG_FACET = 0.1


def _pick(words: tuple[str, ...], rng: np.random.Generator) -> str:
    return words[int(rng.integers(len(words)))]


def make_title(category: int, groups: Mapping[str, int], rng: np.random.Generator) -> str:
    """An item title.

    Args:
        category: the category index.
        groups: facet name -> word-group index for this item.
        rng: the random generator.

    Returns:
        The title, lower case, words separated by single spaces.
    """
    words = [_pick(_FACET_BY_NAME[name].groups[groups[name]], rng)
             for name in TITLE_ORDER if rng.random() < TITLE_KEEP[name]]
    words.append(_pick(CATEGORIES[category], rng))
    if rng.random() < 0.2:
        words.insert(0, _pick(TITLE_FILLERS, rng))
    return " ".join(words)


def make_query(category: int, groups: Mapping[str, int], rng: np.random.Generator) -> str:
    """A search query that paraphrases an item's facets with other words.

    Args:
        category: the purchased item's category index.
        groups: facet name -> word-group index (drawn from a latent near the item's).
        rng: the random generator.

    Returns:
        The query text; it always holds at least two meaningful words.
    """
    names = [f.name for f in FACETS]
    keep = [n for n in names if rng.random() < QUERY_KEEP]
    if len(keep) < 2:
        keep = list(rng.choice(names, size=2, replace=False))
    words = []
    for name in keep:
        facet = _FACET_BY_NAME[name]
        group = groups[name]
        if rng.random() < QUERY_WRONG_FACET:
            group = int(rng.integers(len(facet.groups)))
        words.append(_pick(facet.groups[group], rng))
    rng.shuffle(words)
    if rng.random() < QUERY_CATEGORY_KEEP:
        words.append(_pick(CATEGORIES[category], rng))
    for _ in range(int(rng.integers(0, 3))):
        words.insert(int(rng.integers(len(words) + 1)), _pick(QUERY_NOISE, rng))
    return " ".join(words)
