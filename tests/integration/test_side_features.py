"""Side features through real Feast (SQLite + duckdb): views, point-in-time training rows, serving parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from feature_repo.online import ItemRowCache, OnlineFeatureReader
from feature_repo.schema import ITEM_SIDE_VIEW, USER_SIDE_VIEW
from feature_repo.store import apply_repo
from infra.config import MmadsConfig
from infra.side_features import configured
from serving.features import FeatureFetcher, model_inputs
from tests.integration.test_feature_store import DIM, T0, TIERS, _cfg, make_dataset
from training.models.ctr import CTRModel, model_config
from training.models.inputs import IdVocab, ItemVectorLookup
from training.models.ranker import Ranker, save_model
from training.models.side import SideEncoder
from training.training_set import (
    build_training_set,
    materialize_from_dataset,
    materialize_side_features,
    training_set_schema,
)

pytestmark = pytest.mark.integration

SIDE = [
    {"name": "brand", "kind": "categorical", "source": "items"},
    {"name": "price", "kind": "numeric", "source": "items"},
    {"name": "city", "kind": "categorical", "source": "users"},
]
LATE_ITEM = 7  # created 5 h after T0: impressions before then see no brand or price
LATE = T0 + pd.Timedelta(hours=5)
NO_ATTRIBUTES_USER = 6  # absent from users.parquet


def side_dataset() -> dict[str, pd.DataFrame]:
    """The feature-store test dataset with item brand/price and a users table (user 6 missing)."""
    data = make_dataset()
    items = data["items"].copy()
    items["brand"] = [f"b{i % 4}" for i in items["item_id"]]
    items["price"] = items["item_id"].astype(float) * 1.5
    items.loc[items["item_id"] == 3, "price"] = np.nan
    items.loc[items["item_id"] == LATE_ITEM, "created_at"] = LATE
    data["items"] = items
    data["users"] = pd.DataFrame({"user_id": np.arange(1, 6, dtype=np.int64),
                                  "city": ["oslo", "rome", "oslo", "lima", "rome"]})
    return data


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return side_dataset()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, data):
    cfg = _cfg(tmp_path_factory.mktemp("side_fs")).with_overrides(data={"side_features": SIDE})
    store = apply_repo(cfg)
    materialize_from_dataset(cfg, store, data["behaviors"], data["items"], data["vectors"], online=True)
    written = materialize_side_features(cfg, store, data["items"], data["users"], online=True)
    assert written == {ITEM_SIDE_VIEW: 30, USER_SIDE_VIEW: 5}
    return cfg, store


def _expected(data: dict[str, pd.DataFrame], user: int, item: int, ts: pd.Timestamp) -> dict[str, object]:
    it = data["items"].set_index("item_id").loc[item]
    known = ts >= it["created_at"]
    cities = dict(zip(data["users"]["user_id"], data["users"]["city"], strict=True))
    price = it["price"] if known and np.isfinite(it["price"]) else None
    return {"brand": it["brand"] if known else None, "price": price, "city": cities.get(user)}


def test_training_rows_carry_side_features_as_of_the_impression(repo, data, tmp_path: Path) -> None:
    cfg, store = repo
    imps = data["impressions"].copy()
    extra = pd.DataFrame({"user_id": [1, 2], "item_id": [LATE_ITEM, LATE_ITEM], "clicked": [0, 1],
                          "ts": [LATE - pd.Timedelta(minutes=1), LATE + pd.Timedelta(minutes=1)]})
    imps = pd.concat([imps, extra.astype(imps.dtypes.to_dict())], ignore_index=True)
    build_training_set(cfg, store, imps, tmp_path / "t.parquet", progress=False)
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.schema.equals(training_set_schema(TIERS, configured(cfg)))
    df = table.to_pandas()
    for row in df.itertuples():
        want = _expected(data, row.user_id, row.item_id, row.ts)
        got = {"brand": row.brand, "price": None if pd.isna(row.price) else row.price, "city": row.city}
        assert got == want, (row.user_id, row.item_id, row.ts)
    late = df[df["item_id"] == LATE_ITEM]
    assert late["brand"].isna().any() and late["brand"].notna().any()  # the point-in-time check has teeth
    assert df.loc[df["user_id"] == NO_ATTRIBUTES_USER, "city"].isna().all()


def test_online_side_features_equal_the_offline_ones(repo, data) -> None:
    cfg, store = repo
    reader = OnlineFeatureReader(store, cfg)
    cached = OnlineFeatureReader(store, cfg, item_cache=ItemRowCache(ttl_s=60.0, max_items=100))
    items = list(range(1, 31))
    later = T0 + pd.Timedelta(days=1)
    for user in (1, 4, NO_ATTRIBUTES_USER):
        fast = reader.read(user, items).side
        odfv = reader.read_via_odfv(user, items).side
        from_cache = cached.read(user, items).side
        want = [_expected(data, user, i, later) for i in items]
        for name in ("brand", "price", "city"):
            assert fast[name] == [w[name] for w in want], name
            assert odfv[name] == fast[name], name
            assert from_cache[name] == fast[name], name
    assert cached.side_cache is not None and cached.side_cache.hits == 2 * len(items)  # users 2 and 3


def _ranker(cfg: MmadsConfig, frame: pd.DataFrame, out: Path) -> Ranker:
    side = SideEncoder.fit(frame, configured(cfg))
    vocab = IdVocab.fit(frame)
    mc = model_config("simtier", vocab, id_dim=4, mlp_hidden=(8,), n_tiers=TIERS, vec_dim=DIM, side=side)
    torch.manual_seed(0)
    model = CTRModel(mc)
    with torch.no_grad():  # side embeddings large enough to move the scores visibly
        for emb in model.side_emb:
            emb.weight.mul_(40.0)  # type: ignore[operator]
    save_model(model, vocab, out, name="simtier", n_tiers=TIERS, history_len=cfg.model.history_len, vec_dim=DIM,
               side=side)
    return Ranker.load(out)


def test_served_scores_equal_the_offline_model_with_side_features(repo, data, tmp_path: Path) -> None:
    cfg, store = repo
    end = data["impressions"]["ts"].max() + pd.Timedelta(hours=1)
    users, items = [1, 2, 4, NO_ATTRIBUTES_USER], list(range(1, 31))
    entity = pd.DataFrame({"user_id": np.repeat(users, len(items)).astype(np.int64),
                           "item_id": np.tile(items, len(users)).astype(np.int64), "clicked": np.int8(0), "ts": end})
    build_training_set(cfg, store, entity, tmp_path / "end.parquet", progress=False)
    offline = pd.read_parquet(tmp_path / "end.parquet")
    ranker = _ranker(cfg, offline, tmp_path / "model")
    lookup = ItemVectorLookup.from_frame(data["vectors"])
    fetcher = FeatureFetcher(cfg, OnlineFeatureReader(store, cfg))
    for user in users:
        rows = offline[offline["user_id"] == user]
        want = ranker.score(rows, lookup)
        features = fetcher.candidates(user, items)
        got = ranker.score_inputs(model_inputs(features, fetcher.history_of(features, user), ranker))
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    # the parity has teeth: without their side values the same rows score differently
    blank = ranker.score(offline.assign(brand=None, city=None), lookup)
    assert np.abs(blank - ranker.score(offline, lookup)).max() > 1e-3


def test_no_side_features_means_no_side_views(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path).with_overrides(data={"side_features": []})
    store = apply_repo(cfg)
    names = {v.name for v in store.list_feature_views()}
    assert names == {"item_embeddings", "user_behavior"}
    assert not (tmp_path / "feature_repo" / "offline" / ITEM_SIDE_VIEW).exists()
