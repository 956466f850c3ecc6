from pathlib import Path

import pytest

from infra.config import DEFAULT_CONFIG_FILE, load_config
from infra.errors import ConfigError


def test_default_file_loads_with_documented_defaults():
    cfg = load_config(env={})
    assert cfg.kafka.embedded and cfg.milvus.embedded
    assert cfg.kafka.servers == "127.0.0.1:19092"
    assert cfg.model.dim == 64 and cfg.model.history_len == 50 and cfg.model.n_tiers == 10
    assert cfg.feast.online_store == "sqlite"
    assert DEFAULT_CONFIG_FILE.is_file()


def test_yaml_file_overrides_defaults(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  port: 29999\nmodel:\n  dim: 32\n")
    cfg = load_config(f, env={})
    assert cfg.kafka.port == 29999 and cfg.model.dim == 32
    assert cfg.milvus.port == 19540  # untouched default


def test_unknown_key_names_key_and_value(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  prot: 1234\n")
    with pytest.raises(ConfigError, match=r"kafka\.prot.*1234"):
        load_config(f, env={})


def test_bad_value_names_key_and_value(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("feast:\n  online_store: postgres\n")
    with pytest.raises(ConfigError, match=r"feast\.online_store.*postgres"):
        load_config(f, env={})


def test_env_override_nested_and_top_level(tmp_path: Path):
    env = {"MMADS_KAFKA__PORT": "30001", "MMADS_MODEL__SCL__EPOCHS": "7", "MMADS_STATE_DIR": str(tmp_path)}
    cfg = load_config(env=env)
    assert cfg.kafka.port == 30001
    assert cfg.model.scl.epochs == 7
    assert cfg.state_dir == tmp_path


def test_env_override_beats_file(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  port: 29999\n")
    assert load_config(f, env={"MMADS_KAFKA__PORT": "30002"}).kafka.port == 30002


def test_bad_env_override_names_variable():
    with pytest.raises(ConfigError, match="MMADS_MILVUS__PORTT"):
        load_config(env={"MMADS_MILVUS__PORTT": "1"})


def test_secret_variables_are_not_overrides():
    cfg = load_config(env={"MMADS_SERVING_TOKEN": "s3cret", "MMADS_MILVUS_TOKEN": "x"})
    assert "s3cret" not in cfg.model_dump_json()


def test_config_env_selects_file(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("serving:\n  port: 9123\n")
    assert load_config(env={"MMADS_CONFIG": str(f)}).serving.port == 9123


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})


def test_external_endpoints_switch_off_embedded():
    cfg = load_config(env={"MMADS_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
                           "MMADS_MILVUS__URI": "http://milvus:19530"})
    assert not cfg.kafka.embedded and cfg.kafka.client_options()["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert not cfg.milvus.embedded and cfg.milvus.address == "http://milvus:19530"


def test_a_misspelled_variable_is_an_error_and_named_secrets_are_not():
    with pytest.raises(ConfigError, match="MMADS_KAFKA_PORT is neither a config override.*MMADS_KAFKA__PORT"):
        load_config(env={"MMADS_KAFKA_PORT": "1"})
    cfg = load_config(env={"MMADS_SERVING_TOKEN": "x", "MMADS_MILVUS_TOKEN": "y", "MMADS_PROFILE": "cluster",
                           "OTHER_VAR": "1"})
    assert cfg.profile == "cluster"
    # a secret variable renamed in the config is the one that is allowed
    renamed = load_config(env={"MMADS_SERVING__TOKEN_ENV": "MMADS_RANKER_TOKEN", "MMADS_RANKER_TOKEN": "z"})
    assert renamed.serving.token_env == "MMADS_RANKER_TOKEN"


def test_spark_offline_store_conf_from_env():
    env = {"MMADS_FEAST__OFFLINE_STORE": "spark", "MMADS_FEAST__SPARK__MASTER": "spark://head:7077",
           "MMADS_FEAST__SPARK__CONF": "{spark.executor.cores: 4, spark.eventLog.enabled: true}"}
    cfg = load_config(env=env)
    conf = cfg.feast.spark.spark_conf()
    assert cfg.feast.offline_store == "spark"
    assert conf["spark.master"] == "spark://head:7077"
    assert conf["spark.executor.cores"] == "4" and conf["spark.eventLog.enabled"] == "true"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert "spark.pyspark.python" not in conf  # a cluster's executors bring their own interpreter


def test_spark_master_defaults_to_local_cores_and_sc_is_spark_connect():
    local = load_config(env={}).feast.spark.spark_conf()
    assert local["spark.master"].startswith("local[") and local["spark.driver.host"] == "127.0.0.1"
    connect = load_config(env={"MMADS_FEAST__SPARK__MASTER": "sc://spark-connect:15002"}).feast.spark.spark_conf()
    assert connect["spark.remote"] == "sc://spark-connect:15002" and "spark.master" not in connect


def test_unknown_offline_store_is_an_error():
    with pytest.raises(ConfigError, match=r"feast\.offline_store.*bigquery"):
        load_config(env={"MMADS_FEAST__OFFLINE_STORE": "bigquery"})


def test_consumers_leave_groups_by_leavegroup_only_on_an_external_cluster_unless_told():
    # Tansu (the embedded broker) wedges a group on a LeaveGroup during a rebalance
    assert not load_config(env={}).kafka.leaves_group_on_close
    external = {"MMADS_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092"}
    assert load_config(env=external).kafka.leaves_group_on_close
    assert not load_config(env={**external, "MMADS_KAFKA__LEAVE_GROUP_ON_CLOSE": "false"}).kafka.leaves_group_on_close
    assert load_config(env={"MMADS_KAFKA__LEAVE_GROUP_ON_CLOSE": "true"}).kafka.leaves_group_on_close
