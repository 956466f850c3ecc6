"""The CTR ablation: split, train every model for every seed, evaluate, save artifacts, report.

``train_and_evaluate`` is what ``mmads train`` and the main job call. Per model and seed the test
rows are scored; metrics are averaged over seeds; the bootstrap CIs resample users and average the
GAUC difference to ``id_only`` over seeds (seed i of a model is paired with seed i of id_only).
Artifacts of the first seed are saved under ``out_dir/models/<name>/``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from infra.config import MmadsConfig
from infra.errors import ConfigError, FeatureError
from infra.side_features import configured
from training.data import TimeSplit, load_training_set, time_split
from training.lightgbm_baseline import fit_lightgbm
from training.metrics import (
    PerUserAUC,
    auc,
    bootstrap_gauc_ci,
    bootstrap_gauc_delta,
    expected_calibration_error,
    logloss,
    per_user_auc,
)
from training.models.ctr import MAKE, model_config
from training.models.inputs import CTRInputs, IdVocab, ItemVectorLookup, build_inputs
from training.models.ranker import save_model
from training.models.registry import MAKE_MODELS, MODEL_NAMES
from training.models.side import SideEncoder
from training.report import write_report
from training.slices import sliced_metrics
from training.trainer import TrainingLog, epoch_curve, fit_ctr_model, fit_make, predict_proba

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "ctr_test_predictions.parquet"
MIN_ITEM_COUNT = 2  # items with fewer training impressions share the OOV ("cold item") embedding
SAME_ENCODER_COSINE = 0.9  # one encoder's vectors agree to ~1, two encoders' to ~0


@dataclass
class _Prepared:
    split: TimeSplit
    vocab: IdVocab
    train: CTRInputs
    test: CTRInputs
    n_fit: int
    vec_dim: int
    side: SideEncoder | None = None

    def fit_and_valid(self) -> tuple[CTRInputs, CTRInputs]:
        """The fit rows and the validation slice (the train rows are in time order: fit rows first)."""
        return self.train.select(slice(0, self.n_fit)), self.train.select(slice(self.n_fit, None))


@dataclass
class AblationRuns:
    """Per model: test probabilities and training logs, one per seed."""

    proba: dict[str, list[np.ndarray]] = field(default_factory=dict)
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    epochs: dict[str, dict[str, Any]] = field(default_factory=dict)  # the one-epoch study (first seed)

    def add(self, name: str, proba: np.ndarray, log: dict[str, Any], seconds: float) -> None:
        """Record one seed of model ``name``: test probabilities, training log, training seconds."""
        self.proba.setdefault(name, []).append(proba)
        self.logs.setdefault(name, []).append(log)
        self.seconds.setdefault(name, []).append(seconds)


def check_same_encoder(frame: pd.DataFrame, lookup: ItemVectorLookup, sample: int = 2000) -> None:
    """Refuse a training set whose target vectors come from another encoder than the item vectors.

    Raises:
        FeatureError: the median cosine over up to ``sample`` items is below :data:`SAME_ENCODER_COSINE`.

    MAKE reads the target's vector from the training set and the history's from ``item_vectors``;
    from two encoders they would be compared across unrelated spaces, silently (a training set
    built with the SCL model, trained with the frozen one, cost MAKE 0.025 GAUC).
    """
    rows = frame.loc[frame["has_emb"].astype(bool), ["item_id", "item_emb"]].drop_duplicates("item_id").head(sample)
    median, n = lookup.agreement(rows["item_id"].to_numpy(np.int64), rows["item_emb"].tolist())
    if n and median < SAME_ENCODER_COSINE:
        raise FeatureError(
            f"the training set's item vectors are not the given item vectors (median cosine {median:.3f} over "
            f"{n} items): it was built with another encoder. Pass the encoder it was built with (--model), "
            "or rebuild the training set")


def _prepare(train_set: pd.DataFrame | Path, item_vectors: pd.DataFrame, cfg: MmadsConfig,
             cut: pd.Timestamp | None, holdout: str) -> _Prepared:
    frame = load_training_set(train_set, cfg.model.n_tiers)
    split = time_split(frame, cfg, item_vectors, cut=cut)
    if holdout == "validation":  # the validation slice plays the test: fit before it, never read the test
        split = time_split(split.train, cfg, item_vectors, cut=split.valid_start)
    vocab = IdVocab.fit(split.train, min_item_count=MIN_ITEM_COUNT)
    lookup = ItemVectorLookup.from_frame(item_vectors)
    check_same_encoder(frame, lookup)
    # side-feature vocabularies and statistics: the training period's rows only, like the id vocabulary
    specs = configured(cfg)
    side = SideEncoder.fit(split.train, specs) if specs else None

    def build(f: pd.DataFrame) -> CTRInputs:
        return build_inputs(f, lookup, vocab, n_tiers=cfg.model.n_tiers, history_len=cfg.model.history_len,
                            side=side)

    n_fit = int((split.train["ts"] < split.valid_start).sum())  # train is sorted: fit rows come first
    return _Prepared(split, vocab, build(split.train), build(split.test), n_fit, lookup.dim, side)


def _epoch_study(prep: _Prepared, cfg: MmadsConfig, seed: int) -> dict[str, Any]:
    """id_only trained 1..``epoch_study`` epochs on the fit rows: AUC on the validation slice and the test."""
    ctr = cfg.model.ctr
    mc = model_config("id_only", prep.vocab, id_dim=ctr.id_dim, mlp_hidden=ctr.mlp_hidden,
                      n_tiers=cfg.model.n_tiers, vec_dim=prep.vec_dim, side=prep.side)
    fit, valid = prep.fit_and_valid()
    curves = epoch_curve(mc, fit, {"valid": valid, "test": prep.test}, ctr, seed=seed, epochs=ctr.epoch_study)
    return {"epochs": list(range(1, ctr.epoch_study + 1)), "valid_auc": curves["valid"], "test_auc": curves["test"]}


def _train_seed(prep: _Prepared, cfg: MmadsConfig, models: Sequence[str], seed: int, runs: AblationRuns,
                save_dir: Path | None, progress: bool) -> None:
    ctr = cfg.model.ctr
    make: MAKE | None = None
    make_log = TrainingLog()
    study = save_dir is not None and ctr.epoch_study > 0  # the first seed only
    if study and "id_only" in models:
        runs.epochs["id_only"] = _epoch_study(prep, cfg, seed)
    if any(m in MAKE_MODELS for m in models):
        mc = model_config("make", prep.vocab, id_dim=ctr.id_dim, mlp_hidden=ctr.mlp_hidden,
                          n_tiers=cfg.model.n_tiers, vec_dim=prep.vec_dim)
        assert mc.make is not None  # "make" always carries a MAKE part
        fit, valid = prep.fit_and_valid()
        make, make_log = fit_make(fit, valid, mc.make, ctr, seed=seed, progress=progress,
                                  probe=prep.test if study else None)
        if study:
            runs.epochs["make"] = {"epochs": list(range(1, make_log.epochs + 1)), "valid_auc": make_log.val_auc,
                                   "test_auc": make_log.probe_auc, "best_epoch": make_log.best_epoch}
    for name in models:
        if name == "lightgbm":
            res = fit_lightgbm(prep.split, cfg.model.n_tiers, ctr, seed=seed, side=prep.side)
            runs.add(name, res.test_proba, {"valid_logloss": res.valid_logloss}, res.seconds)
            if save_dir is not None:
                (save_dir / name).mkdir(parents=True, exist_ok=True)
                res.booster.save_model(str(save_dir / name / "model.txt"))
            continue
        mc = model_config(name, prep.vocab, id_dim=ctr.id_dim, mlp_hidden=ctr.mlp_hidden,
                          n_tiers=cfg.model.n_tiers, vec_dim=prep.vec_dim, side=prep.side)
        with_make = make if mc.make is not None else None
        model, log = fit_ctr_model(mc, prep.train, ctr, seed=seed, make=with_make, progress=progress, desc=name)
        seconds = log.seconds + (make_log.seconds if with_make is not None else 0.0)
        entry = {"id_stage": log.to_dict(), **({"make_pretrain": make_log.to_dict()} if with_make else {})}
        runs.add(name, predict_proba(model, prep.test), entry, seconds)
        if save_dir is not None:
            save_model(model, prep.vocab, save_dir / name, name=name, n_tiers=cfg.model.n_tiers,
                       history_len=cfg.model.history_len, vec_dim=prep.vec_dim, extra={"seed": seed},
                       side=prep.side)


def _per_user(test: pd.DataFrame, proba: np.ndarray, rows: np.ndarray) -> PerUserAUC:
    return per_user_auc(test["user_id"].to_numpy()[rows], test["clicked"].to_numpy()[rows], proba[rows])


def _gains(section: dict[str, dict[str, Any]], base: str = "id_only") -> None:
    """Per model, GAUC gain over ``base`` overall and on new items and their ratio (the paper's is ~2)."""
    if base not in section:
        return
    b = section[base]
    for name, row in section.items():
        if name == base:
            continue
        row["gauc_gain"] = row["gauc"] - b["gauc"]
        row["gauc_new_gain"] = row["gauc_new"] - b["gauc_new"]
        ratio = row["gauc_new_gain"] / row["gauc_gain"] if row["gauc_gain"] else float("nan")
        row["new_to_overall_gain_ratio"] = ratio


def _metrics(test: pd.DataFrame, train: pd.DataFrame, runs: AblationRuns, n_boot: int,
             seed: int) -> dict[str, dict[str, Any]]:
    y = test["clicked"].to_numpy()
    new = test["is_new"].to_numpy(bool)
    every = np.ones(len(test), dtype=bool)
    per_user = {m: [(_per_user(test, p, every), _per_user(test, p, new)) for p in ps] for m, ps in runs.proba.items()}
    out: dict[str, dict[str, Any]] = {}
    for name, probas in runs.proba.items():
        gaucs = [pu[0].gauc for pu in per_user[name]]
        row: dict[str, Any] = {
            "auc": float(np.mean([auc(y, p) for p in probas])),
            "gauc": float(np.mean(gaucs)),
            "auc_new": float(np.mean([auc(y[new], p[new]) for p in probas])) if new.any() else float("nan"),
            "gauc_new": float(np.mean([pu[1].gauc for pu in per_user[name]])),
            "logloss": float(np.mean([logloss(y, p) for p in probas])),
            "gauc_std": float(np.std(gaucs)),
            "gauc_new_std": float(np.std([pu[1].gauc for pu in per_user[name]])),
            "train_seconds": float(np.mean(runs.seconds[name])),
            "gauc_ci": list(bootstrap_gauc_ci([pu[0] for pu in per_user[name]], n_resamples=n_boot, seed=seed)),
            "gauc_new_ci": list(bootstrap_gauc_ci([pu[1] for pu in per_user[name]], n_resamples=n_boot,
                                                  seed=seed)),
        }
        for base, suffix in (("id_only", ""), ("lightgbm", "_vs_lightgbm")):
            if base not in per_user or (base == "lightgbm" and name == "lightgbm"):
                continue
            for k, key in ((0, f"gauc_delta{suffix}_ci"), (1, f"gauc_new_delta{suffix}_ci")):
                pairs = [pu[k] for pu in per_user[name]], [pu[k] for pu in per_user[base]]
                row[key] = list(bootstrap_gauc_delta(*pairs, n_resamples=n_boot, seed=seed))
        out[name] = row
    _gains(out)
    for name, sliced in sliced_metrics(test, train, runs.proba, n_boot=n_boot, seed=seed).items():
        out[name].update(sliced)
    for name, curve in runs.epochs.items():
        if name in out:
            out[name]["auc_by_epoch"] = curve
    return out


def train_and_evaluate(
    train_set: pd.DataFrame | Path, item_vectors: pd.DataFrame, cfg: MmadsConfig, out_dir: Path, *,
    models: Sequence[str] = MODEL_NAMES, seeds: int | None = None, progress: bool = True,
    cut: pd.Timestamp | None = None, holdout: str = "test", nproc: int | None = None,
) -> dict[str, Any]:
    """Train and evaluate the ablation; write artifacts, ``ctr_report.json``/``.md`` and plots.

    Also writes ``out_dir/ctr_test_predictions.parquet``: the test rows' keys (``user_id``,
    ``item_id``, ``ts``, ``clicked``, ``is_new``) and the first seed's probability per model, in the
    order of the test rows (the training set sorted by ``ts``, stable).

    Args:
        train_set: the training-set frame or parquet path (training-set contract).
        item_vectors: the item-vector table (``item_id``, ``emb``, ``category``, ``created_at``).
        cfg: configuration (``model``, ``model.ctr``, ``data``).
        out_dir: run directory; models go to ``out_dir/models/<name>/``.
        models: which of ``id_only, simtier, make, make_ft, simtier_make, lightgbm`` to run.
        seeds: number of seeds (default ``cfg.model.ctr.seeds``); seed i is ``cfg.model.seed + i``.
        progress: show progress bars.
        cut: the dataset's one time cut (:func:`infra.dataset.dataset_cut`); None computes it from
            ``cfg.data`` and the training set's impression times.
        holdout: ``"test"`` scores the rows after the cut; ``"validation"`` scores the validation
            slice (the last ``validation_fraction`` of the rows before the cut) with models fitted on
            the rows before it, and never reads a row at or after the cut ("new" items are then those
            created after the slice starts).
        nproc: processes training the torch models data-parallel (default ``cfg.model.ctr.nproc``;
            under ``torchrun`` its ``WORLD_SIZE`` wins): above 1, :func:`training.distributed.train_data_parallel`
            runs the same ablation with each process streaming its shard of the training set; rank 0
            writes everything and the other ranks return an empty dict.

    Returns:
        The report's "ctr" section: per model ``auc``, ``gauc``, ``auc_new``, ``gauc_new``,
        ``logloss``, ``ece``, ``gauc_std`` and ``gauc_new_std`` (over seeds), ``train_seconds``,
        ``gauc_ci``, ``gauc_new_ci`` and, when id_only ran, ``gauc_gain``, ``gauc_new_gain``,
        ``new_to_overall_gain_ratio``,
        ``gauc_delta_ci`` and ``gauc_new_delta_ci`` (95% bootstrap CIs, [lo, hi]); for the torch models
        when lightgbm ran, ``gauc_delta_vs_lightgbm_ci`` and ``gauc_new_delta_vs_lightgbm_ci``. The
        cold-start curve (:func:`training.slices.sliced_metrics`): ``gauc_by_item_age``,
        ``gauc_by_train_impressions`` (bucket -> GAUC), ``gauc_gain_by_*`` (bucket -> delta over
        id_only and CI), ``rows_by_*``. The one-epoch study (``model.ctr.epoch_study`` > 0, first
        seed): ``id_only.auc_by_epoch`` and ``make.auc_by_epoch`` (``epochs``, ``valid_auc``,
        ``test_auc``; MAKE's as its early-stopped schedule ran, with ``best_epoch``).
        Every model's row also has ``side_features``, the names of the side features it used
        (``cfg.data.side_features``, fitted on the training period).
    """
    if holdout not in ("test", "validation"):
        raise ConfigError(f"holdout must be 'test' or 'validation', got {holdout!r}")
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown or not models:
        raise ConfigError(f"unknown CTR models {unknown}; choose from {list(MODEL_NAMES)}")
    world = ctr_processes(cfg, nproc)
    if world > 1:
        from training.distributed import train_data_parallel  # torch.distributed only when asked for

        return train_data_parallel(train_set, item_vectors, cfg, Path(out_dir), models=list(models),
                                   seeds=seeds or cfg.model.ctr.seeds, progress=progress, cut=cut, holdout=holdout,
                                   nproc=world)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    n_seeds = seeds or cfg.model.ctr.seeds
    start = time.perf_counter()
    prep = _prepare(train_set, item_vectors, cfg, cut, holdout)
    runs = AblationRuns()
    out_dir = Path(out_dir)
    for i in tqdm(range(n_seeds), desc="seeds", disable=not progress or n_seeds == 1):
        _train_seed(prep, cfg, list(models), cfg.model.seed + i, runs,
                    out_dir / "models" if i == 0 else None, progress)
    return finish(out_dir, cfg, prep.split, runs, n_fit=prep.n_fit, side=prep.side, holdout=holdout,
                  n_seeds=n_seeds, start=start)


def ctr_processes(cfg: MmadsConfig, nproc: int | None = None) -> int:
    """How many processes train the torch models: ``WORLD_SIZE`` under ``torchrun``, else ``nproc`` or the config."""
    env = os.environ.get("WORLD_SIZE")
    if env is not None:
        return int(env)
    world = cfg.model.ctr.nproc if nproc is None else nproc
    if world < 1:
        raise ConfigError(f"nproc must be at least 1, got {world}")
    return world


def finish(out_dir: Path, cfg: MmadsConfig, split: TimeSplit, runs: AblationRuns, *, n_fit: int,
           side: SideEncoder | None, holdout: str, n_seeds: int, start: float) -> dict[str, Any]:
    """Metrics of every run, the report files and the test predictions (one process, or rank 0).

    Args:
        out_dir: the run directory.
        cfg: configuration (``model.seed``, ``model.ctr.bootstrap``).
        split: the time split; ``split.train`` needs only ``item_id`` (training impressions per item).
        runs: every model's test probabilities and training logs, per seed.
        n_fit: training rows before the validation slice.
        side: the fitted side-feature encoder, or None.
        holdout: what was scored (``test`` or ``validation``).
        n_seeds: the number of seeds.
        start: ``time.perf_counter()`` when the ablation began.

    Returns:
        The report's "ctr" section (see :func:`train_and_evaluate`).
    """
    section = _metrics(split.test, split.train, runs, cfg.model.ctr.bootstrap, cfg.model.seed)
    labels = split.test["clicked"].to_numpy()
    for name, per_seed in runs.proba.items():  # calibration, mean over seeds
        section[name]["ece"] = float(np.mean([expected_calibration_error(labels, p) for p in per_seed]))
    side_names = side.names if side else []
    for row in section.values():
        row["side_features"] = list(side_names)  # every model of the ablation uses all of them
    meta = {
        "cut": str(split.cut), "valid_start": str(split.valid_start), "n_train": len(split.train),
        "n_fit": n_fit, "n_test": len(split.test), "n_test_new": int(split.test["is_new"].sum()),
        "holdout": holdout, "seeds": n_seeds, "bootstrap": cfg.model.ctr.bootstrap,
        "seconds": time.perf_counter() - start,
        "side_features": [s.model_dump() for s in side.specs] if side else [],
    }
    first = {m: p[0] for m, p in runs.proba.items()}
    write_report(out_dir, section, meta, runs.logs, split.test["clicked"].to_numpy(), first)
    _write_predictions(out_dir / PREDICTIONS_FILE, split.test, first)
    return section


def _write_predictions(path: Path, test: pd.DataFrame, proba: dict[str, np.ndarray]) -> None:
    """The first seed's test probabilities per model (for parity checks against serving)."""
    keys = test[["user_id", "item_id", "ts", "clicked", "is_new"]].reset_index(drop=True)
    pd.concat([keys, pd.DataFrame(proba)], axis=1).to_parquet(path, index=False)
