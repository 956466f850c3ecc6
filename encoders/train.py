"""SCL pre-training on cached frozen-backbone features.

By default the backbones are frozen (``model.scl.trainable_text_layers = 0``), so their features are
computed once (:mod:`encoders.features_cache`) and an epoch trains only the projection heads:
seconds on two CPU cores. With ``trainable_text_layers = k`` (1..6), MiniLM's lowest ``6 - k``
layers stay frozen and their token states are cached; the top k layers train with the heads, at
``lr * TEXT_LAYERS_LR_SCALE`` (pre-trained weights want a gentler step than fresh heads), and each
step runs them forward and backward, so an epoch costs roughly k times a frozen epoch's backbone
pass. Training is seeded (weights from ``model.seed``, each epoch's order from the seed and the
epoch number), writes ``checkpoints/epoch_NNN.pt`` after every epoch, and ``resume=True`` continues
from the last one with the same result as an uninterrupted run.

:func:`train_scl` trains on the query pairs before the time cut (the later ones are held out for
:func:`encoders.evaluate.evaluate_scl`, and the CTR test period must not leak into the vectors).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from encoders.artifact import EncoderSpec
from encoders.features_cache import Features
from encoders.inference import ItemEncoder
from encoders.model import VARIANTS, SCLBatch, SCLModel, TowerInput
from encoders.pairs import PairData, build_pairs, dataset_features, split_by_time
from infra.config import MmadsConfig
from infra.dataset import Dataset
from infra.errors import ConfigError, DatasetError, ModelArtifactError

logger = logging.getLogger(__name__)

HEAD_HIDDEN = 256
CHECKPOINT_DIR = "checkpoints"
TEXT_LAYERS_LR_SCALE = 0.1


def queue_size_for(configured: int, n_pairs: int, batch_size: int) -> int:
    """The memory-bank size used: the configured K, capped at half an epoch of keys.

    Keys older than that come from a momentum encoder far behind the online one, and a bank much
    larger than the data repeats the same items.
    """
    return max(0, min(configured, max(batch_size, n_pairs // 2)))


@dataclass(frozen=True)
class _Side:
    """One side's features (items or queries) as tensors."""

    text: torch.Tensor
    image: torch.Tensor
    has: torch.Tensor
    mask: torch.Tensor | None

    @classmethod
    def of(cls, feats: Features, use_images: bool) -> _Side:
        n = len(feats)
        return cls(torch.from_numpy(feats.text),
                   torch.from_numpy(feats.image) if use_images else torch.zeros((n, 0)),
                   torch.from_numpy(feats.has_image) & use_images,
                   torch.from_numpy(feats.text_mask) if feats.text_mask is not None else None)

    def rows(self, rows: torch.Tensor) -> TowerInput:
        mask = self.mask[rows] if self.mask is not None else None
        return TowerInput(self.text[rows].float(), self.image[rows], self.has[rows], mask)


class _Tensors:
    """The pair data as tensors, and batch assembly."""

    def __init__(self, pairs: PairData, use_images: bool) -> None:
        self.items = _Side.of(pairs.items, use_images)
        self.queries = _Side.of(pairs.queries, use_images)
        self.ids = torch.from_numpy(pairs.item_ids)
        self.cats = torch.from_numpy(pairs.item_cats)
        self.pos = torch.from_numpy(pairs.pos_rows)
        self.clicked = torch.from_numpy(pairs.clicked_rows)

    def batch(self, idx: torch.Tensor, gen: torch.Generator) -> SCLBatch:
        pos = self.pos[idx]
        hard_rows = torch.zeros_like(pos)
        hard_valid = torch.zeros(len(idx), dtype=torch.bool)
        if self.clicked.shape[1] > 0:
            clicked = self.clicked[idx]  # (B, C)
            n = (clicked >= 0).sum(1)
            pick = (torch.rand(len(idx), generator=gen) * n.clamp(min=1)).long()
            hard_rows = clicked.gather(1, pick.unsqueeze(1)).squeeze(1).clamp(min=0)
            hard_valid = n > 0
        return SCLBatch(query=self.queries.rows(idx), item=self.items.rows(pos), item_ids=self.ids[pos],
                        cats=self.cats[pos], hard=self.items.rows(hard_rows), hard_valid=hard_valid)


def _latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted((out_dir / CHECKPOINT_DIR).glob("epoch_*.pt"))
    return found[-1] if found else None


def _restore(model: SCLModel, optim: torch.optim.Optimizer, ckpt: Path, variant: str) -> tuple[int, list]:
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["variant"] != variant:
            raise ModelArtifactError(f"checkpoint {ckpt} is of variant {state['variant']!r}, not {variant!r}")
        model.load_state_dict(state["model"])
        model.queue.load_state_dict(state["queue"])
        optim.load_state_dict(state["optim"])
        if "rng" in state:  # dropout in trainable text layers draws from the global generator
            torch.set_rng_state(state["rng"])
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        raise ModelArtifactError(f"cannot resume from {ckpt}: {exc}") from None
    logger.info("resumed from %s (epoch %d done)", ckpt, state["epoch"])
    return int(state["epoch"]), list(state["history"])


def _save_checkpoint(out_dir: Path, epoch: int, model: SCLModel, optim: torch.optim.Optimizer,
                     variant: str, history: list) -> None:
    path = out_dir / CHECKPOINT_DIR / f"epoch_{epoch:03d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"epoch": epoch, "variant": variant, "model": model.state_dict(),
                "queue": model.queue.state_dict(), "optim": optim.state_dict(), "history": history,
                "rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)


def _run_epoch(model: SCLModel, optim: torch.optim.Optimizer, data: _Tensors, n: int, batch_size: int,
               gen: torch.Generator, bar: tqdm) -> float:
    order = torch.randperm(n, generator=gen)
    total, steps = 0.0, 0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:
            continue
        loss, stats = model(data.batch(idx, gen))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        model.end_step()
        total, steps = total + float(loss.detach()), steps + 1
        bar.update(len(idx))
        bar.set_postfix(loss=f"{stats['infonce']:.3f}")
    return total / max(steps, 1)


def _param_groups(model: SCLModel, lr: float) -> list[dict[str, Any]]:
    """The heads (and temperature) at ``lr``; the trainable MiniLM layers, if any, at a tenth of it."""
    top = model.encoder.text_top
    top_ids = {id(p) for p in top.parameters()} if top is not None else set()
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in top_ids], "lr": lr}]
    if top is not None:
        groups.append({"params": list(top.parameters()), "lr": lr * TEXT_LAYERS_LR_SCALE})
    return groups


def fit_scl(pairs: PairData, cfg: MmadsConfig, out_dir: Path, *, variant: str, use_images: bool,
            resume: bool = False, progress: bool = True, metadata: dict[str, Any] | None = None) -> ItemEncoder:
    """Train one SCL variant on the given pairs and write the artifact to ``out_dir``.

    Args:
        pairs: training pairs (features already computed).
        cfg: configuration (model.dim, model.seed, model.scl.*).
        out_dir: artifact directory (checkpoints go to ``out_dir/checkpoints``).
        variant: one of ``inbatch``, ``queue``, ``hard``.
        use_images: build the image tower.
        resume: continue from the last checkpoint in ``out_dir``.
        progress: show a tqdm bar.
        metadata: extra facts stored in the artifact.

    Returns:
        The trained encoder (also saved).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown SCL variant {variant!r}; expected one of {list(VARIANTS)}")
    scl = cfg.model.scl
    if (pairs.items.text_mask is not None) != bool(scl.trainable_text_layers):
        raise ConfigError(f"model.scl.trainable_text_layers = {scl.trainable_text_layers} does not match the "
                          "features given (token states are computed for k > 0, pooled features for 0)")
    torch.manual_seed(cfg.model.seed)
    k = queue_size_for(scl.queue_size, len(pairs), scl.batch_size)
    model = SCLModel(dim=cfg.model.dim, hidden=HEAD_HIDDEN, use_images=use_images, fusion=scl.fusion,
                     variant=variant, scl=scl, queue_size=k)
    optim = torch.optim.AdamW(_param_groups(model, scl.lr), weight_decay=1e-4)
    start, history = 0, list[dict[str, float]]()
    ckpt = _latest_checkpoint(out_dir) if resume else None
    if resume and ckpt is None:
        logger.warning("resume requested but %s holds no checkpoint; training from scratch", out_dir)
    if ckpt is not None:
        start, history = _restore(model, optim, ckpt, variant)
    elif not resume:
        for stale in (out_dir / CHECKPOINT_DIR).glob("epoch_*.pt"):
            stale.unlink()  # a fresh run must not leave a later epoch for a future resume to pick
    data = _Tensors(pairs, use_images)
    logger.info("SCL %s: %d pairs, %d items, queue %d, epochs %d..%d", variant, len(pairs),
                len(pairs.item_ids), model.queue.size, start + 1, scl.epochs)
    with tqdm(total=len(pairs) * max(0, scl.epochs - start), desc=f"SCL {variant}", unit="pair",
              disable=not progress) as bar:
        for epoch in range(start + 1, scl.epochs + 1):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(cfg.model.seed * 100_003 + epoch)
            model.train()
            loss = _run_epoch(model, optim, data, len(pairs), scl.batch_size, gen, bar)
            history.append({"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - t0})
            _save_checkpoint(out_dir, epoch, model, optim, variant, history)
    spec = EncoderSpec(dim=cfg.model.dim, hidden=HEAD_HIDDEN, uses_images=use_images, fusion=scl.fusion,
                       image_size=scl.image_size, text_max_tokens=scl.text_max_tokens, kind="scl",
                       variant=variant, image_backbone=EncoderSpec.image_backbone if use_images else None,
                       backbone_precision=scl.backbone_precision, trainable_text_layers=scl.trainable_text_layers)
    meta = {**(metadata or {}), "n_pairs": len(pairs), "queue_size": model.queue.size,
            "temperature": float(model.log_temp.exp()), "history": history}
    encoder = ItemEncoder.from_state(spec, model.encoder.state_dict(), meta)
    encoder.save(out_dir)
    return encoder


def train_scl(dataset: Dataset, cfg: MmadsConfig, out_dir: Path, *, variant: str = "hard",
              resume: bool = False, progress: bool = True) -> Path:
    """Train the SCL encoder on the dataset's query pairs before the time cut.

    Args:
        dataset: a loaded dataset with ``queries``.
        cfg: configuration.
        out_dir: the model directory to write (features are cached in ``out_dir/features``).
        variant: ``"inbatch"``, ``"queue"`` or ``"hard"`` (queue + hard negatives, the default).
        resume: continue from the last epoch checkpoint in ``out_dir``.
        progress: show progress bars.

    Returns:
        The model directory (loadable with :meth:`ItemEncoder.load`).

    Raises:
        DatasetError: the dataset has no usable query pairs.
        ConfigError: an unknown variant or unsupported setting.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown SCL variant {variant!r}; expected one of {list(VARIANTS)}")
    out_dir = Path(out_dir)
    item_f, query_f = dataset_features(dataset, cfg, out_dir / "features", progress=progress)
    pairs = build_pairs(dataset.items, dataset.queries, item_f, query_f)
    train_rows, _, cut = split_by_time(dataset, cfg)
    if len(train_rows) < 2:
        raise DatasetError(f"only {len(train_rows)} query pairs before the cut {cut}; need at least 2")
    fit_scl(pairs.subset(train_rows), cfg, out_dir, variant=variant, use_images=dataset.has_images,
            resume=resume, progress=progress, metadata={"data": str(dataset.root), "cut": cut.isoformat()})
    return out_dir
