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


def test_numbers_are_formatted_by_magnitude_with_their_unit():
    from mmads.report import format_number, format_value

    assert format_number(2.98e-08) == "2.98e-08"
    assert format_number(0.74341) == "0.7434"
    assert format_number(0.00123) == "0.00123"
    assert format_number(162.0) == "162"
    assert format_number(41.66) == "41.7"
    assert format_number(0.0) == "0" and format_number(12) == "12"
    assert format_value(162.0, "p99_ms") == "162 ms"
    assert format_value(5.021, "p50_ms") == "5.02 ms"
    assert format_value(0.07, "validate", unit="s") == "0.07 s"
    assert format_value(16341.2, "rows_per_s") == "16341/s"
    assert format_value(3.37, "peak_rss_gib") == "3.37 GiB"
    assert format_value([0.1, 0.2], "gauc_ci") == "[+0.1000, +0.2000]"
    assert format_value(True) == "yes" and format_value(None) == "-"


def test_report_md_shows_every_section_the_scl_table_and_the_baselines(tmp_path: Path):
    from mmads.report import REPORT_KEYS, finish_report

    report = {
        "data": {"items": 10},
        "scl": {"recall@10_frozen": 0.1, "mrr_frozen": 0.05, "recall@10_hard": 0.3, "mrr_hard": 0.2,
                "recall@10": 0.3, "mrr": 0.2, "default_variant": "hard", "n_test_pairs": 7},
        "ctr": {"id_only": {"auc": 0.6, "gauc": 0.55, "auc_new": 0.5, "gauc_new": 0.5, "logloss": 0.3, "ece": 0.004,
                            "gauc_delta_ci": [0.0, 0.0], "gauc_delta_vs_lightgbm_ci": [-0.2, -0.1]},
                "lightgbm": {"auc": 0.7, "gauc": 0.65, "auc_new": 0.6, "gauc_new": 0.6, "logloss": 0.28,
                             "gauc_delta_ci": [0.1, 0.2]}},
        "freshness": {"item_p50_ms": 83.0}, "parity": {"offline_online_max_abs_diff": 2.98e-08},
        "serving": {"p99_ms": 162.0}, "retrieval": {"recall@100": 0.37},
        "counts": {"dlq": 0, "published": {"items": 600}},
        "training_set": {"rows": 12522, "rows_per_s": 16341.2}, "stack": {"profile": "embedded"},
        "timings": {"validate": 0.07, "train": 10.5, "total": 73.4, "peak_rss_gib": 3.37},
    }
    finish_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    for section in REPORT_KEYS:
        assert f"## {section}" in md or (section == "ctr" and "## CTR ablation" in md), section
    assert "| variant | recall@10 | mrr |" in md
    assert "| hard (default) | 0.3000 | 0.2000 |" in md and "| frozen | 0.1000 | 0.0500 |" in md
    assert "\n| recall@10 |" not in md  # the default variant's copy is the table's row
    assert "| id_only | 0.6000 | 0.5500 | 0.5000 | 0.5000 | 0.3000 | 0.004 | baseline | [-0.2000, -0.1000] |" in md
    assert "| lightgbm |" in md and md.split("| lightgbm |")[1].split("\n")[0].endswith("| baseline |")
    assert "| offline_online_max_abs_diff | 2.98e-08 |" in md and "| p99_ms | 162 ms |" in md
    assert "| published.items | 600 |" in md and "| train | 10.5 s |" in md and "| peak_rss_gib | 3.37 GiB |" in md
    assert (tmp_path / "timings.png").stat().st_size > 1000 and "![timings](timings.png)" in md
