"""One point-in-time rule on every path, on a log with same-second ties (real Feast, SQLite + duckdb).

Real logs stamp to the second: a click behavior shares its impression's timestamp, and a user's
events of one second land in different micro-batches of the behavior job. A history as of t holds
only behaviors strictly before t, and among snapshots of equal time the one written last wins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feature_repo.history import BehaviorEvent, HistoryState, lookup_time, step, to_us
from feature_repo.online import OnlineFeatureReader
from feature_repo.schema import USER_VIEW
from feature_repo.simtier import SIMTIER_COLUMNS
from feature_repo.store import append_offline, apply_repo, write_online_items
from infra.config import MmadsConfig, load_config
from tests.support import OnlineReplay
from training.training_set import build_training_set, check_parity, materialize_from_dataset

pytestmark = pytest.mark.integration

T0 = pd.Timestamp("1998-03-01 10:00:00", tz="UTC")  # a real log's era: any representable time is valid
DIM, N, TIERS = 8, 6, 4
N_ITEMS, N_USERS = 40, 12


def _cfg(state_dir: Path) -> MmadsConfig:
    return load_config().with_overrides(
        state_dir=str(state_dir), model={"dim": DIM, "history_len": N, "n_tiers": TIERS})


def _tied_log(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Second-resolution events: every clicked impression has a click behavior at the same second."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": np.arange(1, N_ITEMS + 1, dtype=np.int64),
                          "category": [f"c{i % 4}" for i in range(N_ITEMS)],
                          "created_at": [T0 - pd.Timedelta(days=1)] * N_ITEMS})
    vectors = pd.DataFrame({"item_id": items["item_id"],
                            "emb": list(rng.normal(size=(N_ITEMS, DIM)).astype(np.float32))})
    n = 300
    secs = np.sort(rng.integers(0, 4 * 3600, size=n))
    impressions = pd.DataFrame({
        "user_id": rng.integers(1, N_USERS + 1, size=n).astype(np.int64),
        "item_id": rng.integers(1, N_ITEMS + 1, size=n).astype(np.int64),
        "clicked": (rng.random(n) < 0.4).astype(np.int8),
        "ts": T0 + pd.to_timedelta(secs, unit="s"),
    })
    clicks = impressions[impressions["clicked"] == 1]
    browse = pd.DataFrame({  # other behaviors, some in the very same seconds
        "user_id": rng.integers(1, N_USERS + 1, size=200).astype(np.int64),
        "item_id": rng.integers(1, N_ITEMS + 1, size=200).astype(np.int64),
        "ts": T0 + pd.to_timedelta(rng.choice(secs, size=200), unit="s"),
    })
    behaviors = pd.concat([clicks[["user_id", "item_id", "ts"]], browse], ignore_index=True)
    behaviors["action"] = "click"
    return {"items": items, "vectors": vectors, "behaviors": behaviors, "impressions": impressions}


def _strict_history(behaviors: pd.DataFrame, user: int, t: pd.Timestamp) -> tuple[int, ...]:
    state = HistoryState.empty(N)
    mine = behaviors[(behaviors.user_id == user) & (behaviors.ts < t)].sort_values("ts", kind="stable")
    for r in mine.itertuples():
        state, _ = step(state, BehaviorEvent(r.user_id, r.item_id, r.action, to_us(r.ts)))
    return state.item_ids


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    data = _tied_log()
    cfg = _cfg(tmp_path_factory.mktemp("pit"))
    store = apply_repo(cfg)
    materialize_from_dataset(cfg, store, data["behaviors"], data["items"], data["vectors"])
    out = tmp_path_factory.mktemp("pit_ts") / "train.parquet"
    build_training_set(cfg, store, data["impressions"], out, chunk_rows=100, progress=False)
    return cfg, store, data, pq.read_table(out).to_pandas()


def test_lookup_time_is_the_microsecond_before():
    ts = pd.Series([pd.Timestamp("1970-01-01 00:00:01.0000019", tz="UTC"), pd.Timestamp("2200-01-01", tz="UTC")])
    got = lookup_time(ts)
    assert got.tolist() == [pd.Timestamp("1970-01-01 00:00:01.000000", tz="UTC"),
                            pd.Timestamp("2199-12-31 23:59:59.999999", tz="UTC")]


def test_no_label_reaches_its_own_history(built):
    _, _, data, df = built
    clicked = df[df["clicked"] == 1]
    assert len(clicked) > 50
    tied = data["behaviors"].merge(data["impressions"], on=["user_id", "item_id", "ts"])
    assert len(tied) >= len(clicked)  # every click shares its impression's second with a behavior
    own = [int(r.item_id) in set(r.hist_item_ids) for r in df.itertuples()]
    strict = [int(r.item_id) in _strict_history(data["behaviors"], r.user_id, r.ts) for r in df.itertuples()]
    assert own == strict  # the target is in the history only when the user acted on it earlier


def test_offline_history_is_the_strict_replay(built):
    _, _, data, df = built
    for r in df.itertuples():
        assert tuple(r.hist_item_ids) == _strict_history(data["behaviors"], r.user_id, r.ts), r
    assert df["ts"].tolist() == data["impressions"]["ts"].tolist()  # the rows keep their own time


def test_odfv_path_agrees_on_every_tied_row(built):
    cfg, store, data, _ = built
    result = check_parity(cfg, store, data["impressions"], sample=len(data["impressions"]))
    assert result.hist_mismatches == 0
    assert result.max_abs_diff <= 1e-6


def test_online_state_before_t_equals_offline_at_t(built):
    """Serving at t reads the state after every behavior before t: the offline row at t."""
    cfg, store, data, df = built
    items = data["vectors"].merge(data["items"], on="item_id")
    items["event_timestamp"] = items["created_at"]
    write_online_items(store, items)
    reader = OnlineFeatureReader(store, cfg)
    replay = OnlineReplay(store, data["behaviors"], N)
    checked = 0
    for row in df.sort_values("ts", kind="stable").iloc[::4].itertuples():
        replay.advance(row.ts)
        if int(row.user_id) not in replay.states:
            continue
        got = reader.read(int(row.user_id), [int(row.item_id)])
        assert tuple(got.hist_item_ids) == tuple(row.hist_item_ids)
        offline = np.array([getattr(row, c) for c in SIMTIER_COLUMNS(TIERS)], dtype=np.float64)
        np.testing.assert_allclose(got.simtier[0], offline, atol=1e-6)
        checked += 1
    assert checked > 20


def test_equal_time_snapshots_from_two_batches_resolve_to_the_later(tmp_path: Path):
    """Two micro-batches each write a snapshot of one user at the same second: the join takes the second."""
    cfg = _cfg(tmp_path)
    store = apply_repo(cfg)
    users = np.arange(1, 201, dtype=np.int64)
    s = T0 + pd.Timedelta(seconds=5)

    def part(hist: list[int]) -> pd.DataFrame:
        return pd.DataFrame({"user_id": users, "hist_item_ids": [hist] * len(users),
                             "hist_ts": [[0] * len(hist)] * len(users),
                             "last_event_ts": s, "event_timestamp": s})

    append_offline(cfg, USER_VIEW, part([7]))       # the first event of that second
    append_offline(cfg, USER_VIEW, part([8, 7]))    # the batch after it: both events applied
    imps = pd.DataFrame({"user_id": users, "item_id": np.ones(len(users), np.int64),
                         "clicked": np.zeros(len(users), np.int8), "ts": s + pd.Timedelta(seconds=1)})
    vectors = pd.DataFrame({"item_id": [1, 7, 8], "emb": list(np.eye(3, DIM, dtype=np.float32))})
    items = pd.DataFrame({"item_id": [1, 7, 8], "category": "c", "created_at": T0})
    materialize_from_dataset(cfg, store, pd.DataFrame(columns=["user_id", "item_id", "action", "ts"]),
                             items, vectors)
    out = tmp_path / "t.parquet"
    build_training_set(cfg, store, imps, out, progress=False)
    got = pq.read_table(out).to_pandas()["hist_item_ids"].map(tuple)
    assert (got == (8, 7)).all(), got.value_counts()
