"""The streaming benchmark's steady backlog: the log's events first, then copies for new users."""

import pandas as pd

from benchmarks.bench_streaming import COPY_USER_OFFSET, steady_backlog


def test_steady_backlog_repeats_the_log_for_new_users():
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(range(5), unit="s")
    log = pd.DataFrame({"user_id": [1, 2, 1, 3, 2], "item_id": [7, 8, 9, 7, 8], "action": "click", "ts": ts})
    out = steady_backlog(log, 12)
    assert len(out) == 12
    pd.testing.assert_frame_equal(out.iloc[:5].reset_index(drop=True), log)  # the log itself first
    assert out["item_id"].tolist() == [7, 8, 9, 7, 8] * 2 + [7, 8]  # same items: all indexed
    assert out["user_id"].iloc[5:10].tolist() == [u + COPY_USER_OFFSET for u in log["user_id"]]
    assert set(out["user_id"].iloc[10:]) <= {u + 2 * COPY_USER_OFFSET for u in log["user_id"]}
    assert len(steady_backlog(log, 3)) == 3
