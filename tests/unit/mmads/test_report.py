import json
from pathlib import Path

from mmads.report import summary_table, write_report


def test_write_report_files_plots_and_summary(tmp_path: Path):
    report = {
        "data": {"items": 10, "cut_time": "2024-01-01"},
        "scl": {"recall@10": 0.3, "recall@10_frozen": 0.1, "recall@10_inbatch": 0.25,
                "recall@10_queue": 0.3, "recall@10_hard": 0.3},
        "ctr": {"id_only": {"auc": 0.6, "gauc": 0.55, "auc_new": 0.5, "gauc_new": 0.5, "logloss": 0.3,
                            "gauc_delta_ci": [0.0, 0.0]},
                "simtier": {"auc": 0.7, "gauc": 0.65, "auc_new": 0.6, "gauc_new": 0.6, "logloss": 0.28,
                            "gauc_delta_ci": [0.05, 0.15]}},
        "counts": {"milvus_items": 10, "feast_items": 10, "feast_users": 4, "dlq": 0},
    }
    path = write_report(report, tmp_path, extras={"freshness_samples_ms": [1.0, 2.0, 30.0],
                                                  "latency_samples_ms": {"/rank": [3.0, 4.0], "/recommend": []}})
    assert json.loads(path.read_text())["counts"]["dlq"] == 0
    for png in ("scl_recall.png", "freshness.png", "serving_latency.png"):
        assert (tmp_path / png).stat().st_size > 1000
    md = (tmp_path / "report.md").read_text()
    assert "| simtier | 0.7000 | 0.6500 |" in md
    assert "| items | 10 |" in md
    assert "![freshness](freshness.png)" in md
    table = summary_table(report)
    assert "10 / 10 / 4 / 0" in table
    assert "[+0.0500, +0.1500]" in table


def test_no_samples_no_plot(tmp_path: Path):
    write_report({"data": {"items": 1}}, tmp_path)
    assert not (tmp_path / "freshness.png").exists()
    assert not (tmp_path / "scl_recall.png").exists()
