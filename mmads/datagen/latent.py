"""The hidden latent space of the synthetic marketplace: categories, sub-styles, items, facets.

An item's latent is its category centre plus a sub-style offset plus noise. Facets (colour,
material, ...) read fixed subspaces of the latent; :func:`sample_facet_groups` turns latents into
word groups with a softmax, so strong directions are named reliably and weak ones noisily.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from mmads.datagen.vocab import CATEGORIES, FACETS, LATENT_DIM, Facet

CENTRE_SCALE = 1.0
SUBSTYLE_SCALE = 0.6
ITEM_NOISE = 0.45
FACET_SHARPNESS = 3.0


@dataclass(frozen=True)
class World:
    """The fixed structure every item and user is drawn from.

    Attributes:
        centres: category centres, shape (C, D).
        substyles: sub-style offsets, shape (C, S, D).
        category_weights: how often each category occurs among items, shape (C,), sums to 1.
    """

    centres: np.ndarray
    substyles: np.ndarray
    category_weights: np.ndarray

    @property
    def n_categories(self) -> int:
        """Number of categories C."""
        return int(self.centres.shape[0])

    @property
    def n_substyles(self) -> int:
        """Sub-styles per category S."""
        return int(self.substyles.shape[1])

    def point(self, category: np.ndarray, substyle: np.ndarray, rng: np.random.Generator,
              noise: float = ITEM_NOISE) -> np.ndarray:
        """Latents for (category, sub-style) pairs plus Gaussian noise.

        Args:
            category: category indices, shape (N,).
            substyle: sub-style indices within the category, shape (N,).
            rng: the random generator.
            noise: standard deviation of the per-point noise.

        Returns:
            Latents, shape (N, D), float64.
        """
        base = self.centres[category] + self.substyles[category, substyle]
        return base + rng.normal(0.0, noise, size=base.shape)


def make_world(rng: np.random.Generator, n_substyles: int = 5) -> World:
    """Draw category centres, sub-style offsets and category popularity."""
    n_cat = len(CATEGORIES)
    centres = rng.normal(0.0, CENTRE_SCALE, size=(n_cat, LATENT_DIM))
    substyles = rng.normal(0.0, SUBSTYLE_SCALE, size=(n_cat, n_substyles, LATENT_DIM))
    weights = rng.dirichlet(np.full(n_cat, 3.0))
    return World(centres=centres, substyles=substyles, category_weights=weights)


def prototypes(facet: Facet) -> np.ndarray:
    """Unit prototype directions of a facet's word groups in its subspace.

    Returns:
        Shape (G, len(facet.dims)): 1-d facets put their groups on [-1, 1]; 2-d facets on equal
        angles of the circle (group j at angle 2*pi*j/G); 3-d facets on the cube's corners.
    """
    n_groups, n_dims = len(facet.groups), len(facet.dims)
    if n_dims == 1:
        return np.linspace(-1.0, 1.0, n_groups)[:, None]
    if n_dims == 2:
        angles = 2 * np.pi * np.arange(n_groups) / n_groups
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=n_dims)))[:n_groups]
    return corners / np.linalg.norm(corners, axis=1, keepdims=True)


def sample_facet_groups(latents: np.ndarray, rng: np.random.Generator,
                        sharpness: float = FACET_SHARPNESS) -> dict[str, np.ndarray]:
    """Pick one word group per facet for each latent, by softmax over prototype alignment.

    Args:
        latents: shape (N, D).
        rng: the random generator.
        sharpness: the softmax inverse temperature (higher: the nearest group more often).

    Returns:
        facet name -> group indices, shape (N,).
    """
    out: dict[str, np.ndarray] = {}
    for facet in FACETS:
        logits = sharpness * latents[:, list(facet.dims)] @ prototypes(facet).T  # (N, G)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        u = rng.random(len(latents))[:, None]
        out[facet.name] = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), len(facet.groups) - 1)
    return out


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
