"""Assembled CTR models: the ID model with optional SimTier and MAKE parts, and MAKE itself.

Model names (the ablation): ``id_only``, ``simtier``, ``make`` (frozen MAKE outputs), ``make_ft``
(MAKE fine-tuned jointly in the ID epoch), ``simtier_make`` (SimTier + frozen MAKE). Every
``forward()`` returns logits, shape (B,); the loss lives in ``training.trainer.CTRLoss``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from infra.errors import ConfigError, FeatureError
from training.models.inputs import OOV, CTRInputs, IdVocab
from training.models.modules import MLP, SimTierTower, TargetAttention
from training.models.registry import TORCH_MODELS, model_spec
from training.models.side import SideEncoder


@dataclass(frozen=True)
class MakeConfig:
    """MAKE: target attention over multimodal vectors + MLP.

    Attributes:
        dim: multimodal vector width d.
        attn_hidden: hidden width of the attention MLP.
        mlp_hidden: hidden widths of the MLP; the last one is the "intermediate layer" output.
    """

    dim: int
    attn_hidden: int = 32
    mlp_hidden: tuple[int, ...] = (128, 64)

    @property
    def out_dim(self) -> int:
        """Width of the three outputs fed to the ID model: d + last hidden + 1."""
        return self.dim + self.mlp_hidden[-1] + 1


@dataclass(frozen=True)
class CTRModelConfig:
    """The ID model and which extra parts it carries.

    Attributes:
        n_users, n_items, n_categories: embedding table sizes (from :class:`IdVocab`).
        id_dim: ID embedding width.
        mlp_hidden: hidden widths of the top MLP.
        n_tiers: SimTier tiers T, or None for no SimTier part.
        make: the MAKE part, or None.
        finetune_make: train MAKE's parameters jointly (``make_ft``) instead of freezing them.
        side_cardinalities: embedding table size per categorical side feature (empty: none).
        n_side_numeric: how many normalised numeric side features are concatenated.
    """

    n_users: int
    n_items: int
    n_categories: int
    id_dim: int = 16
    mlp_hidden: tuple[int, ...] = (128, 64)
    n_tiers: int | None = None
    make: MakeConfig | None = None
    finetune_make: bool = False
    side_cardinalities: tuple[int, ...] = ()
    n_side_numeric: int = 0
    id_dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CTRModelConfig:
        """Inverse of :meth:`to_dict`."""
        raw = dict(raw)
        make = raw.pop("make", None)
        raw["mlp_hidden"] = tuple(raw["mlp_hidden"])
        raw["side_cardinalities"] = tuple(raw.get("side_cardinalities", ()))
        if make is not None:
            make = MakeConfig(**{**make, "mlp_hidden": tuple(make["mlp_hidden"])})
        return cls(**raw, make=make)


class MakeOutputs(NamedTuple):
    """MAKE's three outputs: attention (B, d), intermediate layer (B, h), logit (B, 1)."""

    attention: torch.Tensor
    hidden: torch.Tensor
    logit: torch.Tensor

    def concat(self) -> torch.Tensor:
        """(B, d + h + 1)."""
        return torch.cat([self.attention, self.hidden, self.logit], dim=1)


class MAKE(nn.Module):
    """Multimodal knowledge extractor: the target vector attends over the history's vectors.

    Targets without a vector (``has_emb`` False) use a learned missing vector instead.

    Args:
        cfg: the MAKE configuration.
    """

    def __init__(self, cfg: MakeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.missing = nn.Parameter(torch.zeros(cfg.dim))
        self.attention = TargetAttention(cfg.dim, cfg.attn_hidden)
        self.body = MLP(3 * cfg.dim, cfg.mlp_hidden)
        self.head = nn.Linear(cfg.mlp_hidden[-1], 1)

    def extract(self, batch: CTRInputs) -> MakeOutputs:
        """Compute the three outputs for a batch of B rows."""
        q = torch.where(batch.has_emb.unsqueeze(1), batch.target_vec, self.missing)  # (B, d)
        pooled = self.attention(q, batch.hist_vectors(), batch.hist_mask())  # (B, d)
        hidden = torch.relu(self.body(torch.cat([q, pooled, q * pooled], dim=1)))  # (B, h)
        return MakeOutputs(pooled, hidden, self.head(hidden))

    def forward(self, batch: CTRInputs) -> torch.Tensor:
        """Logits (B,)."""
        return self.extract(batch).logit.squeeze(1)


class CTRModel(nn.Module):
    """ID model: user, item, category embeddings + DIN attention over the behavior item ids + MLP.

    Optional parts concatenated before the MLP: the SimTier tower, MAKE's outputs and the side
    features (one embedding per categorical, the normalised numerics as they are).

    Args:
        cfg: the model configuration.
    """

    def __init__(self, cfg: CTRModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.id_dim
        self.user_emb = nn.Embedding(cfg.n_users, d, padding_idx=0)
        self.item_emb = nn.Embedding(cfg.n_items, d, padding_idx=0)  # targets and history share it
        self.category_emb = nn.Embedding(cfg.n_categories, d, padding_idx=0)
        for emb in (self.user_emb, self.item_emb, self.category_emb):
            nn.init.normal_(emb.weight, std=0.05)
            with torch.no_grad():
                emb.weight[0].zero_()
        self.attention = TargetAttention(d, 32)
        width = 4 * d
        self.simtier = SimTierTower(cfg.n_tiers) if cfg.n_tiers else None
        if self.simtier is not None:
            width += self.simtier.out_dim
        self.make = MAKE(cfg.make) if cfg.make else None
        if cfg.make:
            width += cfg.make.out_dim
        # created only with side features, so a model without them initialises exactly as before
        self.side_emb = nn.ModuleList(nn.Embedding(n, d, padding_idx=0) for n in cfg.side_cardinalities)
        for side in self.side_emb:
            assert isinstance(side, nn.Embedding)  # for mypy: a ModuleList holds Modules
            nn.init.normal_(side.weight, std=0.05)
            with torch.no_grad():
                side.weight[0].zero_()
        width += d * len(cfg.side_cardinalities) + cfg.n_side_numeric
        self.mlp = MLP(width, (*cfg.mlp_hidden, 1))

    def _make_features(self, batch: CTRInputs) -> torch.Tensor:
        assert self.make is not None  # internal invariant: forward() only calls this with MAKE
        if self.cfg.finetune_make:
            return self.make.extract(batch).concat()
        with torch.no_grad():
            return self.make.extract(batch).concat()

    def _target_ids(self, batch: CTRInputs) -> torch.Tensor:
        """The target item indices; in training, a share ``id_dropout`` of them replaced by OOV.

        A new item reaches the model as OOV (its id was never trained). Without dropout the OOV
        row is never trained either, so a new item meets an untrained vector the MLP has never
        seen; with it the OOV row learns "an item the model does not know", and the rest of the
        model learns to score such items from what it can see (category, SimTier, MAKE, side
        features).
        """
        p = self.cfg.id_dropout
        if not self.training or p <= 0:
            return batch.item
        drop = torch.rand(batch.item.shape, device=batch.item.device) < p
        return torch.where(drop, torch.full_like(batch.item, OOV), batch.item)

    def forward(self, batch: CTRInputs) -> torch.Tensor:
        """Logits (B,) for a batch of B rows."""
        item = self.item_emb(self._target_ids(batch))  # (B, d)
        hist = self.item_emb(batch.hist_items)  # (B, N, d)
        parts = [self.user_emb(batch.user), item, self.category_emb(batch.category)]
        parts.append(self.attention(item, hist, batch.hist_mask()))
        if self.simtier is not None:
            parts.append(self.simtier(batch.simtier))
        if self.make is not None:
            parts.append(self._make_features(batch))
        parts.extend(self._side_features(batch))
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)

    def _side_features(self, batch: CTRInputs) -> list[torch.Tensor]:
        """(B, d) per categorical side feature and the (B, M) numerics; none without side features."""
        if not self.side_emb and not self.cfg.n_side_numeric:
            return []
        if batch.side_cat is None or batch.side_num is None:
            raise FeatureError("this model uses side features, but the batch carries none")
        out = [emb(batch.side_cat[:, k]) for k, emb in enumerate(self.side_emb)]
        if self.cfg.n_side_numeric:
            out.append(batch.side_num)
        return out


@torch.inference_mode()
def predict_logits(model: nn.Module, data: CTRInputs, batch_size: int = 8192) -> torch.Tensor:
    """Logits of every row in row order, shape (R,): the one inference path (offline and serving)."""
    if model.training:  # train()/eval() set every submodule, so the root's flag speaks for all
        model.eval()
    out = [model(data.select(slice(lo, lo + batch_size))) for lo in range(0, len(data), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def model_config(name: str, vocab: IdVocab, *, id_dim: int, mlp_hidden: tuple[int, ...], n_tiers: int,
                 vec_dim: int, side: SideEncoder | None = None) -> CTRModelConfig:
    """The configuration of one ablation model.

    Args:
        name: one of :data:`TORCH_MODELS`.
        vocab: fitted id vocabularies (table sizes).
        id_dim: ID embedding width.
        mlp_hidden: top MLP hidden widths (also MAKE's).
        n_tiers: SimTier tiers T.
        vec_dim: multimodal vector width d.
        side: the fitted side-feature encoder; every ID model (not MAKE alone) uses its features.

    Returns:
        The frozen model configuration.
    """
    spec = model_spec(name)
    if spec.kind != "torch":
        raise ConfigError(f"'{name}' is not a torch CTR model; expected one of {list(TORCH_MODELS)}")
    make = MakeConfig(dim=vec_dim, mlp_hidden=mlp_hidden) if spec.uses_make else None
    return CTRModelConfig(
        n_users=vocab.n_users, n_items=vocab.n_items, n_categories=vocab.n_categories, id_dim=id_dim,
        mlp_hidden=mlp_hidden, n_tiers=n_tiers if spec.uses_simtier else None,
        make=make, finetune_make=spec.finetune_make,
        side_cardinalities=side.cardinalities if side else (), n_side_numeric=len(side.numeric) if side else 0,
    )
