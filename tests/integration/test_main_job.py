"""The main job end to end on a tiny dataset, as a user runs it (``mmads run``), against the real stack."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from infra.dataset import load_dataset
from mmads.datagen import generate_dataset
from mmads.datagen.side_features import derive_side_features
from mmads.report import REPORT_KEYS
from tests.support import make_config

SHOP = Path(__file__).resolve().parents[1] / "data" / "shop_log"

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {  # tiny models: the job's plumbing is under test here, not model quality
    "MMADS_MODEL__SCL__EPOCHS": "2",
    "MMADS_MODEL__CTR__MAKE_EPOCHS": "2",
    "MMADS_MODEL__CTR__BOOTSTRAP": "20",
    "MMADS_MODEL__CTR__LGBM_ROUNDS": "30",
}


def _env(tmp: Path) -> dict[str, str]:
    cfg = make_config(tmp / "unused")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMADS_")}
    env.update(FAST)
    env.update({
        "MMADS_KAFKA__PORT": str(cfg.kafka.port),
        "MMADS_MILVUS__PORT": str(cfg.milvus.port),
        "MMADS_SERVING__PORT": str(cfg.serving.port),
        "MMADS_STREAMING__METRICS_PORT": "0",  # free ports: tests share the machine
    })
    return env


def _run(tmp: Path, data: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmads", "run", "--data", str(data), "--out", str(out)],
                          env=env or _env(tmp), capture_output=True, text=True, timeout=900)


def _check_report(out: Path, data: Path, *, scl_trained: bool = True) -> dict:
    report = json.loads((out / "report.json").read_text())
    assert set(REPORT_KEYS) <= set(report)
    n_items = len(pd.read_parquet(data / "items.parquet"))
    counts = report["counts"]
    assert counts["milvus_items"] == counts["feast_items"] == n_items
    assert counts["feast_users"] > 0
    assert counts["dlq"] == 0
    assert report["parity"]["checked"] > 0
    assert report["parity"]["offline_online_max_abs_diff"] <= 1e-6
    assert report["parity"]["serving_offline_max_abs_diff"] <= 1e-6
    assert report["training_set"]["odfv_parity_max_abs_diff"] <= 1e-6
    for model in ("id_only", "simtier", "make", "make_ft", "simtier_make", "lightgbm"):
        for key in ("auc", "gauc", "auc_new", "gauc_new", "logloss"):
            assert key in report["ctr"][model]
    recall_keys = ("recall@10", "recall@10_frozen", "recall@10_inbatch", "recall@10_queue", "recall@10_hard")
    if scl_trained:
        for key in recall_keys:
            assert 0.0 <= report["scl"][key] <= 1.0
    else:  # nothing trained: no figures, not faked ones
        assert report["scl"]["trained"] is False
        assert not set(recall_keys) & set(report["scl"])
    for key in ("item_p50_ms", "item_p99_ms", "behavior_p99_ms"):
        assert report["freshness"][key] >= 0
    assert report["serving"]["p99_ms"] >= report["serving"]["p50_ms"] > 0
    assert report["retrieval"]["users"] > 0
    assert report["timings"]["total"] > 0
    assert (out / "report.md").is_file()
    return report


def test_main_job_on_tiny_dataset(tmp_path: Path):
    data = tmp_path / "data"
    generate_dataset(data, seed=1, scale=0.04, image_size=32, progress=False)
    out = tmp_path / "run"
    res = _run(tmp_path, data, out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = _check_report(out, data)
    assert report["data"]["has_images"] is True
    assert "GAUC" in res.stdout  # the final summary table
    assert not list((out / "state" / "run").glob("*.json"))  # stack down left no recorded process
    # a second run (other ports: they are not inputs) reuses what it can: SCL is skipped
    again = _run(tmp_path, data, out, env=_env(tmp_path))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[scl] skipped" in again.stdout


def test_main_job_with_side_features(tmp_path: Path):
    """Text-only items with side features on items and users.parquet."""
    src = tmp_path / "plain"
    generate_dataset(src, seed=4, scale=0.04, image_size=32, images=False, progress=False)
    data = derive_side_features(src, tmp_path / "data", seed=4)
    out = tmp_path / "run"
    res = _run(tmp_path, data, out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = _check_report(out, data)
    assert report["data"]["image_tower"].startswith("skipped")  # text-only items: no image tower
    names = ["brand", "shop_id", "price", "age_bucket", "city"]
    assert all(report["ctr"][m]["side_features"] == names for m in ("id_only", "simtier_make", "lightgbm"))
    assert "side features: brand (categorical, items)" in res.stdout
    assert report["parity"]["side_feature_mismatches"] == 0
    side = json.loads((out / "ctr" / "models" / "simtier_make" / "side_features.json").read_text())
    assert [s["name"] for s in side["specs"]] == names


def test_broken_dataset_stops_at_validation(tmp_path: Path):
    data = tmp_path / "data"
    generate_dataset(data, seed=3, scale=0.02, image_size=16, progress=False)
    items = pd.read_parquet(data / "items.parquet")
    items["title"] = 1  # a broken column
    items.to_parquet(data / "items.parquet")
    out = tmp_path / "run"
    res = _run(tmp_path, data, out)
    assert res.returncode == 1
    assert "stage 'validate' failed" in res.stderr
    assert "title" in res.stderr
    assert not (out / "state" / "run" / "tansu.json").exists()


def test_main_job_on_imported_shop_log(tmp_path: Path):
    """The issue's user: a CSV log with string ids, side features, text-only items, no queries, 1997 times."""
    data = tmp_path / "data"
    imported = subprocess.run([sys.executable, "-m", "mmads", "data", "import", "--mapping",
                               str(SHOP / "mapping.yaml"), "--out", str(data)],
                              env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-3000:]
    ds = load_dataset(data)
    assert ds.impressions["ts"].dt.year.unique().tolist() == [1997] and len(ds.item_keys) == len(ds.items)
    assert ds.item_side_columns == ["price", "brand"] and not ds.has_queries and not ds.has_images
    out = tmp_path / "run"
    res = _run(tmp_path, data, out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "[scl] trained nothing" in res.stdout
    report = _check_report(out, data, scl_trained=False)
    assert report["counts"]["published"] == {"items": 160, "behaviors": 1794, "impressions": 3334}
    assert report["data"]["string_item_ids"] == 160
    assert report["data"]["side_features"] == ["price (numeric, items)", "brand (categorical, items)"]


def test_main_job_in_2200(tmp_path: Path):
    """Any time nanoseconds hold is valid everywhere: validate, the jobs, Feast, Milvus, the service.

    The past is run end to end by the shop log (1997) and the point-in-time tests (1998); the
    contract's and the event schema's unit tests take 1970 and 2200.
    """
    years = 176
    from tests.real_world import reshape

    src = tmp_path / "generated"
    generate_dataset(src, seed=5, scale=0.02, image_size=16, images=False, progress=False)
    data = reshape(src, tmp_path / "data", years=years)
    out = tmp_path / "run"
    res = _run(tmp_path, data, out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = _check_report(out, data, scl_trained=False)
    assert report["data"]["cut_time"].startswith(str(2024 + years))


def test_main_job_stops_on_a_broken_event_stream(tmp_path: Path):
    """Garbage on the behaviors topic: the run stops at the dead-letter check naming topic and reason."""
    from kafka import KafkaProducer

    data = tmp_path / "data"
    generate_dataset(data, seed=4, scale=0.02, image_size=16, images=False, progress=False)
    env = _env(tmp_path)
    argv = [sys.executable, "-m", "mmads", "run", "--data", str(data), "--out", str(tmp_path / "run")]
    err_file = (tmp_path / "stderr.txt").open("w")  # a file: an undrained pipe could block the run
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err_file, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the topics exist once the stack is up
        lines.append(line)
        if line.startswith("[stack_up]"):
            break
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{env['MMADS_KAFKA__PORT']}")
    for i in range(300):
        producer.send("behaviors", key=b"u", value=b'{"user_id": ' + str(i).encode())
    producer.flush()
    producer.close()
    stdout, _ = proc.communicate(timeout=900)
    err_file.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 1, stdout[-3000:] + stderr[-3000:]
    failed = [ln for ln in stdout.splitlines() + stderr.splitlines() if "FAILED" in ln]
    assert failed and failed[0].split("]")[0] in ("[replay", "[catch_up"), failed
    assert re.search(r"dead-lettered \d+ of the \d+ events of topic 'behaviors'", stderr), stderr[-2000:]
    assert re.search(r"top reasons: \d+ x bad JSON", stderr), stderr[-2000:]
    assert "[training_set]" not in stdout
