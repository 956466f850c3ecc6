"""The feature store against real Feast (SQLite + duckdb, and Redis): parity, leakage, training sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from feast.infra.online_stores.helpers import compute_table_id

from feature_repo.feast_internals import online_read
from feature_repo.history import BehaviorEvent, HistoryState, ItemVectors, step, to_us
from feature_repo.online import ItemRowCache, OnlineFeatureReader
from feature_repo.schema import ITEM_VIEW, USER_VIEW
from feature_repo.simtier import SIMTIER_COLUMNS, simtier
from feature_repo.sqlite_rows import SqliteRowWriter
from feature_repo.store import (
    apply_repo,
    open_store,
    to_arrow,
    write_online_items,
    write_online_rows,
)
from infra.config import MmadsConfig, load_config
from tests.support import OnlineReplay
from training.training_set import (
    build_training_set,
    check_parity,
    materialize_from_dataset,
    training_set_schema,
)

pytestmark = pytest.mark.integration

T0 = pd.Timestamp("2024-03-01", tz="UTC")
DIM, N, TIERS = 8, 5, 4
NO_VECTOR_ITEM = 30
NEW_USER = 6


def make_dataset(seed: int = 0) -> dict[str, pd.DataFrame]:
    """30 items (item 30 has no vector), 6 users (user 6 never behaves), 80 behaviors, 60 impressions."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({
        "item_id": np.arange(1, 31, dtype=np.int64),
        "category": [f"c{i % 3}" for i in range(30)],
        "created_at": [T0] * 30,
    })
    vec = rng.normal(size=(29, DIM)).astype(np.float32)
    vectors = pd.DataFrame({"item_id": np.arange(1, 30, dtype=np.int64), "emb": list(vec)})
    secs = np.sort(rng.choice(10 * 3600, size=80, replace=False)) + 60
    behaviors = pd.DataFrame({
        "user_id": rng.integers(1, 6, size=80).astype(np.int64),
        "item_id": rng.integers(1, 31, size=80).astype(np.int64),
        "action": rng.choice(["click", "cart", "purchase"], size=80),
        "ts": T0 + pd.to_timedelta(secs, unit="s"),
    })
    isecs = rng.choice(11 * 3600, size=60, replace=False) + 30
    impressions = pd.DataFrame({
        "user_id": rng.integers(1, 7, size=60).astype(np.int64),
        "item_id": rng.integers(1, 31, size=60).astype(np.int64),
        "clicked": rng.integers(0, 2, size=60).astype(np.int8),
        "ts": T0 + pd.to_timedelta(isecs, unit="s"),
    })
    impressions.loc[0, ["user_id", "item_id"]] = [NEW_USER, NO_VECTOR_ITEM]
    return {"items": items, "vectors": vectors, "behaviors": behaviors, "impressions": impressions}


def _cfg(state_dir: Path, **feast: object) -> MmadsConfig:
    return load_config().with_overrides(
        state_dir=str(state_dir), model={"dim": DIM, "history_len": N, "n_tiers": TIERS}, feast=feast
    )


def _history_at(behaviors: pd.DataFrame, user: int, t: pd.Timestamp) -> tuple[int, ...]:
    state = HistoryState.empty(N)
    for r in behaviors[(behaviors.user_id == user) & (behaviors.ts < t)].sort_values("ts").itertuples():
        state, _ = step(state, BehaviorEvent(r.user_id, r.item_id, r.action, to_us(r.ts)))
    return state.item_ids


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return make_dataset()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, data):
    cfg = _cfg(tmp_path_factory.mktemp("fs"))
    store = apply_repo(cfg)
    materialize_from_dataset(cfg, store, data["behaviors"], data["items"], data["vectors"])
    return cfg, store


@pytest.fixture(scope="module")
def training(repo, data, tmp_path_factory):
    cfg, store = repo
    out = tmp_path_factory.mktemp("ts") / "train.parquet"
    summary = build_training_set(cfg, store, data["impressions"], out, chunk_rows=25, progress=False)
    return summary, pq.read_table(out)


def test_open_store_after_apply(repo):
    cfg, _ = repo
    assert open_store(cfg).get_feature_service("ctr_serving").name == "ctr_serving"


def test_training_set_schema_and_all_rows_kept(training, data):
    summary, table = training
    assert table.schema.equals(training_set_schema(TIERS))
    assert summary.rows == table.num_rows == len(data["impressions"])
    df = table.to_pandas()
    assert df["user_id"].tolist() == data["impressions"]["user_id"].tolist()
    assert df["clicked"].tolist() == data["impressions"]["clicked"].tolist()
    first = df.iloc[0]  # new user x item without a vector: empty history, zeros, has_emb False
    assert list(first["hist_item_ids"]) == []
    assert not first["has_emb"]
    assert not np.asarray(first["item_emb"]).any()
    assert first[SIMTIER_COLUMNS(TIERS)].astype(float).abs().sum() == 0
    assert summary.rows_without_emb == int((data["impressions"]["item_id"] == NO_VECTOR_ITEM).sum())


def test_training_set_is_point_in_time(training, data):
    """Each row equals the history replayed up to its ts and SimTier over the true vectors."""
    _, table = training
    df = table.to_pandas()
    vec = ItemVectors(data["vectors"]["item_id"], np.stack(data["vectors"]["emb"]))
    for row in df.itertuples():
        hist = _history_at(data["behaviors"], row.user_id, row.ts)
        assert tuple(row.hist_item_ids) == hist
        target = vec.matrix[vec.rows(np.array([row.item_id]))]
        h, lens = vec.gather([list(hist)], N)
        expected = simtier(target, h, lens, TIERS)[0]
        got = np.array([getattr(row, c) for c in SIMTIER_COLUMNS(TIERS)], dtype=np.float64)
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert (df["hist_len"] > 0).sum() > 20  # the check above is not vacuous


def test_fast_path_equals_odfv_offline(repo, data):
    cfg, store = repo
    result = check_parity(cfg, store, data["impressions"], sample=60)
    assert result.rows == 60
    assert result.hist_mismatches == 0
    assert result.max_abs_diff <= 1e-6


def test_later_behavior_never_changes_features(tmp_path, data):
    cut = T0 + pd.Timedelta(hours=5)
    extra = pd.DataFrame({  # every user acts right after the cut on items near in id to many
        "user_id": np.arange(1, 7, dtype=np.int64), "item_id": np.arange(1, 7, dtype=np.int64),
        "action": "click", "ts": [cut + pd.Timedelta(microseconds=1)] * 6,
    })
    tables = []
    for name, beh in (("base", data["behaviors"]), ("more", pd.concat([data["behaviors"], extra]))):
        cfg = _cfg(tmp_path / name)
        store = apply_repo(cfg)
        materialize_from_dataset(cfg, store, beh, data["items"], data["vectors"])
        out = tmp_path / f"{name}.parquet"
        build_training_set(cfg, store, data["impressions"], out, progress=False)
        tables.append(pq.read_table(out).to_pandas())
    before = data["impressions"]["ts"] <= cut
    cols = ["hist_item_ids", *SIMTIER_COLUMNS(TIERS)]
    a, b = tables[0][cols].astype(str), tables[1][cols].astype(str)
    assert a[before.to_numpy()].equals(b[before.to_numpy()])
    assert not a[~before.to_numpy()].equals(b[~before.to_numpy()])  # the extra events do count later


def _write_items_online(store, data) -> None:
    """Every item's ``item_embeddings`` row, written online (as the indexer would)."""
    items = data["vectors"].merge(data["items"], on="item_id")
    items["event_timestamp"] = items["created_at"]
    write_online_items(store, items)


def _replay_and_compare(cfg: MmadsConfig, store, data, training_df: pd.DataFrame) -> float:
    """Stream behaviors through the step into the online store; at each impression, read online."""
    _write_items_online(store, data)
    reader = OnlineFeatureReader(store, cfg)
    replay = OnlineReplay(store, data["behaviors"], N)
    worst = 0.0
    order = training_df.sort_values("ts").index[::3]  # a sample of (user, item, t)
    for idx in order:
        row = training_df.loc[idx]
        replay.advance(row.ts)
        got = reader.read(int(row.user_id), [int(row.item_id)])
        if int(row.user_id) in replay.states:
            assert tuple(got.hist_item_ids) == tuple(row.hist_item_ids)
        offline = row[SIMTIER_COLUMNS(TIERS)].to_numpy(np.float64)
        worst = max(worst, float(np.abs(got.simtier[0] - offline).max()))
        assert bool(got.has_emb[0]) == bool(row.has_emb)
    return worst


def test_offline_equals_online_at_t(repo, data, training):
    cfg, store = repo
    worst = _replay_and_compare(cfg, store, data, training[1].to_pandas())
    assert worst <= 1e-6


def test_online_fast_path_equals_odfv(repo, data):
    cfg, store = repo
    reader = OnlineFeatureReader(store, cfg)
    candidates = [*range(1, 31), 999]  # 999: unknown item
    for user in (1, 2, 3, NEW_USER):
        fast = reader.read(user, candidates)
        odfv = reader.read_via_odfv(user, candidates)
        np.testing.assert_allclose(fast.simtier, odfv.simtier, atol=1e-9)
        np.testing.assert_array_equal(fast.item_emb, odfv.item_emb)
        np.testing.assert_array_equal(fast.hist_item_ids, odfv.hist_item_ids)
        assert fast.missing_item_ids == [NO_VECTOR_ITEM, 999]
        assert fast.category[:3] == ["c0", "c1", "c2"]
    assert reader.read(1, candidates).simtier[:, TIERS].max() > 0  # user 1 has a history online


def test_sqlite_row_reader_equals_feasts_online_read(repo, data):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    from feature_repo.sqlite_rows import SqliteRowReader

    cfg, store = repo
    _write_items_online(store, data)  # the rows it reads, whichever tests ran before
    OnlineReplay(store, data["behaviors"], N).advance(data["behaviors"]["ts"].max() + pd.Timedelta(seconds=1))
    assert SqliteRowReader.supports(store) and OnlineFeatureReader(store, cfg)._sqlite is not None
    rows = SqliteRowReader(store)
    odd_ids = [0, 5, -3, 2**62 + 11, 256]
    assert rows.keys("item_id", odd_ids) == [serialize_entity_key(
        EntityKeyProto(join_keys=["item_id"], entity_values=[ValueProto(int64_val=i)]),
        entity_key_serialization_version=cfg.feast.entity_key_serialization_version) for i in odd_ids]
    for view_name, key, ids, names in ((ITEM_VIEW, "item_id", [3, 999, 1, 3, NO_VECTOR_ITEM], ["emb", "category"]),
                                       (USER_VIEW, "user_id", [NEW_USER, 1, 2], ["hist_item_ids", "hist_ts"])):
        view = store.get_feature_view(view_name)
        protos = [EntityKeyProto(join_keys=[key], entity_values=[ValueProto(int64_val=i)]) for i in ids]
        theirs = online_read(store, view, protos, names)
        mine = rows.read(view, key, ids, names)
        assert len(mine) == len(ids)
        for (_, expected), got in zip(theirs, mine, strict=True):
            if expected is None:
                assert got is None
            else:  # Feast returns every feature of the view; the reader only the requested ones
                assert got is not None and set(got) == set(names)
                assert all(got[n] == expected[n] for n in names)
        assert any(m is None for m in mine) and any(m is not None for m in mine)
    assert rows.read(store.get_feature_view(ITEM_VIEW), "item_id", [], ["emb"]) == []


def test_fast_online_write_reads_back_like_feasts_own_write(repo):
    cfg, store = repo
    ts = pd.Timestamp("2024-03-01 12:34:56.789", tz="UTC")
    rng = np.random.default_rng(5)
    users = pd.DataFrame({
        "hist_item_ids": [[3, 1, 2], [], [7]],
        "hist_ts": [rng.integers(1_600_000_000_000_000, 1_700_000_000_000_000, 3).tolist(), [],
                    [1_700_000_000_000_001]],
        "last_event_ts": [ts, ts, ts - pd.Timedelta(seconds=1)], "event_timestamp": [ts, ts, ts],
    })
    items = pd.DataFrame({
        "emb": [rng.normal(size=DIM).astype(np.float32), np.ones(DIM, np.float32)],
        "category": ["c7", None], "created_at": [ts, ts], "event_timestamp": [ts, ts],
    })
    for view, key, frame, names in ((USER_VIEW, "user_id", users, ["hist_item_ids", "hist_ts", "last_event_ts"]),
                                    (ITEM_VIEW, "item_id", items, ["emb", "category", "created_at"])):
        feast_ids = list(range(900_000, 900_000 + len(frame)))
        fast_ids = list(range(910_000, 910_000 + len(frame)))
        feasts = to_arrow(view, frame.assign(**{key: feast_ids})).to_pandas().assign(created_ts=ts)
        store.write_to_online_store(view, feasts)  # Feast's write wants the created_timestamp_column
        write_online_rows(store, view, frame.assign(**{key: fast_ids}))
        refs = [f"{view}:{n}" for n in names]
        a = store.get_online_features(features=refs, entity_rows=[{key: i} for i in feast_ids]).to_dict()
        b = store.get_online_features(features=refs, entity_rows=[{key: i} for i in fast_ids]).to_dict()
        for name in names:
            assert a[name] == b[name], (view, name)
        assert a[names[0]][0] is not None  # the rows exist
        # and the stored SQLite rows are Feast's, column for column (SqliteRowWriter runs Feast's upsert)
        reader = SqliteRowWriter(store)
        table = store.get_feature_view(view)
        table_id = compute_table_id(store.config.project, table,
                                    store.config.registry.enable_online_feature_view_versioning)
        sql = f'SELECT feature_name, value, value_text, event_ts FROM "{table_id}" WHERE entity_key = ? ORDER BY 1'
        for fi, mi in zip(feast_ids, fast_ids, strict=True):
            theirs = reader._conn.execute(sql, reader.keys(key, [fi])).fetchall()
            mine = reader._conn.execute(sql, reader.keys(key, [mi])).fetchall()
            assert theirs == mine and len(mine) == len(table.features), (view, fi)


def test_fast_online_write_keeps_the_latest_row_per_entity(repo):
    cfg, store = repo
    ts = pd.Timestamp("2024-03-02", tz="UTC")
    later = ts + pd.Timedelta(seconds=1)
    users = pd.DataFrame({  # user 920,001: a later row first; user 920,002: two rows at one time
        "user_id": [920_001, 920_002, 920_001, 920_002],
        "hist_item_ids": [[2, 1], [5], [1], [6, 5]], "hist_ts": [[20, 10], [50], [10], [60, 50]],
        "last_event_ts": [later, ts, ts, ts], "event_timestamp": [later, ts, ts, ts],
    })
    write_online_rows(store, USER_VIEW, users)
    got = store.get_online_features(features=["user_behavior:hist_item_ids"],
                                    entity_rows=[{"user_id": 920_001}, {"user_id": 920_002}]).to_dict()
    assert got["hist_item_ids"] == [[2, 1], [6, 5]]  # the latest event time wins; a tie goes to the later row


def test_item_cache_serves_the_same_rows_and_expires(repo, data):
    cfg, store = repo
    _write_items_online(store, data)  # the test must not depend on another having written them
    plain = OnlineFeatureReader(store, cfg)
    now = [0.0]
    cache = ItemRowCache(ttl_s=30.0, max_items=10, clock=lambda: now[0])
    cached = OnlineFeatureReader(store, cfg, item_cache=cache)
    candidates = [*range(1, 9), NO_VECTOR_ITEM, 999]
    for _ in range(2):  # the first pass fills the cache, the second is served from it
        a, b = plain.read(NEW_USER, candidates), cached.read(NEW_USER, candidates)
        np.testing.assert_array_equal(a.simtier, b.simtier)
        np.testing.assert_array_equal(a.item_emb, b.item_emb)
        assert a.category == b.category and a.item_created_at == b.item_created_at
        assert b.missing_item_ids == [NO_VECTOR_ITEM, 999]
    assert len(cache) == 8  # rows without a vector are never cached: they are read again next time
    assert (cache.hits, cache.misses) == (8, 10 + 2)
    cached.read_items(list(range(11, 16)))  # 13 rows > max_items: the oldest go first
    assert len(cache) == 10 and cache.get([1])[0] == [None] and cache.get([15])[0][0] is not None

    # a re-indexed item keeps its cached vector until the TTL has passed, then the new one is read
    original = data["vectors"].merge(data["items"], on="item_id").query("item_id == 15").copy()
    original["event_timestamp"] = pd.Timestamp.now(tz="UTC")
    changed = original.assign(emb=[np.ones(DIM, np.float32)])
    write_online_items(store, changed)
    try:
        np.testing.assert_array_equal(cached.read_items([15])["emb"][0], original["emb"].iloc[0])
        now[0] += 31.0  # the TTL has passed
        np.testing.assert_array_equal(cached.read_items([15])["emb"][0], np.ones(DIM, np.float32))
    finally:
        write_online_items(store, original.assign(event_timestamp=pd.Timestamp.now(tz="UTC")))


def test_history_items_come_through_the_item_cache_in_the_candidates_read(repo, data):
    cfg, store = repo
    _write_items_online(store, data)
    plain = OnlineFeatureReader(store, cfg)
    cache = ItemRowCache(ttl_s=30.0, max_items=1000, clock=lambda: 0.0)
    cached = OnlineFeatureReader(store, cfg, item_cache=cache)
    OnlineReplay(store, data["behaviors"], N).advance(data["behaviors"]["ts"].max() + pd.Timedelta(seconds=1))
    user = next(u for u in (1, 2, 3) if len(plain.read_user(u).item_ids) > 1)
    hist = plain.read_user(user).item_ids.tolist()
    candidates = [hist[0], NO_VECTOR_ITEM, *[i for i in range(1, 6) if i not in hist]]
    reads: list[list[int]] = []
    original = cached._online_read

    def counting(view, join_key, ids, names):  # records the store reads, changes nothing
        reads.append(list(ids)) if view == ITEM_VIEW else None
        return original(view, join_key, ids, names)

    cached._online_read = counting  # type: ignore[method-assign]
    a, b = plain.read(user, candidates), cached.read(user, candidates)
    assert len(reads) == 1 and set(reads[0]) == set(candidates) | set(hist)  # ONE batched read, each id once
    np.testing.assert_array_equal(a.simtier, b.simtier)
    np.testing.assert_array_equal(a.hist_emb, b.hist_emb)
    vec = ItemVectors(data["vectors"]["item_id"], np.stack(data["vectors"]["emb"]))
    np.testing.assert_array_equal(b.hist_emb, vec.gather([hist], N)[0][0, : len(hist)])  # the offline gather
    reads.clear()
    cached.read(user, candidates)
    assert reads == [[NO_VECTOR_ITEM]]  # everything else is cached; the item without a vector is read again


@pytest.mark.cluster
def test_redis_online_store_round_trip(tmp_path, data, redis_conn):
    cfg = _cfg(tmp_path, online_store="redis", redis_connection_string=redis_conn)
    store = apply_repo(cfg)
    materialize_from_dataset(cfg, store, data["behaviors"], data["items"], data["vectors"], online=True)
    reader = OnlineFeatureReader(store, cfg)
    vec = ItemVectors(data["vectors"]["item_id"], np.stack(data["vectors"]["emb"]))
    end = data["behaviors"]["ts"].max() + pd.Timedelta(microseconds=1)  # the state after every behavior
    for user in (1, 2):
        hist = _history_at(data["behaviors"], user, end)
        got = reader.read(user, [1, 2, NO_VECTOR_ITEM])
        assert tuple(got.hist_item_ids) == hist
        np.testing.assert_array_equal(got.item_emb[:2], np.stack(data["vectors"]["emb"][:2]))
        h, lens = vec.gather([list(hist)], N)
        expected = simtier(got.item_emb, h[0], lens[0], TIERS)
        np.testing.assert_allclose(got.simtier, expected, atol=1e-9)
        np.testing.assert_allclose(reader.read_via_odfv(user, [1, 2, NO_VECTOR_ITEM]).simtier, got.simtier)


def _feast_cli(repo: Path, *args: str) -> str:
    """Run the ``feast`` CLI of this interpreter on ``repo``; returns its output (fails on a non-zero exit)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([str(Path(sys.executable).with_name("feast")), "-c", str(repo), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_rendered_repo_is_one_the_feast_cli_can_own(repo):
    cfg, store = repo
    root = Path(cfg.state_dir) / "feature_repo"
    assert (root / "feature_store.yaml").is_file() and (root / "mmads_repo.py").is_file()
    assert "No changes to registry" in _feast_cli(root, "plan")  # the CLI sees what mmads applied
    views = _feast_cli(root, "feature-views", "list")
    for name in ("item_embeddings", "user_behavior", "simtier"):
        assert name in views
    write_online_items(store, pd.DataFrame({"item_id": [1], "emb": [np.ones(DIM, np.float32)], "category": ["cli"],
                                            "created_at": [T0], "event_timestamp": [T0]}))
    before = store.get_online_features(features=["item_embeddings:category"], entity_rows=[{"item_id": 1}]).to_dict()
    assert before["category"] == ["cli"]
    _feast_cli(root, "apply")
    after = open_store(cfg).get_online_features(features=["item_embeddings:category"],
                                                entity_rows=[{"item_id": 1}]).to_dict()
    assert after == before  # feast apply keeps the online rows
