import numpy as np
import pandas as pd
import pytest

from feature_repo.history import (
    BehaviorEvent,
    HistoryState,
    ItemVectors,
    from_us,
    gather,
    gather_rows,
    history_snapshots,
    ragged,
    step,
    to_us,
)
from infra.errors import FeatureError

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _ev(item, minutes, user=1, action="click"):
    return BehaviorEvent(user, item, action, to_us(T0 + pd.Timedelta(minutes=minutes)))


def test_step_newest_first_repeat_moves_to_front_and_cap():
    s = HistoryState.empty(3)
    for i, item in enumerate([10, 11, 12]):
        s, snap = step(s, _ev(item, i))
    assert s.item_ids == (12, 11, 10)
    s, snap = step(s, _ev(10, 5, action="purchase"))  # repeat: moves to front, no duplicate
    assert s.item_ids == (10, 12, 11)
    s, snap = step(s, _ev(13, 6, action="cart"))  # cap 3: oldest (11) drops out
    assert snap.hist_item_ids == (13, 10, 12)
    assert snap.event_us == to_us(T0 + pd.Timedelta(minutes=6)) == s.last_event_us
    assert from_us(snap.event_us) == T0 + pd.Timedelta(minutes=6)


def test_step_keeps_each_items_latest_behavior_time():
    s = HistoryState.empty(3)
    for i, item in enumerate([10, 11, 12]):
        s, snap = step(s, _ev(item, i))
    s, snap = step(s, _ev(10, 5))  # the repeated item takes the new time, the others keep theirs
    minute = 60_000_000
    assert snap.hist_ts == s.item_ts == tuple(to_us(T0) + m * minute for m in (5, 2, 1))
    s, snap = step(s, _ev(13, 6))  # cap: the oldest item's time drops out with it
    assert snap.hist_item_ids == (13, 10, 12)
    assert snap.hist_ts == tuple(to_us(T0) + m * minute for m in (6, 5, 2))


def test_step_late_event_never_moves_snapshot_time_back():
    s, _ = step(HistoryState.empty(5), _ev(1, 10))
    s, snap = step(s, _ev(2, 3))
    assert snap.hist_item_ids == (2, 1)
    assert snap.event_us == to_us(T0 + pd.Timedelta(minutes=10))


def test_empty_state_rejects_bad_cap():
    with pytest.raises(FeatureError, match="n must be >= 1"):
        HistoryState.empty(0)


def test_history_snapshots_runs_the_same_step_sorted():
    beh = pd.DataFrame({
        "user_id": [1, 2, 1, 1],
        "item_id": [5, 6, 7, 5],
        "action": ["click", "cart", "click", "purchase"],
        "ts": [T0 + pd.Timedelta(minutes=m) for m in (3, 1, 2, 4)],
    })
    snaps = history_snapshots(beh, n=2)
    assert list(snaps.columns) == ["user_id", "hist_item_ids", "hist_ts", "last_event_ts", "event_timestamp"]
    assert snaps["user_id"].tolist() == [2, 1, 1, 1]
    assert [list(h) for h in snaps["hist_item_ids"]] == [[6], [7], [5, 7], [5, 7]]
    assert snaps["event_timestamp"].is_monotonic_increasing
    assert str(snaps["event_timestamp"].dtype) == "datetime64[ns, UTC]"


def test_history_snapshots_missing_column():
    with pytest.raises(FeatureError, match="lacks columns"):
        history_snapshots(pd.DataFrame({"user_id": [1]}), n=2)


def test_item_vectors_gather_and_flat():
    vec = ItemVectors([30, 10, 20], np.array([[3, 3], [1, 1], [2, 2]], np.float32))
    mats, lengths = vec.gather([[10, 99, 30], None, [20, 10, 30, 10]], n=3)
    assert mats.shape == (3, 3, 2)
    assert mats.dtype == np.float32
    assert lengths.tolist() == [3, 0, 3]
    np.testing.assert_array_equal(mats[0], [[1, 1], [0, 0], [3, 3]])  # unknown id 99 -> zeros
    assert not mats[1].any()
    np.testing.assert_array_equal(vec.flat([20, 5]), [2, 2, 0, 0])
    assert vec.contains(np.array([10, 11])).tolist() == [True, False]
    with pytest.raises(FeatureError, match="unique"):
        ItemVectors([1, 1], np.zeros((2, 2)))


def test_item_vectors_sparse_and_dense_lookup_agree():
    ids = np.array([5, 2, 9], np.int64)
    mat = np.arange(6, dtype=np.float32).reshape(3, 2)
    dense = ItemVectors(ids, mat)
    sparse = ItemVectors(ids + 10**12, mat)  # too large for the dense table
    query = np.array([2, 3, 9, -1, 5, 100])
    assert dense.rows(query).tolist() == sparse.rows(query + 10**12).tolist() == [1, 0, 3, 0, 2, 0]


def test_gather_is_gather_rows_over_the_table_and_skips_missing_items():
    vec = ItemVectors([30, 10, 20], np.array([[3, 3], [1, 1], [2, 2]], np.float32))
    flat, lengths = ragged([[10, 99, 30], [], [20, 10, 30, 10]])
    assert lengths.tolist() == [3, 0, 4]
    mats, cut = gather(flat, lengths, vec, 3)
    idx, cut2 = gather_rows(flat, lengths, vec, 3)
    np.testing.assert_array_equal(mats, vec.matrix[idx])
    assert cut.tolist() == cut2.tolist() == [3, 0, 3]
    np.testing.assert_array_equal(mats[0, 1], [0, 0])  # 99 has no vector: the zero row SimTier skips
    np.testing.assert_array_equal(mats[2], [[2, 2], [1, 1], [3, 3]])  # cut at n, newest first


def test_gather_over_a_requests_few_items_equals_gather_over_the_table():
    rng = np.random.default_rng(0)
    ids = np.arange(1000, 3000, 7, dtype=np.int64)
    table = ItemVectors(ids, rng.normal(size=(len(ids), 4)).astype(np.float32))
    hist = np.array([1007, 5, 2993, 1000], np.int64)  # 5 is not an item
    known = hist[table.contains(hist)]
    small = ItemVectors(known, table.matrix[table.rows(known)], dense_ids=0)  # what serving builds
    a, _ = gather(hist, np.array([4]), table, 50)
    b, _ = gather(hist, np.array([4]), small, 50)
    np.testing.assert_array_equal(a, b)
