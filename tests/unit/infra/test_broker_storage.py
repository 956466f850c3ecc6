"""The broker's storage settings: config keys, the Tansu arguments and environment, topic-id checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import topic_ids
from infra.broker_storage import broker_env, starts_s3_server, storage_url
from infra.config import load_config
from infra.errors import ConfigError, StackError


def test_memory_is_the_default_and_needs_no_s3() -> None:
    cfg = load_config(env={})
    assert cfg.kafka.storage == "memory"
    assert storage_url(cfg) == "memory://tansu/"
    assert broker_env(cfg) == {} and not starts_s3_server(cfg)


def test_s3_storage_from_the_environment_uses_the_local_server() -> None:
    cfg = load_config(env={"MMADS_KAFKA__STORAGE": "s3", "MMADS_KAFKA__S3__PORT": "29494",
                           "MMADS_KAFKA__S3__BUCKET": "topics"})
    assert storage_url(cfg) == "s3://topics/"
    assert starts_s3_server(cfg)
    env = broker_env(cfg)
    assert env["AWS_ENDPOINT"] == "http://127.0.0.1:29494" and env["AWS_ALLOW_HTTP"] == "true"


def test_external_s3_endpoint_takes_credentials_from_the_named_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(env={"MMADS_KAFKA__STORAGE": "s3", "MMADS_KAFKA__S3__ENDPOINT": "https://minio:9000",
                           "MMADS_S3_ACCESS_KEY_ID": "a", "MMADS_S3_SECRET_ACCESS_KEY": "b"})
    assert not starts_s3_server(cfg)  # an operator's bucket: nothing to start
    monkeypatch.delenv("MMADS_S3_ACCESS_KEY_ID", raising=False)
    with pytest.raises(StackError, match="MMADS_S3_ACCESS_KEY_ID"):
        broker_env(cfg)
    monkeypatch.setenv("MMADS_S3_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("MMADS_S3_SECRET_ACCESS_KEY", "secret")
    env = broker_env(cfg)
    assert (env["AWS_ENDPOINT"], env["AWS_ACCESS_KEY_ID"], env["AWS_ALLOW_HTTP"]) == ("https://minio:9000", "key",
                                                                                     "false")


@pytest.mark.parametrize(("key", "value"), [("STORAGE", "postgres"), ("S3__BUCKET", "Bad_Bucket")])
def test_bad_storage_values_are_config_errors(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=value):
        load_config(env={f"MMADS_KAFKA__{key}": value})


def test_recorded_ids_are_never_overwritten_and_changes_name_each_topic(tmp_path: Path) -> None:
    cfg = load_config(env={"MMADS_STATE_DIR": str(tmp_path)})
    topic_ids.record(cfg, {"items": "a", "behaviors": "b", "new": None})
    topic_ids.record(cfg, {"items": "z", "impressions": "c"})
    assert topic_ids.load_recorded(cfg) == {"items": "a", "behaviors": "b", "impressions": "c"}
    found = topic_ids.changes(topic_ids.load_recorded(cfg), {"items": "z", "behaviors": None, "impressions": "c",
                                                             "other": "x"})
    assert [(c.topic, c.recorded, c.current) for c in found] == [("behaviors", "b", None), ("items", "a", "z")]
    msg = str(topic_ids.loss_error(cfg, found, "What now."))
    assert msg.startswith("broker restarted with memory storage: possible data loss: topics recreated: "
                          "items (id a, now z); gone: behaviors;")
    s3 = cfg.with_overrides(kafka={"storage": "s3"})
    assert str(topic_ids.loss_error(s3, found, "")).startswith("topics were deleted or recreated on the broker")
    topic_ids.forget(cfg)
    assert topic_ids.load_recorded(cfg) == {}
