"""Helpers for tests (importable as ``tests.support``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from infra.config import MmadsConfig, load_config
from infra.processes import free_port


def make_config(state_dir: Path, **overrides: object) -> MmadsConfig:
    """A config with an isolated state dir and free ports, ignoring the caller's MMADS_* variables."""
    base = load_config(env={})
    changes: dict[str, object] = {
        "state_dir": state_dir,
        "kafka": {"port": free_port(), "partitions": 4},
        "milvus": {"port": free_port()},
        "serving": {"port": free_port()},
        "streaming": {"metrics_port": 0},  # each job process picks a free port (recorded in its stats file)
    }
    for key, value in overrides.items():  # a section given by the caller keeps the defaults above it does not name
        default = changes.get(key)
        changes[key] = {**default, **value} if isinstance(default, dict) and isinstance(value, dict) else value
    return base.with_overrides(**changes)


class OnlineReplay:
    """Behaviors folded by the shared history step and written to the online store, in time order.

    ``advance(t)`` applies every behavior stamped strictly before ``t`` (the point-in-time rule), so
    the online row of a user is then the state a request at ``t`` reads.
    """

    def __init__(self, store: Any, behaviors: pd.DataFrame, n: int) -> None:
        self.store, self.n = store, n
        self.behaviors = behaviors.sort_values("ts", kind="stable").reset_index(drop=True)
        self.states: dict[int, Any] = {}
        self._next = 0

    def advance(self, t: pd.Timestamp) -> None:
        """Fold and write online every behavior before ``t`` not applied yet."""
        from feature_repo.history import BehaviorEvent, HistoryState, from_us, step, to_us
        from feature_repo.store import write_online_users

        beh, pending = self.behaviors, []
        while self._next < len(beh) and beh.ts[self._next] < t:
            e = beh.iloc[self._next]
            self.states[e.user_id], snap = step(self.states.get(e.user_id, HistoryState.empty(self.n)),
                                                BehaviorEvent(e.user_id, e.item_id, e.action, to_us(e.ts)))
            pending.append({"user_id": snap.user_id, "hist_item_ids": list(snap.hist_item_ids),
                            "hist_ts": list(snap.hist_ts),
                            "last_event_ts": from_us(snap.last_event_us),
                            "event_timestamp": from_us(snap.event_us)})
            self._next += 1
        if pending:
            write_online_users(self.store, pd.DataFrame(pending))


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH: the status and the body (an error status too, not raised)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
