"""The main job's report: ``report.json``, ``report.md`` with tables and plots, and the summary table.

``report.json`` follows docs/architecture.md ("The report").
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmads.commands.common import format_table
from training.models.registry import MODEL_NAMES

logger = logging.getLogger(__name__)

REPORT_KEYS = ("data", "scl", "ctr", "freshness", "parity", "serving", "retrieval", "counts", "training_set",
               "stack", "timings")
SCL_VARIANTS = ("frozen", "inbatch", "queue", "hard")
PLOT_FILES = ("scl_recall.png", "freshness.png", "serving_latency.png", "timings.png")
_UNITS = (("_per_s", "/s"), ("_ms", "ms"), ("_s", "s"), ("seconds", "s"), ("_gib", "GiB"))


def format_number(x: float) -> str:
    """A number formatted by its magnitude: ``2.98e-08``, ``0.0012``, ``0.7434``, ``5.02``, ``41.7``, ``162``."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return "n/a"
    a = abs(x)
    if a == 0:
        return "0"
    if a < 1e-3:
        return f"{x:.2e}"
    if a < 0.01:
        return f"{x:.3g}"
    if a < 1:
        return f"{x:.4f}"
    if a < 10:
        return f"{x:.3g}"
    return f"{x:.1f}" if a < 100 else f"{x:.0f}"


def format_value(value: Any, key: str = "", unit: str = "") -> str:
    """One report value for a table: numbers by magnitude with the unit the key names (``_ms``: ms)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        unit = unit or next((u for suffix, u in _UNITS if key.endswith(suffix)), "")
        if not unit:
            return format_number(value)
        # a quantity with a unit reads best with 3 significant digits below 10: 0.07 s, 5.02 ms
        text = f"{value:.3g}" if isinstance(value, float) and 1e-3 <= abs(value) < 10 else format_number(value)
        return text + unit if unit.startswith("/") else f"{text} {unit}"
    if isinstance(value, list | tuple):
        if key.endswith("_ci") and len(value) == 2:
            return _ci(value)
        if len(value) <= 6 and all(not isinstance(v, Mapping | list) for v in value):
            return ", ".join(format_value(v, key, unit) for v in value)
        return f"{len(value)} values"
    return str(value)


def _num(v: Any) -> str:
    """A metric in a column of metrics: four decimals, so the column lines up."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _mag(v: Any) -> str:
    """A figure of the summary: by its magnitude; ``-`` when missing."""
    return "-" if v is None else format_number(v)


def ctr_rows(ctr: Mapping[str, Any]) -> list[list[str]]:
    """One row per CTR model: AUC, GAUC (overall and new items), ECE, GAUC delta CIs vs id_only and lightgbm."""
    rows = []
    for name in [m for m in MODEL_NAMES if m in ctr] + [m for m in ctr if m not in MODEL_NAMES]:
        m = ctr[name]
        if not isinstance(m, Mapping) or "auc" not in m:
            continue
        rows.append([name, _num(m.get("auc")), _num(m.get("gauc")), _num(m.get("auc_new")),
                     _num(m.get("gauc_new")), _num(m.get("logloss")), format_value(m.get("ece")),
                     "baseline" if name == "id_only" else _ci(m.get("gauc_delta_ci")),
                     "baseline" if name == "lightgbm" else _ci(m.get("gauc_delta_vs_lightgbm_ci"))])
    return rows


def _ci(ci: Any) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if isinstance(ci, list | tuple) and len(ci) == 2 else "-"


CTR_HEADERS = ["model", "AUC", "GAUC", "AUC new", "GAUC new", "logloss", "ECE", "GAUC - id_only (95% CI)",
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
    scl_line = (f"{_num(scl.get('recall@10'))} / {_num(scl.get('recall@10_frozen'))}"
                if scl.get("trained", True) else "not trained (no query pairs)")
    lines = [
        ("SCL recall@10 (default / frozen)", scl_line),
        ("item freshness p50 / p99 ms", f"{_mag(fr.get('item_p50_ms'))} / {_mag(fr.get('item_p99_ms'))}"),
        ("behavior freshness p99 ms", _mag(fr.get("behavior_p99_ms"))),
        ("counts milvus / feast items / users / dlq", " / ".join(
            _mag(cnt.get(k)) for k in ("milvus_items", "feast_items", "feast_users", "dlq"))),
        ("parity offline-online / serving-offline", " / ".join(
            _mag(par.get(k)) for k in ("offline_online_max_abs_diff", "serving_offline_max_abs_diff"))),
        ("serving p50 / p99 ms", f"{_mag(srv.get('p50_ms'))} / {_mag(srv.get('p99_ms'))}"),
        ("retrieval recall@100 (all / new / popular)", " / ".join(
            _num(ret.get(k)) for k in ("recall@100", "recall@100_new", "recall@100_popular"))),
        ("total seconds / peak GiB", f"{_mag(tm.get('total'))} / {_mag(tm.get('peak_rss_gib'))}"),
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


def _percentiles(samples: list[float]) -> tuple[float, float]:
    import numpy as np

    p50, p99 = np.percentile(np.asarray(samples, dtype=float), [50, 99])
    return float(p50), float(p99)


def _log_axis(axis: Any, set_scale: Any) -> None:
    """A log axis labelled in plain numbers (1, 10, 100), without crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    set_scale("log")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _plot_freshness(samples_ms: list[float], out: Path) -> Path | None:
    if not samples_ms:
        return None
    import numpy as np

    lo, hi = max(min(samples_ms), 0.1), max(max(samples_ms), 1.0)
    p50, p99 = _percentiles(samples_ms)
    with _figure(out) as ax:
        ax.hist(samples_ms, bins=np.geomspace(lo, hi * 1.01, 40), color="#3b7dd8")
        _log_axis(ax.xaxis, ax.set_xscale)
        for value, name, style in ((p50, "p50", "--"), (p99, "p99", ":")):
            ax.axvline(value, color="k", ls=style, lw=1, label=f"{name} {format_value(value, unit='ms')}")
        ax.set_xlabel("item event produced -> searchable in Milvus and readable in Feast (ms, log)")
        ax.set_ylabel("items")
        ax.set_title("Item freshness")
        ax.legend(fontsize="small")
    return out


def _plot_latency(samples_ms: Mapping[str, list[float]], out: Path) -> Path | None:
    data = {k: v for k, v in samples_ms.items() if v}
    if not data:
        return None
    with _figure(out) as ax:
        ax.boxplot(list(data.values()), whis=(1, 99), showfliers=True)
        _log_axis(ax.yaxis, ax.set_yscale)
        for x, samples in enumerate(data.values(), start=1):
            p50, p99 = _percentiles(samples)
            ax.plot([x + 0.3] * 2, [p50, p99], "o", color="#d8573b", ms=4)
            ax.annotate(f"p50 {format_number(p50)}", (x + 0.33, p50), fontsize=8, va="center")
            ax.annotate(f"p99 {format_number(p99)}", (x + 0.33, p99), fontsize=8, va="center")
        ax.set_xticks(range(1, len(data) + 1), list(data.keys()))
        ax.set_xlim(0.5, len(data) + 0.9)
        ax.set_ylabel("latency (ms, log)")
        ax.set_title("Serving latency (sample requests; whiskers p1-p99)")
    return out


def _plot_scl(scl: Mapping[str, Any], out: Path) -> Path | None:
    variants = [(v, float(r)) for v in SCL_VARIANTS if isinstance(r := scl.get(f"recall@10_{v}"), int | float)]
    if not variants:
        return None
    with _figure(out) as ax:
        ax.bar([v for v, _ in variants], [r for _, r in variants], color="#5aa469")
        ax.set_ylabel("query -> item recall@10")
        ax.set_title("SCL variants (time-held-out queries)")
    return out


def _plot_timings(timings: Mapping[str, Any], out: Path) -> Path | None:
    stages = [(k, float(v)) for k, v in timings.items()
              if k not in ("total", "peak_rss_gib") and isinstance(v, int | float)]
    if not stages:
        return None
    with _figure(out) as ax:
        names = [k for k, _ in stages][::-1]
        secs = [v for _, v in stages][::-1]
        ax.barh(names, secs, color="#8e6bbf")
        for y, v in enumerate(secs):
            ax.annotate(" " + format_value(v, unit="s"), (v, y), va="center", fontsize=8)
        ax.set_xlim(0, max(secs) * 1.2 or 1)
        total = timings.get("total")
        ax.set_xlabel("seconds" + (f" (run total {format_value(total, unit='s')})" if total else ""))
        ax.set_title("Stage timings")
    return out


def _md_section(name: str, section: Mapping[str, Any]) -> str:
    """A key/value table of one report section; nested mappings flattened as ``outer.inner``."""
    unit = "s" if name == "timings" else ""
    rows = [[key, format_value(value, key, "" if key.endswith("_gib") else unit)]
            for key, value in _flatten(section)]
    return f"\n## {name}\n\n" + _md_table(["key", "value"], rows)


def _flatten(section: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in section.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _scl_markdown(scl: Mapping[str, Any]) -> str:
    """The SCL section: one variant x metric table, then the other keys."""
    variants = [v for v in SCL_VARIANTS if any(k.endswith(f"_{v}") for k in scl)]
    metrics = list(dict.fromkeys(k[: -len(v) - 1] for k in scl for v in variants if k.endswith(f"_{v}")))
    default = scl.get("default_variant")
    rows = [[f"{v} (default)" if v == default else v, *(format_value(scl.get(f"{m}_{v}"), m) for m in metrics)]
            for v in variants]
    rest = {k: v for k, v in scl.items()
            if k not in metrics and not any(k == f"{m}_{var}" for m in metrics for var in variants)}
    text = "\n## scl\n\n"
    if rows:
        text += _md_table(["variant", *metrics], rows) + "\n"
    return text + _md_table(["key", "value"], [[k, format_value(v, k)] for k, v in _flatten(rest)])


def _markdown(report: Mapping[str, Any], run_dir: Path) -> str:
    md = ["# mmads run report\n"]
    for name in [k for k in REPORT_KEYS if k in report] + [k for k in report if k not in REPORT_KEYS]:
        sec = report[name]
        if not isinstance(sec, Mapping) or not sec:
            continue
        if name == "ctr":
            rows = ctr_rows(sec)
            if rows:
                from training.report import slice_markdown  # the cold-start tables, as in ctr_report.md

                md.append("\n## CTR ablation (test period after the cut)\n")
                md.append(_md_table(CTR_HEADERS, rows))
                md.extend(slice_markdown(sec))
        elif name == "scl":
            md.append(_scl_markdown(sec))
        else:
            md.append(_md_section(name, sec))
    images = [run_dir / p for p in PLOT_FILES if (run_dir / p).is_file()] + sorted((run_dir / "ctr").glob("*.png"))
    if images:
        md.append("\n## Plots\n")
        md += [f"![{img.stem}]({img.relative_to(run_dir)})\n" for img in images]
    return "\n".join(md)


def finish_report(report: Mapping[str, Any], run_dir: Path) -> Path:
    """Write report.json, the stage-timings plot and report.md from ``report`` as it is now.

    The main job calls this again once the stage timings are known, so report.md has every section.

    Returns:
        The path of report.json.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    _plot_timings(report.get("timings") or {}, run_dir / "timings.png")
    (run_dir / "report.md").write_text(_markdown(report, run_dir))
    logger.info("wrote %s and report.md", path)
    return path


def write_report(report: dict[str, Any], run_dir: Path, *, extras: Mapping[str, Any] | None = None) -> Path:
    """Write the plots, report.json and report.md; returns the path of report.json.

    Args:
        report: the report (keys of :data:`REPORT_KEYS`).
        run_dir: the run directory.
        extras: samples for the plots: ``freshness_samples_ms`` (list), ``latency_samples_ms``
            (name -> list). The CTR plots are picked up from ``run_dir/ctr/*.png``.
    """
    extras = extras or {}
    run_dir.mkdir(parents=True, exist_ok=True)
    _plot_scl(report.get("scl", {}), run_dir / "scl_recall.png")
    _plot_freshness(list(extras.get("freshness_samples_ms", [])), run_dir / "freshness.png")
    _plot_latency(dict(extras.get("latency_samples_ms", {})), run_dir / "serving_latency.png")
    return finish_report(report, run_dir)
