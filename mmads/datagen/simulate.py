"""Users and their events: sessions, behaviors (click/cart/purchase) and ad impressions with clicks.

Two passes. :func:`plan_sessions` fixes when every session and impression happens (so the time cut is
known before any item is created); :func:`simulate_events` then walks each user's sessions in time
order: browse items near a (slowly drifting) interest, then see ads drawn from near, popular, recent
and random items. An ad is clicked with probability

    sigmoid(b0 + alpha * attn_cos(ad, recent behaviors) + beta * quality + gamma * activity
            - delta * position + noise)

where ``attn_cos`` is a softmax-attention average of the cosine between the ad's latent and the
latents of the user's last behaviors *before* the impression. Ad clicks are not written back as
behaviors, so no behavior shares an impression's timestamp and no label leaks into the history.

That cosine is taken on *click latents*: the latent with the functional dimensions (material,
style, use) scaled by ``ClickModel.functional_weight``, so what the ad's picture shows (colour,
tone, pattern, size, shape; ``vocab.APPEARANCE_DIMS``) drives clicks more than what the item is
for. Searches (and so the SCL pairs) read every facet alike: the similarity that predicts a click
is not the one the SCL encoder was trained for, and a CTR model has to learn it from clicks. With
``functional_weight = 1`` the plain cosine drives clicks, a fixed function of the SCL geometry
that a histogram of similarities (SimTier) already summarises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from infra.errors import DatasetError
from mmads.datagen.latent import World, unit
from mmads.datagen.vocab import APPEARANCE_DIMS, LATENT_DIM

US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S
ACTIONS = ("click", "cart", "purchase")


@dataclass(frozen=True)
class ClickModel:
    """Coefficients of the click probability (see the module docstring).

    Raises:
        DatasetError: ``functional_weight`` is negative (or NaN).
    """

    bias: float = -4.8
    alpha: float = 4.0
    beta: float = 0.7
    gamma: float = 0.3
    position: float = 0.12
    noise: float = 0.5
    attention_sharpness: float = 4.0
    history_len: int = 30
    functional_weight: float = 0.2

    def __post_init__(self) -> None:
        if not self.functional_weight >= 0:
            raise DatasetError(f"functional_weight must be >= 0, got {self.functional_weight}")

    def click_latents(self, latents: np.ndarray) -> np.ndarray:
        """Unit click latents (N, D): the non-appearance dimensions scaled by ``functional_weight``."""
        weights = np.full(latents.shape[1], self.functional_weight)
        weights[list(APPEARANCE_DIMS)] = 1.0
        return unit(latents * weights)


@dataclass(frozen=True)
class Sessions:
    """When users are active, fixed before any item exists.

    Attributes:
        user: user index per session, shape (S,), sorted by user then time.
        ts: session start in microseconds since the epoch, shape (S,).
        n_browse: behaviors browsed per session, shape (S,).
        imp_offsets: per session, impression times relative to the start (microseconds).
        activity: per-user activity multiplier, shape (U,), mean about 1.
    """

    user: np.ndarray
    ts: np.ndarray
    n_browse: np.ndarray
    imp_offsets: list[np.ndarray]
    activity: np.ndarray

    def impression_ts(self) -> np.ndarray:
        """All impression timestamps (microseconds), shape (I,)."""
        if not self.imp_offsets:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([t + off for t, off in zip(self.ts, self.imp_offsets, strict=True)])


def plan_sessions(rng: np.random.Generator, n_users: int, start_us: int, days: int,
                  sessions_per_day: float = 0.22, ads_per_session: float = 3.2) -> Sessions:
    """Draw per-user activity and every session's time, browse count and impression times."""
    activity = rng.lognormal(0.0, 0.6, size=n_users)
    activity /= activity.mean()
    counts = rng.poisson(sessions_per_day * days * activity)
    user = np.repeat(np.arange(n_users), counts)
    day = rng.integers(0, days, size=len(user))
    second = rng.integers(7 * 3600, 23 * 3600, size=len(user))
    ts = start_us + day * US_PER_DAY + second * US_PER_S + rng.integers(0, US_PER_S, size=len(user))
    order = np.lexsort((ts, user))
    user, ts = user[order], ts[order]
    n_browse = 1 + rng.poisson(0.9, size=len(user))
    n_ads = 1 + rng.poisson(ads_per_session, size=len(user))
    imp_offsets = [(10 + 30 * np.arange(n)) * US_PER_S + rng.integers(0, 10 * US_PER_S, size=n)
                   for n in n_ads]
    return Sessions(user=user, ts=ts, n_browse=n_browse, imp_offsets=imp_offsets, activity=activity)


@dataclass(frozen=True)
class Users:
    """Users' hidden interests.

    Attributes:
        interests: per user, interest points per day, shape (K_u, days, D).
        weights: per user, how often each interest leads a session, shape (K_u,).
        categories: per user, the category each interest started from, shape (K_u,).
    """

    interests: list[np.ndarray]
    weights: list[np.ndarray]
    categories: list[np.ndarray]


def make_users(rng: np.random.Generator, world: World, n_users: int, days: int,
               drift: float = 0.06) -> Users:
    """Draw 1-3 interest points per user near random sub-styles, drifting slowly day by day."""
    interests, weights, cats = [], [], []
    for _ in range(n_users):
        k = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        cat = rng.choice(world.n_categories, size=k, p=world.category_weights)
        sub = rng.integers(0, world.n_substyles, size=k)
        start = world.point(cat, sub, rng, noise=0.5)
        steps = rng.normal(0.0, drift, size=(k, days, LATENT_DIM))
        steps[:, 0] = 0.0
        interests.append(start[:, None, :] + steps.cumsum(axis=1))
        weights.append(rng.dirichlet(np.full(k, 2.0)))
        cats.append(cat)
    return Users(interests=interests, weights=weights, categories=cats)


@dataclass(frozen=True)
class Catalogue:
    """Items in creation order (index i is item id i + 1).

    Attributes:
        latents: shape (N, D).
        unit: the latents scaled to unit length, shape (N, D).
        quality: ID-level click effect, shape (N,).
        pop_cum: cumulative popularity weights exp(0.8 * quality) * popularity, shape (N,).
        created_us: creation time, ascending, shape (N,).
    """

    latents: np.ndarray
    unit: np.ndarray
    quality: np.ndarray
    pop_cum: np.ndarray
    created_us: np.ndarray

    @classmethod
    def build(cls, latents: np.ndarray, quality: np.ndarray, created_us: np.ndarray,
              popularity: np.ndarray | None = None) -> Catalogue:
        """A catalogue from latents (N, D), quality (N,) and ascending creation times (N,).

        ``popularity`` (N,) multiplies the quality-driven ad popularity.
        """
        weights = np.exp(0.8 * quality) * (1.0 if popularity is None else popularity)
        return cls(latents=latents, unit=unit(latents), quality=quality,
                   pop_cum=np.cumsum(weights), created_us=created_us)

    def available(self, ts: int) -> int:
        """How many items exist at ``ts`` (they are the prefix ``[0, k)``)."""
        return int(np.searchsorted(self.created_us, ts, side="right"))


@dataclass(frozen=True)
class Events:
    """Generated events; item columns are catalogue indices, times are microseconds.

    Attributes:
        behaviors: columns user, item, action (index into ACTIONS), ts; shape (B, 4) int64.
        impressions: columns user, item, clicked, ts; shape (I, 4) int64.
    """

    behaviors: np.ndarray
    impressions: np.ndarray


AD_SOURCE_P = np.array([0.35, 0.25, 0.25, 0.15])  # near, popular, recent, random
RECENT_DAYS = 5
BROWSE_SHARPNESS = 8.0
AD_SHARPNESS = 5.0


def _gumbel_top(rng: np.random.Generator, logits: np.ndarray, n: int, top: int) -> np.ndarray:
    """``n`` distinct indices drawn by softmax(logits) without replacement, among the ``top`` largest.

    Gumbel top-k: adding Gumbel noise and keeping the n largest samples without replacement.
    """
    cand = np.argpartition(-logits, top)[:top] if len(logits) > top else np.arange(len(logits))
    noisy = logits[cand] - np.log(-np.log(rng.random(len(cand))))
    n = min(n, len(cand))
    return cand[np.argpartition(-noisy, n - 1)[:n]] if n > 0 else cand[:0]


def _softmax_draws(rng: np.random.Generator, logits: np.ndarray, n: int, top: int) -> np.ndarray:
    """``n`` indices drawn by softmax(logits) with replacement, among the ``top`` largest."""
    cand = np.argpartition(-logits, top)[:top] if len(logits) > top else np.arange(len(logits))
    cum = np.cumsum(np.exp(logits[cand] - logits[cand].max()))
    return cand[np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(cand) - 1)]


def _behaviors(rng: np.random.Generator, items: np.ndarray, t0: int) -> list[tuple[int, int, int]]:
    """(item, action, ts) for browsed items: every one clicked, some carted, fewer purchased."""
    out = []
    for i, item in enumerate(items.tolist()):
        ts = t0 + i * 40 * US_PER_S + int(rng.integers(0, 20 * US_PER_S))
        out.append((item, 0, ts))
        carted = rng.random() < 0.15
        if carted:
            ts += int(rng.integers(5, 60)) * US_PER_S
            out.append((item, 1, ts))
        if rng.random() < (0.45 if carted else 0.02):
            out.append((item, 2, ts + int(rng.integers(5, 120)) * US_PER_S))
    return out


def _pick_ads(rng: np.random.Generator, cat: Catalogue, k: int, near_scores: np.ndarray,
              ts: np.ndarray) -> np.ndarray:
    """One ad per impression time: near the session's interest, popular, recent or random."""
    n = len(ts)
    source = np.searchsorted(np.cumsum(AD_SOURCE_P), rng.random(n) * AD_SOURCE_P.sum(), side="right")
    near = _softmax_draws(rng, AD_SHARPNESS * near_scores, n, top=100)
    popular = np.minimum(np.searchsorted(cat.pop_cum[:k], rng.random(n) * cat.pop_cum[k - 1], side="right"),
                         k - 1)
    lo = np.searchsorted(cat.created_us, ts - RECENT_DAYS * US_PER_DAY)
    lo = np.where(lo >= k, 0, lo)
    recent = lo + (rng.random(n) * (k - lo)).astype(np.int64)
    uniform = (rng.random(n) * k).astype(np.int64)
    return np.choose(np.minimum(source, 3), [near, popular, recent, uniform])


def _similarity(click_unit: np.ndarray, ads: np.ndarray, ad_ts: np.ndarray, hist_items: np.ndarray,
                hist_ts: np.ndarray, model: ClickModel) -> np.ndarray:
    """Per ad, the softmax-attention average cosine to the user's last behaviors before its time.

    Args:
        click_unit: the catalogue's click latents (:meth:`ClickModel.click_latents`), shape (N, D).
        ads: catalogue indices of the ads, shape (A,).
        ad_ts: their times, shape (A,).
        hist_items: the user's behavior items in time order, shape (H,).
        hist_ts: their times, ascending, shape (H,).
        model: the click model (history length, attention sharpness).

    Returns:
        Shape (A,); 0 for an ad shown before the user's first behavior.
    """
    out = np.zeros(len(ads))
    if len(hist_items) == 0:
        return out
    hist_items, hist_ts = hist_items[-(model.history_len + 64):], hist_ts[-(model.history_len + 64):]
    cos = click_unit[hist_items] @ click_unit[ads].T  # (H, A)
    n_before = np.searchsorted(hist_ts, ad_ts, side="left")  # history is in time order
    for j, n in enumerate(n_before.tolist()):
        c = cos[max(0, n - model.history_len):n, j]
        if len(c):
            w = np.exp(model.attention_sharpness * c)
            out[j] = float((w * c).sum() / w.sum())
    return out


def _user_events(rng: np.random.Generator, cat: Catalogue, sessions: Sessions, users: Users,
                 u: int, idxs: np.ndarray, start_us: int, model: ClickModel, act_z: float,
                 click_unit: np.ndarray) -> tuple[list[tuple[int, int, int]], list[np.ndarray]]:
    """One user's behaviors (item, action, ts) in time order and impression blocks (A, 3) per session."""
    behaviors: list[tuple[int, int, int]] = []
    impressions: list[np.ndarray] = []
    interests, weights = users.interests[u], users.weights[u]
    cum_w = np.cumsum(weights)
    for s in idxs.tolist():
        t0 = int(sessions.ts[s])
        k = cat.available(t0)
        day = min((t0 - start_us) // US_PER_DAY, interests.shape[1] - 1)
        which = min(int(np.searchsorted(cum_w, rng.random() * cum_w[-1], side="right")), len(weights) - 1)
        scores = cat.unit[:k] @ unit(interests[which, day])
        browsed = _gumbel_top(rng, BROWSE_SHARPNESS * scores + 0.25 * cat.quality[:k],
                              int(sessions.n_browse[s]), top=40)
        behaviors.extend(sorted(_behaviors(rng, browsed, t0), key=lambda b: b[2]))
        ad_ts = t0 + sessions.imp_offsets[s]
        ads = _pick_ads(rng, cat, k, scores, ad_ts)
        hist = np.array(behaviors, dtype=np.int64).reshape(-1, 3)
        order = np.argsort(hist[:, 2], kind="stable")
        sim = _similarity(click_unit, ads, ad_ts, hist[order, 0], hist[order, 2], model)
        logit = (model.bias + model.alpha * sim + model.beta * cat.quality[ads] + model.gamma * act_z
                 - model.position * np.arange(len(ads)) + model.noise * rng.normal(size=len(ads)))
        clicked = (rng.random(len(ads)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
        impressions.append(np.stack([ads, clicked, ad_ts], axis=1))
    return behaviors, impressions


def simulate_events(rng: np.random.Generator, cat: Catalogue, sessions: Sessions, users: Users,
                    start_us: int, model: ClickModel | None = None, progress: bool = True) -> Events:
    """Walk every user's sessions in time order and emit behaviors and impressions.

    Args:
        rng: the random generator.
        cat: the item catalogue (creation order).
        sessions: the session plan from :func:`plan_sessions`.
        users: hidden interests from :func:`make_users`.
        start_us: the first day's midnight (microseconds since the epoch).
        model: click-probability coefficients (default :class:`ClickModel`).
        progress: show a progress bar over users.

    Returns:
        The events, sorted by time (ties by user, then item).
    """
    model = model or ClickModel()
    log_act = np.log(sessions.activity)
    act_z = (log_act - log_act.mean()) / max(float(log_act.std()), 1e-9)
    starts = np.searchsorted(sessions.user, np.arange(len(sessions.activity) + 1))
    click_unit = model.click_latents(cat.latents)
    beh_rows: list[tuple[int, int, int, int]] = []
    imp_blocks: list[np.ndarray] = []
    for u in tqdm(range(len(sessions.activity)), desc="simulating users", unit="user",
                  disable=not progress, leave=False):
        idxs = np.arange(starts[u], starts[u + 1])
        beh, imp = _user_events(rng, cat, sessions, users, u, idxs, start_us, model, float(act_z[u]),
                                click_unit)
        beh_rows.extend((u, item, action, ts) for item, action, ts in beh)
        imp_blocks.extend(np.column_stack([np.full(len(b), u), b]) for b in imp)
    behaviors = np.array(beh_rows, dtype=np.int64).reshape(-1, 4)
    impressions = np.concatenate(imp_blocks) if imp_blocks else np.zeros((0, 4), dtype=np.int64)
    return Events(behaviors=_sorted(behaviors), impressions=_sorted(impressions))


def _sorted(arr: np.ndarray) -> np.ndarray:
    """Rows (user, item, x, ts) sorted by ts, then user, then item, then x."""
    return arr[np.lexsort((arr[:, 2], arr[:, 1], arr[:, 0], arr[:, 3]))]
