import json

import pytest

from infra.dataset import load_dataset
from mmads.datagen import generate_dataset
from streaming.timeline import _merged


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("timeline") / "data"
    generate_dataset(out, seed=5, scale=0.02, image_size=16, images=False, progress=False)
    return load_dataset(out)


def test_merged_timeline_keeps_every_event_once_in_time_order(tiny):
    events = list(_merged(tiny))
    kinds = [e[2] for e in events]
    assert kinds.count("items") == len(tiny.items)
    assert kinds.count("behaviors") == len(tiny.behaviors)
    assert kinds.count("impressions") == len(tiny.impressions)
    times = [e[0] for e in events]
    assert times == sorted(times)
    # every topic's events carry their own kind (a late-binding bug once sent everything to one topic)
    assert all(b'"user_id"' in e[4] for e in events if e[2] != "items")
    assert all(b'"title"' in e[4] for e in events if e[2] == "items")


def test_an_item_is_announced_before_behaviors_at_the_same_time(tiny):
    events = list(_merged(tiny))
    first_seen: dict[bytes, int] = {}
    for pos, (_, _, kind, key, _) in enumerate(events):
        if kind == "items":
            first_seen[key] = pos
    created = dict(zip(tiny.items["item_id"], tiny.items["created_at"], strict=True))
    for pos, (ts, _, kind, _, value) in enumerate(events):
        if kind == "behaviors":
            item = json.loads(value)["item_id"]
            if created[item] <= ts:
                assert first_seen[str(item).encode()] < pos
