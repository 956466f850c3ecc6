"""The main job's report: ``report.json``, ``report.md`` with tables and plots, and the summary table.

``report.json`` follows docs/architecture.md ("The report").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmads.commands.common import format_table

logger = logging.getLogger(__name__)

REPORT_KEYS = ("data", "scl", "ctr", "freshness", "parity", "serving", "retrieval", "counts", "timings")
CTR_MODELS = ("id_only", "simtier", "make", "make_ft", "simtier_make", "lightgbm")


def _num(v: Any, fmt: str = ".4f") -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, int) and fmt.endswith("f"):
        return str(v)
    if isinstance(v, int | float):
        return format(v, fmt)
    return str(v)


def ctr_rows(ctr: Mapping[str, Any]) -> list[list[str]]:
    """One row per CTR model: AUC, GAUC (overall and new items), GAUC delta CIs vs id_only and lightgbm."""
    rows = []
    for name in [m for m in CTR_MODELS if m in ctr] + [m for m in ctr if m not in CTR_MODELS]:
        m = ctr[name]
        if not isinstance(m, Mapping) or "auc" not in m:
            continue
        rows.append([name, _num(m.get("auc")), _num(m.get("gauc")), _num(m.get("auc_new")),
                     _num(m.get("gauc_new")), _num(m.get("logloss")), _ci(m.get("gauc_delta_ci")),
                     _ci(m.get("gauc_delta_vs_lightgbm_ci"))])
    return rows


def _ci(ci: Any) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if isinstance(ci, list | tuple) and len(ci) == 2 else "-"


CTR_HEADERS = ["model", "AUC", "GAUC", "AUC new", "GAUC new", "logloss", "GAUC - id_only (95% CI)",
               "GAUC - lightgbm (95% CI)"]


def summary_table(report: Mapping[str, Any]) -> str:
    """The final terminal summary: one line per headline figure, then the CTR ablation."""
    scl = report.get("scl", {})
    fr = report.get("freshness", {})
    par = report.get("parity", {})
    srv = report.get("serving", {})
    cnt = report.get("counts", {})
    ret = report.get("retrieval", {})
    tm = report.get("timings", {})
    lines = [
        ("SCL recall@10 (default / frozen)", f"{_num(scl.get('recall@10'))} / {_num(scl.get('recall@10_frozen'))}"),
        ("item freshness p50 / p99 ms", f"{_num(fr.get('item_p50_ms'), '.0f')} / {_num(fr.get('item_p99_ms'), '.0f')}"),
        ("behavior freshness p99 ms", _num(fr.get("behavior_p99_ms"), ".0f")),
        ("counts milvus / feast items / users / dlq", " / ".join(
            _num(cnt.get(k), "d") for k in ("milvus_items", "feast_items", "feast_users", "dlq"))),
        ("parity offline-online / serving-offline", " / ".join(
            _num(par.get(k), ".2e") for k in ("offline_online_max_abs_diff", "serving_offline_max_abs_diff"))),
        ("serving p50 / p99 ms", f"{_num(srv.get('p50_ms'), '.1f')} / {_num(srv.get('p99_ms'), '.1f')}"),
        ("retrieval recall@100 (all / new / popular)", " / ".join(
            _num(ret.get(k)) for k in ("recall@100", "recall@100_new", "recall@100_popular"))),
        ("total seconds / peak GiB", f"{_num(tm.get('total'), '.0f')} / {_num(tm.get('peak_rss_gib'), '.2f')}"),
    ]
    out = format_table(["figure", "value"], lines)
    rows = ctr_rows(report.get("ctr", {}))
    if rows:
        out += "\n\n" + format_table(CTR_HEADERS, rows)
    return out


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in rows)


@contextmanager
def _figure(out: Path) -> Iterator[Any]:
    """One small headless figure: yields its axes, then saves it to ``out`` and closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)


def _plot_freshness(samples_ms: list[float], out: Path) -> Path | None:
    if not samples_ms:
        return None
    with _figure(out) as ax:
        ax.hist(samples_ms, bins=40, color="#3b7dd8")
        ax.set_xlabel("item event produced -> searchable in Milvus and readable in Feast (ms)")
        ax.set_ylabel("items")
        ax.set_title("Item freshness")
    return out


def _plot_latency(samples_ms: Mapping[str, list[float]], out: Path) -> Path | None:
    data = {k: v for k, v in samples_ms.items() if v}
    if not data:
        return None
    with _figure(out) as ax:
        ax.boxplot(list(data.values()), showfliers=True)
        ax.set_xticks(range(1, len(data) + 1), list(data.keys()))
        ax.set_ylabel("latency (ms)")
        ax.set_title("Serving latency (sample requests)")
    return out


def _plot_scl(scl: Mapping[str, Any], out: Path) -> Path | None:
    variants = [(v, float(r)) for v in ("frozen", "inbatch", "queue", "hard")
                if isinstance(r := scl.get(f"recall@10_{v}"), int | float)]
    if not variants:
        return None
    with _figure(out) as ax:
        ax.bar([v for v, _ in variants], [r for _, r in variants], color="#5aa469")
        ax.set_ylabel("query -> item recall@10")
        ax.set_title("SCL variants (time-held-out queries)")
    return out


def write_report(report: dict[str, Any], run_dir: Path, *, extras: Mapping[str, Any] | None = None) -> Path:
    """Write report.json, report.md and the plots; returns the path of report.json.

    Args:
        report: the report (keys of :data:`REPORT_KEYS`).
        run_dir: the run directory.
        extras: samples for the plots: ``freshness_samples_ms`` (list), ``latency_samples_ms``
            (name -> list), ``ctr_plots`` (PNG paths written by training).
    """
    extras = extras or {}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    plots = [
        _plot_scl(report.get("scl", {}), run_dir / "scl_recall.png"),
        _plot_freshness(list(extras.get("freshness_samples_ms", [])), run_dir / "freshness.png"),
        _plot_latency(dict(extras.get("latency_samples_ms", {})), run_dir / "serving_latency.png"),
    ]
    md = ["# mmads run report\n"]
    data = report.get("data", {})
    if data:
        md.append("## Data\n")
        md.append(_md_table(["key", "value"], [[k, _num(v)] for k, v in data.items()]))
    rows = ctr_rows(report.get("ctr", {}))
    if rows:
        md.append("\n## CTR ablation (test period after the cut)\n")
        md.append(_md_table(CTR_HEADERS, rows))
        from training.report import slice_markdown  # the cold-start tables, as in ctr_report.md

        md.extend(slice_markdown(report.get("ctr", {})))
    for section in ("scl", "freshness", "parity", "serving", "retrieval", "counts", "timings"):
        sec = report.get(section)
        if isinstance(sec, Mapping) and sec:
            md.append(f"\n## {section}\n")
            flat = [[k, _num(v)] for k, v in sec.items() if not isinstance(v, Mapping | list)]
            md.append(_md_table(["key", "value"], flat))
    images = [p for p in plots if p is not None] + [Path(p) for p in extras.get("ctr_plots", [])]
    if images:
        md.append("\n## Plots\n")
        for img in images:
            rel = img.relative_to(run_dir) if img.is_relative_to(run_dir) else img
            md.append(f"![{img.stem}]({rel})\n")
    (run_dir / "report.md").write_text("\n".join(md))
    logger.info("wrote %s and report.md", path)
    return path
