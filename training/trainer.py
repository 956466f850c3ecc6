"""Training loops and the MAKE schedule.

Schedule (paper; docs/architecture.md, "Models"):

1. **MAKE pre-training.** MAKE alone (target multimodal vector attending over the history's vectors,
   then an MLP) trains on the CTR objective on the *fit* rows (training period minus the validation
   slice) for up to ``cfg.model.ctr.make_epochs`` epochs. After each epoch its AUC on the validation
   slice is measured; training stops after ``make_patience`` epochs without improvement and the best
   epoch's weights are kept. One pre-trained MAKE per seed is shared by ``make``, ``make_ft`` and
   ``simtier_make``.
2. **ID stage.** The ID model (embeddings + DIN attention + MLP, plus SimTier for ``simtier_make``)
   takes MAKE's attention output, intermediate layer and logit as extra inputs and trains for
   exactly ONE epoch over all training rows (ID embeddings overfit after one). ``make`` and
   ``simtier_make`` keep MAKE frozen (its outputs computed without gradients); ``make_ft`` trains
   MAKE's parameters jointly in that epoch.

``id_only`` and ``simtier`` train ``cfg.model.ctr.id_epochs`` epochs (default 1) over all training
rows. Nothing is tuned on the test rows.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from infra.config import CTRConfig
from training.data import batch_loader
from training.metrics import auc
from training.models.ctr import MAKE, CTRModel, CTRModelConfig, MakeConfig, predict_logits
from training.models.inputs import CTRInputs

logger = logging.getLogger(__name__)

LOG_EVERY = 20  # steps per point of the training curve
EVAL_BATCH = 8192

EpochBatches = Callable[[int], Iterable[CTRInputs]]
"""A batch source: the batches of epoch ``e`` (0-based) of one schedule."""
Scorer = Callable[[nn.Module], float]
"""An AUC of a model on some labelled rows (every rank gets the same value under data parallelism)."""
Wrapper = Callable[[nn.Module], nn.Module]
"""What trains a module: the module itself, or a ``DistributedDataParallel`` around it."""


def _unwrapped(module: nn.Module) -> nn.Module:
    return module


class CTRLoss(nn.Module):
    """The thin training wrapper that owns the loss: mean binary cross-entropy on logits.

    Args:
        model: any module mapping a CTRInputs batch to logits (B,).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, batch: CTRInputs) -> torch.Tensor:
        """Scalar loss of a labelled batch."""
        if batch.label is None:
            raise ValueError("CTRLoss needs a labelled batch")
        return self.bce(self.model(batch), batch.label)


@dataclass
class TrainingLog:
    """What one training run did (the report's training curves and timings).

    Attributes:
        steps, losses: the training curve (mean loss over each LOG_EVERY steps).
        epochs: completed epochs; samples: rows trained on; seconds: wall time in the loops.
        val_auc: validation AUC after each epoch (MAKE pre-training only).
        probe_auc: AUC on the probe rows after each epoch (MAKE pre-training given a probe; the
            epoch study's test curve, never used to choose anything).
        best_epoch: the epoch whose weights were kept (MAKE pre-training only).
    """

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    epochs: int = 0
    samples: int = 0
    seconds: float = 0.0
    val_auc: list[float] = field(default_factory=list)
    probe_auc: list[float] = field(default_factory=list)
    best_epoch: int = 0

    @property
    def samples_per_s(self) -> float:
        """Training throughput."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {**asdict(self), "samples_per_s": self.samples_per_s}


def run_epoch(
    model: nn.Module, batches: Iterable[CTRInputs], optimizer: torch.optim.Optimizer, *, log: TrainingLog,
    progress: bool = False, desc: str = "train",
) -> None:
    """One pass over ``batches`` (an epoch, in-memory or a data-parallel rank's stream), appending to ``log``.

    ``model`` may be a ``DistributedDataParallel`` wrapper: its backward pass then averages the
    gradients over the ranks.
    """
    loss_fn = CTRLoss(model)
    model.train()
    running, n_run = 0.0, 0
    start = time.perf_counter()
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += float(loss.detach())
        n_run += 1
        log.samples += len(batch)
        if n_run == LOG_EVERY:
            log.steps.append(log.steps[-1] + LOG_EVERY if log.steps else LOG_EVERY)
            log.losses.append(running / n_run)
            running, n_run = 0.0, 0
    log.seconds += time.perf_counter() - start
    log.epochs += 1


def shuffled_epochs(data: CTRInputs, batch_size: int, seed: int) -> EpochBatches:
    """The in-memory batch source: epoch ``e`` is a shuffled pass with seed ``seed + 7919 * e``."""
    return lambda epoch: batch_loader(data, batch_size, shuffle=True, seed=seed + 7919 * epoch)


def train_epoch(
    model: nn.Module, data: CTRInputs, optimizer: torch.optim.Optimizer, *, batch_size: int, seed: int,
    log: TrainingLog, progress: bool = False, desc: str = "train",
) -> None:
    """One shuffled pass over ``data``, appending to ``log``."""
    run_epoch(model, shuffled_epochs(data, batch_size, seed)(log.epochs), optimizer, log=log, progress=progress,
              desc=desc)


def predict_proba(model: nn.Module, data: CTRInputs, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Click probabilities of every row, shape (R,) (the same computation as ``Ranker.score``)."""
    return torch.sigmoid(predict_logits(model, data, batch_size)).numpy().astype(np.float64)


def _auc_of(model: nn.Module, data: CTRInputs) -> float:
    """AUC of ``model`` on the labelled rows ``data``."""
    return auc(data.label.numpy() if data.label is not None else np.zeros(0), predict_logits(model, data).numpy())


def fit_make(
    fit: CTRInputs, valid: CTRInputs, make_cfg: MakeConfig, ctr: CTRConfig, *, seed: int, progress: bool = False,
    probe: CTRInputs | None = None,
) -> tuple[MAKE, TrainingLog]:
    """Pre-train MAKE alone with early stopping on the validation slice.

    Args:
        fit: training rows before the validation slice.
        valid: the validation slice (labelled).
        make_cfg: MAKE's configuration.
        ctr: epochs (``make_epochs``), patience, batch size, learning rate.
        seed: initialisation and shuffling seed.
        progress: show progress bars.
        probe: labelled rows whose AUC is recorded after each epoch (``log.probe_auc``) and never
            read by the schedule.

    Returns:
        MAKE with the best epoch's weights, and its training log.
    """
    return make_schedule(
        make_cfg, ctr, seed=seed, epochs=shuffled_epochs(fit, ctr.batch_size, seed),
        score=lambda m: _auc_of(m, valid), probe=None if probe is None else (lambda m: _auc_of(m, probe)),
        progress=progress)


def make_schedule(
    make_cfg: MakeConfig, ctr: CTRConfig, *, seed: int, epochs: EpochBatches, score: Scorer,
    probe: Scorer | None = None, wrap: Wrapper = _unwrapped, progress: bool = False,
) -> tuple[MAKE, TrainingLog]:
    """MAKE's multi-epoch schedule over any batch source (:func:`fit_make` is the in-memory case).

    Args:
        make_cfg: MAKE's configuration.
        ctr: ``make_epochs``, ``make_patience`` and the learning rate.
        seed: initialisation seed.
        epochs: the fit rows' batches of each epoch.
        score: validation AUC of the (unwrapped) model after an epoch; early stopping reads it.
        probe: an AUC recorded after each epoch and never read by the schedule.
        wrap: what trains the module (identity, or ``DistributedDataParallel`` around it).
        progress: show progress bars.

    Returns:
        MAKE with the best epoch's weights, and its training log.
    """
    torch.manual_seed(seed)
    make = MAKE(make_cfg)
    trained = wrap(make)
    opt = torch.optim.Adam(make.parameters(), lr=ctr.lr)
    log = TrainingLog()
    best, best_state, stale = -np.inf, copy.deepcopy(make.state_dict()), 0
    for epoch in range(ctr.make_epochs):
        run_epoch(trained, epochs(log.epochs), opt, log=log, progress=progress, desc=f"MAKE epoch {epoch + 1}")
        auc_now = score(make)
        log.val_auc.append(auc_now)
        if probe is not None:
            log.probe_auc.append(probe(make))
        logger.info("MAKE epoch %d: validation AUC %.4f", epoch + 1, auc_now)
        if auc_now > best:
            best, best_state, stale, log.best_epoch = auc_now, copy.deepcopy(make.state_dict()), 0, epoch + 1
        else:
            stale += 1
            if stale >= ctr.make_patience:
                break
    make.load_state_dict(best_state)
    return make, log


def _param_groups(model: CTRModel, ctr: CTRConfig) -> list[dict[str, Any]]:
    """The ID and side-feature embedding tables at ``ctr.emb_lr`` (when set), the rest at ``ctr.lr``.

    An id seen k times in one epoch gets k updates: with tens of impressions per item, embeddings
    need a larger step than the dense layers to learn anything in the one epoch ID models get.
    """
    tables = {id(t.weight) for t in (model.user_emb, model.item_emb, model.category_emb, *model.side_emb)}
    emb = [p for p in model.parameters() if p.requires_grad and id(p) in tables]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in tables]
    if ctr.emb_lr is None:
        return [{"params": emb + rest}]
    return [{"params": emb, "lr": ctr.emb_lr}, {"params": rest}]


def fit_ctr_model(
    model_cfg: CTRModelConfig, train: CTRInputs, ctr: CTRConfig, *, seed: int, make: MAKE | None = None,
    progress: bool = False, desc: str = "ID model",
) -> tuple[CTRModel, TrainingLog]:
    """Train an ID-based model: ``id_epochs`` epochs, or exactly one when it carries MAKE.

    Args:
        model_cfg: the model (its ``make`` part must match ``make``'s config).
        train: all training rows.
        ctr: epochs, batch size, learning rate.
        seed: initialisation and shuffling seed.
        make: the pre-trained MAKE whose weights are copied in (required iff the model has MAKE).
        progress: show progress bars.
        desc: progress bar label.

    Returns:
        The trained model (eval mode) and its training log.
    """
    return ctr_schedule(model_cfg, ctr, seed=seed, epochs=shuffled_epochs(train, ctr.batch_size, seed), make=make,
                        progress=progress, desc=desc)


def ctr_schedule(
    model_cfg: CTRModelConfig, ctr: CTRConfig, *, seed: int, epochs: EpochBatches, make: MAKE | None = None,
    wrap: Wrapper = _unwrapped, progress: bool = False, desc: str = "ID model",
) -> tuple[CTRModel, TrainingLog]:
    """The ID model's schedule over any batch source (:func:`fit_ctr_model` is the in-memory case).

    ``id_epochs`` epochs, or exactly one when the model carries MAKE; ``wrap`` as in :func:`make_schedule`.

    Returns:
        The trained (unwrapped) model in eval mode and its training log.
    """
    if (make is None) != (model_cfg.make is None):
        raise ValueError("pass a pre-trained MAKE exactly when the model config has a MAKE part")
    torch.manual_seed(seed)
    model = CTRModel(replace(model_cfg, id_dropout=ctr.id_dropout))
    if make is not None and model.make is not None:
        model.make.load_state_dict(make.state_dict())
        model.make.requires_grad_(model_cfg.finetune_make)
    trained = wrap(model)
    opt = torch.optim.Adam(_param_groups(model, ctr), lr=ctr.lr)
    log = TrainingLog()
    n_epochs = 1 if make is not None else ctr.id_epochs
    for epoch in range(n_epochs):
        run_epoch(trained, epochs(log.epochs), opt, log=log, progress=progress, desc=f"{desc} epoch {epoch + 1}")
    model.eval()
    return model, log


def epoch_curve(
    model_cfg: CTRModelConfig, fit: CTRInputs, probes: dict[str, CTRInputs], ctr: CTRConfig, *, seed: int,
    epochs: int,
) -> dict[str, list[float]]:
    """AUC on each probe after each of ``epochs`` epochs of an ID model (no MAKE) trained on ``fit``.

    The one-epoch study: the schedule trains ID models one epoch; this shows what further epochs do.

    Returns:
        Per probe name, ``epochs`` AUCs (after epoch 1, 2, ...).
    """
    scorers: dict[str, Scorer] = {name: functools.partial(_auc_of, data=data) for name, data in probes.items()}
    return curve_schedule(model_cfg, ctr, seed=seed, n_epochs=epochs,
                          epochs=shuffled_epochs(fit, ctr.batch_size, seed), probes=scorers)


def curve_schedule(
    model_cfg: CTRModelConfig, ctr: CTRConfig, *, seed: int, n_epochs: int, epochs: EpochBatches,
    probes: dict[str, Scorer], wrap: Wrapper = _unwrapped,
) -> dict[str, list[float]]:
    """The one-epoch study over any batch source (:func:`epoch_curve` is the in-memory case).

    Returns:
        Per probe name, ``n_epochs`` AUCs (after epoch 1, 2, ...).
    """
    if model_cfg.make is not None:
        raise ValueError("the epoch curve is for ID models without MAKE")
    torch.manual_seed(seed)
    model = CTRModel(replace(model_cfg, id_dropout=ctr.id_dropout))
    trained = wrap(model)
    opt = torch.optim.Adam(_param_groups(model, ctr), lr=ctr.lr)
    log = TrainingLog()
    curves: dict[str, list[float]] = {name: [] for name in probes}
    for epoch in range(n_epochs):
        run_epoch(trained, epochs(log.epochs), opt, log=log, desc=f"epoch {epoch + 1}")
        for name, scorer in probes.items():
            curves[name].append(scorer(model))
    model.eval()
    return curves
