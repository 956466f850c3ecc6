import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from feature_repo.definitions import build_definitions
from feature_repo.on_demand import make_simtier_udf, simtier_from_lists
from feature_repo.schema import CREATED_FIELD, part_schema
from feature_repo.simtier import SIMTIER_COLUMNS, simtier
from feature_repo.store import (
    USER_SCHEMA,
    append_offline,
    open_store,
    read_offline,
    render_feature_store_yaml,
)
from infra.config import load_config
from infra.errors import FeatureError, StackNotRunningError

T0 = pd.Timestamp("2024-01-01", tz="UTC")


@pytest.fixture
def cfg(tmp_path):
    return load_config().with_overrides(state_dir=str(tmp_path), model={"dim": 4, "n_tiers": 3})


def test_render_yaml_sqlite_and_redis(cfg):
    doc = yaml.safe_load(render_feature_store_yaml(cfg).read_text())
    assert doc["project"] == "mmads"
    assert doc["online_store"]["type"] == "sqlite"
    assert doc["online_store"]["path"].endswith("feature_repo/online.db")
    assert doc["offline_store"] == {"type": "duckdb"}
    assert doc["entity_key_serialization_version"] == 3
    redis = cfg.with_overrides(feast={"online_store": "redis", "redis_connection_string": "127.0.0.1:7000"})
    doc = yaml.safe_load(render_feature_store_yaml(redis).read_text())
    assert doc["online_store"] == {"type": "redis", "redis_type": "redis", "connection_string": "127.0.0.1:7000"}


def test_render_yaml_spark_offline_store(cfg):
    spark = cfg.with_overrides(feast={"offline_store": "spark", "spark": {
        "master": "local[2]", "driver_memory": "1g", "conf": {"spark.sql.adaptive.enabled": "false"}}})
    doc = yaml.safe_load(render_feature_store_yaml(spark).read_text())
    conf = doc["offline_store"]["spark_conf"]
    assert doc["offline_store"]["type"] == "spark"
    assert conf["spark.master"] == "local[2]" and conf["spark.driver.memory"] == "1g"
    assert conf["spark.sql.adaptive.enabled"] == "false"  # what the user adds is passed as is
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    sources = {type(o.batch_source).__name__ for o in build_definitions(spark) if hasattr(o, "batch_source")
               and o.batch_source is not None}
    assert sources == {"SparkSource"}  # the same part files, read as Spark sources
    fv = next(o for o in build_definitions(spark) if getattr(o, "name", "") == "user_behavior")
    assert isinstance(fv.batch_source, SparkSource)
    assert fv.batch_source.path.endswith("offline/user_behavior")  # the part files' directory
    assert fv.batch_source.created_timestamp_column == CREATED_FIELD


def test_open_store_before_apply_raises(cfg):
    with pytest.raises(StackNotRunningError, match="never applied"):
        open_store(cfg)


def test_append_offline_writes_parts_with_exact_schema(cfg):
    rows = pd.DataFrame({
        "user_id": [1, 2], "hist_item_ids": [[3, 4], []],
        "hist_ts": [[1_700_000_000_000_000, 1_600_000_000_000_000], []],
        "last_event_ts": [T0 + pd.Timedelta(nanoseconds=1500)] * 2, "event_timestamp": [T0] * 2,
    })
    p1 = append_offline(cfg, "user_behavior", rows)
    p2 = append_offline(cfg, "user_behavior", rows.iloc[:1])
    assert p1 != p2
    assert pq.read_schema(p1).equals(USER_SCHEMA.append(pa.field(CREATED_FIELD, pa.timestamp("us", tz="UTC"))))
    assert pq.read_schema(p1).equals(part_schema(USER_SCHEMA))
    assert not list(p1.parent.glob("*.tmp"))
    back = read_offline(cfg, "user_behavior")
    assert len(back) == 3
    assert back[CREATED_FIELD].is_monotonic_increasing and back[CREATED_FIELD].is_unique  # write order
    assert back["last_event_ts"].iloc[0] == T0 + pd.Timedelta(microseconds=1)  # floored to us
    with pytest.raises(FeatureError, match="lack columns"):
        append_offline(cfg, "user_behavior", rows.drop(columns=["hist_ts"]))
    with pytest.raises(FeatureError, match="unknown feature view"):
        append_offline(cfg, "nope", rows)


def test_definitions_catalogue(cfg):
    names = [o.name for o in build_definitions(cfg)]
    assert names == ["user", "item", "item_embeddings_push", "user_behavior_push", "item_embeddings",
                     "user_behavior", "simtier", "ctr_training", "ctr_serving"]


def test_udf_source_is_self_contained_and_handles_dummy_inputs():
    udf, source = make_simtier_udf(4, 3)
    namespace: dict = {}
    exec(source, namespace)  # what Feast does when it reads the registry: no closure, no globals
    dummy = {"emb": [[1.0]], "hist_emb_flat": [[1.0]]}  # what feast apply passes
    for fn in (udf, namespace["simtier_udf"]):
        out = fn(dummy)
        assert list(out) == SIMTIER_COLUMNS(3)
        assert out["hist_len"] == [0.0]


def test_simtier_from_lists_matches_simtier():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 4)).astype(np.float32)
    hist = rng.normal(size=(2, 4)).astype(np.float32)
    out = simtier_from_lists([emb[0], None, emb[2]], [hist.ravel(), hist.ravel(), None], 4, 3)
    np.testing.assert_array_equal([out["tier_0"][0], out["sim_max"][0]], simtier(emb[0], hist, n_tiers=3)[0, [0, 4]])
    assert out["hist_len"] == [2.0, 2.0, 0.0]
    assert out["sim_max"][1] == 0.0


def test_redis_password_is_a_reference_feast_expands(cfg, monkeypatch):
    from feast.repo_config import load_repo_config

    monkeypatch.setenv("MMADS_REDIS_PASSWORD", "p4ssw0rd!")
    redis = cfg.with_overrides(feast={"online_store": "redis", "redis_connection_string": "127.0.0.1:7000"})
    path = render_feature_store_yaml(redis)
    assert "p4ssw0rd!" not in path.read_text()
    assert "password=${MMADS_REDIS_PASSWORD}" in path.read_text()
    loaded = load_repo_config(path.parent, path)
    assert loaded.online_store.connection_string == "127.0.0.1:7000,password=p4ssw0rd!"


def test_latest_offline_keeps_the_latest_row_per_item(tmp_path):
    from feature_repo.schema import ITEM_VECTOR_COLUMNS, item_vector_table
    from feature_repo.store import latest_item_vectors, latest_offline

    cfg = load_config(env={}).with_overrides(state_dir=tmp_path, model={"dim": 2})
    items = pd.DataFrame({"item_id": [1, 2], "category": ["a", "b"], "created_at": [T0, T0]})
    first = item_vector_table(items, np.array([[1, 0], [0, 1]], np.float32))
    later = item_vector_table(items.iloc[:1], np.array([[0.5, 0.5]], np.float32))
    append_offline(cfg, "item_embeddings", first.assign(event_timestamp=T0 + pd.Timedelta(seconds=1)))
    append_offline(cfg, "item_embeddings", later.assign(event_timestamp=T0 + pd.Timedelta(seconds=2)))
    table = latest_item_vectors(cfg)
    assert list(table.columns) == ITEM_VECTOR_COLUMNS
    got = dict(zip(table["item_id"], (list(v) for v in table["emb"]), strict=True))
    assert got == {1: [0.5, 0.5], 2: [0.0, 1.0]}
    assert len(latest_offline(cfg, "item_embeddings")) == 2
    with pytest.raises(FeatureError, match="unknown feature view"):
        latest_offline(cfg, "nope")


def test_unix_seconds_are_feasts_timestamp_values() -> None:
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    from feature_repo.store import _unix_seconds, _unix_timestamp_wires

    rng = np.random.default_rng(0)
    us = np.concatenate([rng.integers(-2**61 // 1000, 2**61 // 1000, 200_000), rng.integers(-10**13, 10**13, 200_000),
                         [0, -1, 1, 999_999, -999_999, 1_000_000, -1_000_000, 1_709_296_496_999_999]])
    column = pa.chunked_array([pa.array(us, type=pa.timestamp("us", tz="UTC"))])
    feasts = python_values_to_proto_values(column.to_pandas().tolist(), ValueType.UNIX_TIMESTAMP)
    assert _unix_seconds(column).tolist() == [v.unix_timestamp_val for v in feasts]
    # and the serialized values the SQLite writer stores are Feast's bytes (negative seconds: 10-byte varints)
    assert _unix_timestamp_wires(column) == [v.SerializeToString() for v in feasts]


def test_int64_list_values_are_feasts_values() -> None:
    """The vectorised varint encoding builds byte for byte the Value Feast's own conversion builds."""
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    from feature_repo.store import _int64_list_wires

    rng = np.random.default_rng(1)
    flat = np.concatenate([rng.integers(-2**63, 2**63 - 1, 3000, dtype=np.int64), rng.integers(0, 300, 3000),
                           rng.integers(1_600_000_000_000_000, 1_800_000_000_000_000, 3000),
                           np.array([0, 1, 127, 128, 16_383, 16_384, -1, 2**63 - 1, -2**63], dtype=np.int64)])
    cuts = np.sort(rng.integers(0, len(flat), 400))
    offsets = np.concatenate([[0], cuts, [len(flat)]])  # repeated cuts: empty lists
    valid = rng.random(len(offsets) - 1) > 0.1
    got = _int64_list_wires(flat, offsets, valid)
    ints = flat.tolist()
    lists = [ints[a:b] if ok else None for a, b, ok in zip(offsets[:-1], offsets[1:], valid, strict=True)]
    feasts = python_values_to_proto_values(lists, ValueType.INT64_LIST)
    assert any(x == [] for x in lists) and any(x is None for x in lists)
    assert got == [f.SerializeToString() for f in feasts]


def test_float_list_wires_are_feasts_bytes() -> None:
    """Serialized float lists, empty and null rows and a list longer than 16 KiB included, are Feast's bytes."""
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    from feature_repo.store import _float_list_wires

    rng = np.random.default_rng(2)
    flat = np.concatenate([rng.normal(size=6000), [0.0, -0.0, np.inf, 1e-40]]).astype(np.float32)
    offsets = np.array([0, 0, 3, 64, 64, 5000, 5001, len(flat)])  # an empty list, 4,936 floats (19,744 B)
    valid = np.array([True, True, True, False, True, True, True])
    got = _float_list_wires(flat, offsets, valid)
    values = flat.tolist()
    lists = [values[a:b] if ok else None for a, b, ok in zip(offsets[:-1], offsets[1:], valid, strict=True)]
    feasts = python_values_to_proto_values(lists, ValueType.FLOAT_LIST)
    assert got[0] != b"" and got[3] == b""
    assert got == [f.SerializeToString() for f in feasts]
