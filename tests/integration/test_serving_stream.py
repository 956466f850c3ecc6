"""A new item announced on Kafka reaches /recommend and /similar (real Tansu, indexer, Milvus, Feast)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from benchmarks.serving_world import World, build_world
from feature_repo.store import open_store, write_online_items, write_online_users
from infra import stack
from infra.config import MmadsConfig
from serving.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

K = 10
NEW_ITEM, SIBLING, SEEN, USER = 7_000_001, 7_000_002, 7_000_003, 7_000_100


@pytest.fixture(scope="module")
def cfg(stack_cfg: MmadsConfig, tmp_path_factory: pytest.TempPathFactory) -> MmadsConfig:
    tag = f"srv{os.getpid()}"
    cfg = stack_cfg.with_overrides(
        state_dir=tmp_path_factory.mktemp("serving_stream"), model={"dim": 16, "history_len": 5},
        kafka={"topics": {"items": f"items-{tag}", "behaviors": f"behaviors-{tag}",
                          "impressions": f"impressions-{tag}", "behavior_changelog": f"behaviors-{tag}.state"},
               "group_prefix": f"mmads-{tag}"},
        milvus={"collection": f"items_{tag}", "flush_interval_s": 0.5},
        serving={"max_candidates": K, "max_k": K},  # pool == k: every retrieved candidate is returned
    )
    stack.ensure_topics(cfg)
    return cfg


@pytest.fixture(scope="module")
def world(cfg: MmadsConfig, tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(cfg, tmp_path_factory.mktemp("run"), n_items=80, n_users=4, models=("simtier_make",))


@pytest.fixture(scope="module")
def encoder_dir(cfg: MmadsConfig) -> Path:
    from encoders import pretrained_encoder

    out = Path(cfg.state_dir) / "encoder"
    pretrained_encoder(cfg, seed=0, use_images=False).save(out)
    return out


@pytest.fixture(scope="module")
def encoder(encoder_dir: Path) -> Any:
    from encoders import ItemEncoder

    enc = ItemEncoder.load(encoder_dir)
    enc.encode_items(_items((1, "warm up")))  # finish the backbone imports before the indexer thread starts
    return enc


@pytest.fixture(scope="module")
def indexer(cfg: MmadsConfig, world: World, encoder_dir: Path, encoder: Any) -> Iterator[threading.Thread]:
    from streaming.item_indexer import run_items

    stop = threading.Event()
    thread = threading.Thread(target=run_items, kwargs={"cfg": cfg, "stop_event": stop, "model_dir": encoder_dir},
                              daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(60)


def _items(*rows: tuple[int, str]) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC")
    return pd.DataFrame({"item_id": [r[0] for r in rows], "title": [r[1] for r in rows], "category": "boots",
                         "image_path": None, "created_at": now})


def test_item_announced_on_kafka_is_recommended_and_similar(cfg: MmadsConfig, world: World, encoder: Any,
                                                            indexer: threading.Thread):
    from streaming.events import encode_value, iso_utc
    from streaming.kafka_io import make_producer

    # a user whose recent behavior is an item very like the one about to be announced
    seen_vec = encoder.encode_items(_items((SEEN, "red leather boots for the ankle")))[0]
    now = pd.Timestamp.now(tz="UTC")
    store = open_store(cfg)
    # the seen item's row (as the indexer writes it): serving gathers the history vector from it
    write_online_items(store, pd.DataFrame({"item_id": [SEEN], "emb": [seen_vec], "category": ["boots"],
                                            "created_at": [now], "event_timestamp": [now]}))
    write_online_users(store, pd.DataFrame({
        "user_id": [USER], "hist_item_ids": [[SEEN]], "hist_ts": [[int(now.value) // 1000]], "last_event_ts": [now],
        "event_timestamp": [now]}))
    with TestClient(create_app(world.run_dir, cfg)) as client:
        before = client.post("/recommend", json={"user_id": USER, "k": K}).json()
        assert NEW_ITEM not in {it["item_id"] for it in before["items"]}
        producer = make_producer(cfg)
        try:
            for item_id, title in ((NEW_ITEM, "red leather ankle boots"), (SIBLING, "ankle boots in red leather")):
                producer.send(cfg.kafka.topics.items, key=str(item_id).encode(), value=encode_value(
                    {"item_id": item_id, "title": title, "category": "boots", "image_uri": None,
                     "created_at": iso_utc(pd.Timestamp.now(tz="UTC"))}))
            producer.flush()
        finally:
            producer.close()
        deadline = time.monotonic() + 120  # the indexer joins its consumer group first
        body: dict = {}
        while time.monotonic() < deadline:
            assert indexer.is_alive(), "the item indexer stopped (see the log above)"
            body = client.post("/recommend", json={"user_id": USER, "k": K}).json()
            if NEW_ITEM in {it["item_id"] for it in body["items"]}:
                break
            time.sleep(0.1)
        assert NEW_ITEM in {it["item_id"] for it in body["items"]}, body
        assert body["source"].startswith("ann")
        assert NEW_ITEM not in body["missing_embeddings"]  # the indexer wrote Feast online too
        similar = client.get(f"/similar/{SIBLING}", params={"k": 3}).json()
        assert similar["items"][0]["item_id"] == NEW_ITEM
        assert similar["items"][0]["similarity"] > 0.8
