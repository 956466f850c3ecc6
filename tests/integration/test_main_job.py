"""The main job end to end on a tiny dataset, as a user runs it (``mmads run``), against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmads.datagen import generate_dataset
from mmads.datagen.side_features import derive_side_features
from mmads.report import REPORT_KEYS
from tests.support import make_config

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
    })
    return env


def _run(tmp: Path, data: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmads", "run", "--data", str(data), "--out", str(out)],
                          env=env or _env(tmp), capture_output=True, text=True, timeout=900)


def _check_report(out: Path, data: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    assert set(REPORT_KEYS) <= set(report)
    n_items = len(pd.read_parquet(data / "items.parquet"))
    counts = report["counts"]
    assert counts["milvus_items"] == counts["feast_items"] == n_items
    assert counts["feast_users"] > 0
    assert counts["dlq"] == 0
    assert report["parity"]["checked"] > 0
    assert report["parity"]["offline_online_max_abs_diff"] <= 1e-5
    assert report["parity"]["serving_offline_max_abs_diff"] <= 1e-5
    for model in ("id_only", "simtier", "make", "make_ft", "simtier_make", "lightgbm"):
        for key in ("auc", "gauc", "auc_new", "gauc_new", "logloss"):
            assert key in report["ctr"][model]
    for key in ("recall@10", "recall@10_frozen", "recall@10_inbatch", "recall@10_queue", "recall@10_hard"):
        assert 0.0 <= report["scl"][key] <= 1.0
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


def test_main_job_text_only(tmp_path: Path):
    data = tmp_path / "data"
    generate_dataset(data, seed=2, scale=0.04, image_size=32, images=False, progress=False)
    out = tmp_path / "run"
    res = _run(tmp_path, data, out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = _check_report(out, data)
    assert report["data"]["image_tower"].startswith("skipped")


def test_main_job_with_side_features(tmp_path: Path):
    src = tmp_path / "plain"
    generate_dataset(src, seed=4, scale=0.04, image_size=32, images=False, progress=False)
    data = derive_side_features(src, tmp_path / "data", seed=4)
    out = tmp_path / "run"
    res = _run(tmp_path, data, out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = _check_report(out, data)
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
