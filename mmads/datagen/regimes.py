"""Regimes of the synthetic marketplace: the sizes and ID-level strength a world is generated with.

Two regimes (``docs/regimes.md`` gives the reasoning, and how the production regime was fixed on the
validation slice before any test-period result was seen):

* ``default``: a young marketplace. 4,000 items, 2,000 users, ~21 impressions per item; clicks are
  driven mostly by the similarity of the ad to the user's recent behaviors, which an ID model can
  hardly learn from so few impressions. The multimodal features carry most of the signal.
* ``production``: the regime of the paper's deployed model. Fewer items (500), more users (3,000)
  and ad slots, so an item gathers ~300 training impressions; a long-tailed ad popularity; item-level
  click effects (what the ID embedding of an ad learns) spread as widely as its content relevance,
  so a well-fed ID model is strong and the multimodal features add a little, most on new ads.

The default regime draws exactly the random numbers it always drew (same seed, same tables); the
production regime's popularity factor comes from a generator of its own, seeded from the dataset seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from infra.errors import DatasetError
from mmads.datagen.simulate import ClickModel


@dataclass(frozen=True)
class Regime:
    """The size and ID-level knobs of a generated world.

    Attributes:
        name: the regime's name (``mmads data generate --regime NAME``).
        items: items at scale 1 (about 20% of them are created after the time cut).
        users: users at scale 1.
        sessions_per_day: mean sessions per user and day (times the user's activity).
        ads_per_session: mean ad impressions per session beyond the first.
        popularity_sigma: spread of a per-item log-normal popularity factor on top of
            ``exp(0.8 * quality)``; 0 = popularity from quality alone. Sets how long the tail of
            ad impressions per item is.
        content_weight: ``ClickModel.alpha``, the weight of the ad's similarity to the user's recent
            behaviors in the click logit.
        quality_weight: ``ClickModel.beta``, the weight of the item's hidden quality (an ID-level
            effect no title or image shows) in the click logit.
    """

    name: str
    items: int
    users: int
    sessions_per_day: float
    ads_per_session: float
    popularity_sigma: float = 0.0
    content_weight: float = ClickModel.alpha
    quality_weight: float = ClickModel.beta

    def click_model(self, **overrides: Any) -> ClickModel:
        """The regime's click model (``overrides`` set other coefficients, e.g. ``functional_weight``)."""
        return replace(ClickModel(alpha=self.content_weight, beta=self.quality_weight), **overrides)


REGIMES: dict[str, Regime] = {
    "default": Regime("default", items=4000, users=2000, sessions_per_day=0.22, ads_per_session=3.2),
    "production": Regime("production", items=500, users=3000, sessions_per_day=0.22, ads_per_session=4.0,
                         popularity_sigma=1.0, content_weight=1.5, quality_weight=1.5),
}


def get_regime(name: str) -> Regime:
    """The regime called ``name``.

    Raises:
        DatasetError: no regime has that name.
    """
    if name not in REGIMES:
        raise DatasetError(f"unknown regime '{name}'; choose from {sorted(REGIMES)}")
    return REGIMES[name]
