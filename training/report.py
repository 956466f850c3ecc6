"""The CTR report: ``ctr_report.json``, the ``ctr_report.md`` ablation table and PNG plots.

Plots: ``gauc_by_model.png`` (GAUC overall and on new items with 95% bootstrap CIs),
``calibration.png`` (mean prediction vs click rate per decile, first seed, zoomed to the
predictions' range, ECE per model),
``training_curves.png`` (training loss per model, MAKE's validation AUC per epoch),
``gain_by_item_age.png`` (the cold-start curve: GAUC gain over id_only by item age and by training
impressions, 95% CIs) and ``epochs.png`` (the one-epoch study: id_only and MAKE AUC per epoch).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from training.metrics import calibration_curve, expected_calibration_error  # noqa: E402

logger = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _delta(row: Mapping[str, Any], base: Mapping[str, Any] | None, key: str, ci_key: str) -> str:
    if base is None or ci_key not in row:
        return "n/a"
    if row is base:
        return "(baseline)"
    d = row[key] - base[key]
    lo, hi = row[ci_key]
    return f"{d:+.4f} [{_fmt(lo)}, {_fmt(hi)}]"


def _side_line(meta: Mapping[str, Any]) -> str:
    specs = meta.get("side_features") or []
    if not specs:
        return "Side features: none."
    named = ", ".join(f"{s['name']} ({s['kind']}, {s['source']})" for s in specs)
    return f"Side features used by every model: {named}."


def ablation_markdown(section: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """The report.md ablation table (deltas vs id_only and vs lightgbm with 95% bootstrap CIs)."""
    base = section.get("id_only")
    lines = [
        "# CTR ablation",
        "",
        f"Split at {meta.get('cut')}: {meta.get('n_train')} train rows (validation slice from "
        f"{meta.get('valid_start')}), {meta.get('n_test')} test rows, {meta.get('n_test_new')} on new "
        f"items. Mean over {meta.get('seeds')} seed(s); CIs: {meta.get('bootstrap')} bootstrap resamples "
        "of users.",
        "",
        _side_line(meta),
        "",
        "| model | AUC | GAUC | ΔGAUC vs id_only [95% CI] | ΔGAUC vs lightgbm [95% CI] | AUC new | GAUC new "
        "| ΔGAUC new vs id_only [95% CI] | logloss | GAUC std | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lgbm = section.get("lightgbm")
    for name, row in section.items():
        vs_lgbm = _delta(row, lgbm, "gauc", "gauc_delta_vs_lightgbm_ci") if name != "lightgbm" else "-"
        lines.append(
            f"| {name} | {_fmt(row['auc'])} | {_fmt(row['gauc'])} | {_delta(row, base, 'gauc', 'gauc_delta_ci')} "
            f"| {vs_lgbm} | {_fmt(row['auc_new'])} | {_fmt(row['gauc_new'])} "
            f"| {_delta(row, base, 'gauc_new', 'gauc_new_delta_ci')} | {_fmt(row['logloss'])} "
            f"| {_fmt(row['gauc_std'])} | {row['train_seconds']:.1f} |"
        )
    lines += slice_markdown(section)
    return "\n".join(lines) + "\n"


def slice_markdown(section: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The cold-start tables: GAUC (gain over id_only [95% CI]) per bucket and model."""
    out: list[str] = []
    for slicing, title in (("item_age", "item age at impression"),
                           ("train_impressions", "the item's training impressions")):
        key = f"gauc_by_{slicing}"
        models = [m for m, row in section.items() if key in row]
        if not models:
            continue
        labels = list(section[models[0]][key])
        rows = section[models[0]].get(f"rows_by_{slicing}", {})
        out += ["", f"## GAUC by {title} (gain over id_only [95% CI])", "",
                "| model | " + " | ".join(f"{lab} ({rows.get(lab, '?')} rows)" for lab in labels) + " |",
                "| --- |" + " --- |" * len(labels)]
        for m in models:
            gains = section[m].get(f"gauc_gain_by_{slicing}", {})
            cells = []
            for lab in labels:
                g = gains.get(lab)
                tail = "" if g is None or g["delta"] is None else (
                    f" ({g['delta']:+.4f} [{_fmt(g['ci'][0])}, {_fmt(g['ci'][1])}])")
                cells.append(_fmt(section[m][key][lab]) + tail)
            out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out


def plot_gauc(section: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Bars of GAUC overall and on new items, error bars = each GAUC's 95% bootstrap CI."""
    names = list(section)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 4))
    for shift, key, label in ((-0.2, "gauc", "all test rows"), (0.2, "gauc_new", "new items")):
        values = np.array([section[n][key] for n in names], dtype=float)
        ci = np.array([section[n][f"{key}_ci"] for n in names], dtype=float).reshape(len(names), 2)
        err = np.nan_to_num(np.abs(ci - values[:, None]).T)
        ax.bar(x + shift, np.nan_to_num(values), 0.4, yerr=err, capsize=3, label=label)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel("GAUC")
    ax.set_ylim(0.4, 1.0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_calibration(labels: np.ndarray, proba: Mapping[str, np.ndarray], path: Path) -> None:
    """Reliability curves (deciles of the prediction) for each model, with its ECE in the legend.

    The axes span the predictions' range (clicks are rare, so a [0, 1] square would crowd every
    curve into its corner); the dashed diagonal is perfect calibration.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, p in proba.items():
        mean_pred, rate = calibration_curve(labels, p)
        top = max(top, float(np.max(mean_pred, initial=0.0)), float(np.max(rate, initial=0.0)))
        ece = expected_calibration_error(labels, p)
        ax.plot(mean_pred, rate, marker="o", label=f"{name} (ECE {ece:.2g})")
    top = min(1.0, 1.1 * top) or 1.0
    ax.plot([0, top], [0, top], "k--", lw=1)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted click probability (decile)")
    ax.set_ylabel("observed click rate")
    ax.set_title("Calibration, first seed")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training(logs: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> None:
    """Training loss per model (first seed) and MAKE's validation AUC per pre-training epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, per_seed in logs.items():
        stage = per_seed[0].get("id_stage")
        if stage:
            left.plot(stage["steps"], stage["losses"], label=name)
        pre = per_seed[0].get("make_pretrain")
        if pre and name == "make":
            right.plot(range(1, len(pre["val_auc"]) + 1), pre["val_auc"], marker="o", label="MAKE")
    left.set_xlabel("step")
    left.set_ylabel("training log loss")
    left.legend()
    right.set_xlabel("MAKE pre-training epoch")
    right.set_ylabel("validation AUC")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out_dir: Path, section: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any],
                 logs: Mapping[str, Sequence[Mapping[str, Any]]], labels: np.ndarray,
                 proba: Mapping[str, np.ndarray]) -> None:
    """Write ``ctr_report.json``, ``ctr_report.md`` and the three PNG plots into ``out_dir``.

    Args:
        out_dir: the run directory (created).
        section: per-model metrics (the report's "ctr" section).
        meta: split sizes, cut, seeds, bootstrap count.
        logs: per model, one training log dict per seed.
        labels: test labels, shape (R,).
        proba: per model, the first seed's test probabilities, shape (R,).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"ctr": section, "split": meta, "training": logs}
    (out_dir / "ctr_report.json").write_text(json.dumps(_clean(doc), indent=2))
    (out_dir / "ctr_report.md").write_text(ablation_markdown(section, meta))
    plot_gauc(section, out_dir / "gauc_by_model.png")
    plot_calibration(labels, proba, out_dir / "calibration.png")
    plot_training(logs, out_dir / "training_curves.png")
    if any("gauc_gain_by_item_age" in row for row in section.values()):
        plot_gain_by_item_age(section, out_dir / "gain_by_item_age.png")
    if any("auc_by_epoch" in row for row in section.values()):
        plot_epochs(section, out_dir / "epochs.png")
    logger.info("wrote the CTR report to %s", out_dir)


def plot_gain_by_item_age(section: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """GAUC gain over id_only per bucket of item age and of training impressions, 95% CI bars."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, slicing, xlabel in ((axes[0], "item_age", "item age at impression"),
                                (axes[1], "train_impressions", "item's training impressions")):
        models = [m for m, row in section.items() if f"gauc_gain_by_{slicing}" in row]
        for k, m in enumerate(models):
            gains = section[m][f"gauc_gain_by_{slicing}"]
            labels = list(gains)
            x = np.arange(len(labels)) + (k - (len(models) - 1) / 2) * 0.08
            d = np.array([np.nan if gains[b]["delta"] is None else gains[b]["delta"] for b in labels], float)
            ci = np.array([[np.nan if v is None else v for v in gains[b]["ci"]] for b in labels], float)
            err = np.nan_to_num(np.abs(ci - d[:, None]).T)
            ax.errorbar(x, d, yerr=err, marker="o", capsize=3, label=m)
            ax.set_xticks(np.arange(len(labels)), labels)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("GAUC gain over id_only")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_epochs(section: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """AUC on the validation slice and on the test after each epoch: id_only and MAKE's module."""
    curves = [(m, section[m]["auc_by_epoch"]) for m in ("id_only", "make") if "auc_by_epoch" in section.get(m, {})]
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves, strict=True):
        for key, label in (("valid_auc", "validation slice"), ("test_auc", "test")):
            if c.get(key):
                ax.plot(c["epochs"][:len(c[key])], c[key], marker="o", label=label)
        if c.get("best_epoch"):
            ax.axvline(c["best_epoch"], color="grey", ls="--", lw=1, label="kept epoch")
        ax.set_xticks(c["epochs"])
        ax.set_title("id_only (ID model)" if name == "id_only" else "MAKE (multimodal module)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("AUC")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
