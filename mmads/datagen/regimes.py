"""Regimes of the synthetic marketplace: the sizes and ID-level effects a world is generated with.

Two regimes, each fixed before any model result on it was seen (``docs/regimes.md`` gives the
reasoning):

* ``default``: a young marketplace. 4,000 items, 2,000 users, ~21 impressions per item; clicks are
  driven mostly by the similarity of the ad to the user's recent behaviors, which an ID model can
  hardly learn from so few impressions. The multimodal features carry most of the signal.
* ``production``: the regime of the paper's deployed model. Fewer items (500), more users (3,000)
  and ad slots, so an item gathers ~300 training impressions; a long-tailed ad popularity; and a
  hidden user-item taste (collaborative affinity: low-rank factors that no title or image shows) that
  only ID embeddings can learn, from enough clicks. The content-driven part of the click model is
  the default regime's, unchanged.

The default regime draws exactly the random numbers it always drew (same seed, same tables); the
production regime's extra draws come from generators of their own, seeded from the dataset seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.errors import DatasetError


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
        taste_dim: rank of the hidden user-item taste factors (0 = none).
        taste_weight: weight of the taste term ``<user_taste, item_taste>`` (unit variance) in the
            click logit.
    """

    name: str
    items: int
    users: int
    sessions_per_day: float
    ads_per_session: float
    popularity_sigma: float = 0.0
    taste_dim: int = 0
    taste_weight: float = 0.0


REGIMES: dict[str, Regime] = {
    "default": Regime("default", items=4000, users=2000, sessions_per_day=0.22, ads_per_session=3.2),
    "production": Regime("production", items=500, users=3000, sessions_per_day=0.22, ads_per_session=4.0,
                         popularity_sigma=1.0, taste_dim=8, taste_weight=1.0),
}


def get_regime(name: str) -> Regime:
    """The regime called ``name``.

    Raises:
        DatasetError: no regime has that name.
    """
    if name not in REGIMES:
        raise DatasetError(f"unknown regime '{name}'; choose from {sorted(REGIMES)}")
    return REGIMES[name]
