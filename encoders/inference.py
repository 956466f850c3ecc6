"""The inference API the platform calls: :class:`ItemEncoder` and :func:`pretrained_encoder`.

An :class:`ItemEncoder` is the frozen backbones (shared per process) plus the projection heads and
fusion of one artifact. ``encode_items`` / ``encode_queries`` run the backbones, then the heads, and
return L2-normalised float32 vectors; the output is deterministic for a given ``version``. Items
without a readable image get a text-only vector (a warning names the item).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from encoders.artifact import EncoderSpec, compute_version, load_artifact, save_artifact
from encoders.features_cache import Features, item_features, query_features
from encoders.towers import FusionEncoder, random_projection_
from infra.config import MmadsConfig
from infra.errors import FeatureError, ModelArtifactError

logger = logging.getLogger(__name__)

ITEM_COLUMNS = ("item_id", "title", "category")
QUERY_COLUMNS = ("query_text",)


class ItemEncoder:
    """Encodes items and queries into the shared d-dimensional space.

    Args:
        spec: the artifact's spec.
        encoder: the projection heads and fusion (weights are frozen here).
        version: content hash of spec + weights.
        metadata: training facts carried in the artifact.

    Attributes:
        version: content hash of the config and weights.
        dim: output dimension d.
        uses_images: whether images are read at all.
    """

    def __init__(self, spec: EncoderSpec, encoder: FusionEncoder, version: str,
                 metadata: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.encoder = encoder.eval().requires_grad_(False)
        self.version = version
        self.dim = spec.dim
        self.uses_images = spec.uses_images
        self.metadata = dict(metadata or {})

    @classmethod
    def from_state(cls, spec: EncoderSpec, state: dict[str, torch.Tensor],
                   metadata: dict[str, Any] | None = None) -> ItemEncoder:
        """Build from a spec and a :class:`FusionEncoder` state dict (version computed here)."""
        enc = _fusion_encoder(spec)
        enc.load_state_dict(state)
        return cls(spec, enc, compute_version(spec, enc.state_dict()), metadata)

    @classmethod
    def load(cls, model_dir: Path) -> ItemEncoder:
        """Load an artifact directory.

        Raises:
            ModelArtifactError: the directory is missing, incomplete, or its weights do not match.
        """
        spec, state, version, metadata = load_artifact(Path(model_dir))
        enc = _fusion_encoder(spec)
        try:
            enc.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelArtifactError(f"encoder artifact {model_dir}: weights do not fit the spec: {exc}") from None
        logger.info("loaded encoder %s from %s", version, model_dir)
        return cls(spec, enc, version, metadata)

    def save(self, model_dir: Path) -> str:
        """Write this encoder as an artifact directory; returns the version."""
        return save_artifact(Path(model_dir), self.spec, self.encoder.state_dict(), self.metadata)

    @property
    def _image_size(self) -> int | None:
        return self.spec.image_size if self.uses_images else None

    def encode_features(self, feats: Features, batch_size: int | None = None) -> np.ndarray:
        """Project precomputed backbone features.

        Args:
            feats: n rows of backbone features (image features are ignored without an image tower).
            batch_size: rows per forward pass (default 4096, or 256 through trainable text layers).

        Returns:
            ``(n, d)`` float32, L2-normalised.
        """
        batch_size = batch_size or (256 if self.spec.trainable_text_layers else 4096)
        out = np.zeros((len(feats), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(feats), batch_size):
                text = torch.from_numpy(feats.text[s:s + batch_size])
                image = torch.from_numpy(feats.image[s:s + batch_size]) if self.uses_images else \
                    torch.zeros((len(text), 0))
                has = torch.from_numpy(feats.has_image[s:s + batch_size]) & self.uses_images
                mask = torch.from_numpy(feats.text_mask[s:s + batch_size]) if feats.text_mask is not None else None
                out[s:s + text.shape[0]] = self.encoder(text.float(), image, has, mask).numpy()
        return out

    def encode_items(self, items: pd.DataFrame, image_root: Path | None = None,
                     batch_size: int = 64) -> np.ndarray:
        """Encode items.

        Args:
            items: columns item_id, title, category and optionally image_path (relative to
                ``image_root``; null = no image).
            image_root: directory the image paths are relative to (None: paths as given).
            batch_size: backbone batch size.

        Returns:
            ``(n, d)`` float32, L2-normalised.

        Raises:
            FeatureError: a required column is missing.
        """
        _require(items, ITEM_COLUMNS, "items")
        feats = item_features(items, image_root, max_tokens=self.spec.text_max_tokens,
                              image_size=self._image_size, precision=self.spec.backbone_precision,
                              text_layers=self.spec.trainable_text_layers, batch_size=batch_size)
        return self.encode_features(feats)

    def encode_queries(self, queries: pd.DataFrame, image_root: Path | None = None,
                       batch_size: int = 64) -> np.ndarray:
        """Encode search queries (query_text, optional query_image_path) into the item space.

        Returns:
            ``(n, d)`` float32, L2-normalised.

        Raises:
            FeatureError: the query_text column is missing.
        """
        _require(queries, QUERY_COLUMNS, "queries")
        feats = query_features(queries, image_root, max_tokens=self.spec.text_max_tokens,
                               image_size=self._image_size, precision=self.spec.backbone_precision,
                               text_layers=self.spec.trainable_text_layers, batch_size=batch_size)
        return self.encode_features(feats)


def _fusion_encoder(spec: EncoderSpec) -> FusionEncoder:
    return FusionEncoder(spec.dim, spec.hidden, spec.uses_images, spec.fusion,  # type: ignore[arg-type]
                         text_layers=spec.trainable_text_layers)


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeatureError(f"{what} frame lacks columns {missing} (has {list(frame.columns)})")


def pretrained_encoder(cfg: MmadsConfig, *, seed: int = 0, use_images: bool = True) -> ItemEncoder:
    """The 'no SCL' baseline: frozen backbones and a fixed seeded linear projection to d.

    Cheap to construct after the first call in a process (the backbones are cached; only the
    projection is drawn).

    Args:
        cfg: the configuration (model.dim, model.scl.image_size, text_max_tokens, fusion).
        seed: seed of the projection.
        use_images: include the image tower.
    """
    spec = EncoderSpec(dim=cfg.model.dim, hidden=0, uses_images=use_images, fusion=cfg.model.scl.fusion,
                       image_size=cfg.model.scl.image_size, text_max_tokens=cfg.model.scl.text_max_tokens,
                       kind="pretrained", image_backbone=None if not use_images else EncoderSpec.image_backbone,
                       backbone_precision=cfg.model.scl.backbone_precision)
    enc = random_projection_(FusionEncoder(spec.dim, 0, use_images, cfg.model.scl.fusion), seed)
    return ItemEncoder(spec, enc, compute_version(spec, enc.state_dict()), {"seed": seed})
