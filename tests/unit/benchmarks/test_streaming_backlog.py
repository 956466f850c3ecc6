"""The streaming benchmark's steady backlog: the log's events first, then copies for new users."""

from typing import Any

import numpy as np
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


def test_scale_out_rate_counts_only_the_window_where_every_process_writes(tmp_path):
    from types import SimpleNamespace

    from benchmarks.bench_streaming import MIN_WINDOW_S, _steady_rate
    from infra.config import load_config
    from streaming.stats import freshness_dir

    cfg = load_config(env={}).with_overrides(state_dir=tmp_path)
    folder = freshness_dir(cfg)
    folder.mkdir(parents=True)
    # process 1 writes 100 rows/s from 1 s to 21 s; process 2 writes 100 rows/s from 5 s to 15 s
    rows = {101: [(k, 1000, 1000 + 10 * k) for k in range(2001)],
            102: [(k, 1000, 5000 + 10 * k) for k in range(1001)]}
    for pid, lines in rows.items():
        (folder / f"behaviors-{pid}.csv").write_text("".join(f"{a},{b},{c}\n" for a, b, c in lines))
    jobs: list[Any] = [SimpleNamespace(proc=SimpleNamespace(pid=pid)) for pid in rows]
    rate, skew, window = _steady_rate(cfg, jobs, since_ms=0)
    assert skew == 4.0 and window == 10.0  # from process 2's first write (5 s) to its last (15 s)
    assert rate == 2000 / 10.0  # both at 100 rows/s in the window; process 1's lone start is out
    assert _steady_rate(cfg, jobs[:1], since_ms=0)[0] == 2000 / 20.0  # one process: first to last write
    late = [(k, 1000, 18_500 + k) for k in range(3)]  # a process that wrote for 2 ms only
    (folder / "behaviors-103.csv").write_text("".join(f"{a},{b},{c}\n" for a, b, c in late))
    short = _steady_rate(cfg, jobs[:1] + [SimpleNamespace(proc=SimpleNamespace(pid=103))], since_ms=0)
    assert np.isnan(short[0]) and short[2] < MIN_WINDOW_S  # too short a window is no rate
