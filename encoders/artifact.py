"""The encoder artifact: a directory with ``config.json``, ``weights.pt`` and ``VERSION``.

``config.json`` holds the :class:`EncoderSpec` (dimensions, tower settings, backbone names), the
version and free-form training metadata; ``weights.pt`` the projection heads' state dict, plus the
top MiniLM layers when SCL trained them (the rest of the backbones are the frozen published weights,
named in the spec). The version is a content hash of
the spec and the weights, so two artifacts with the same version encode identically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from encoders.backbones import IMAGE_BACKBONE, PRECISIONS, TEXT_BACKBONE
from infra.errors import ModelArtifactError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
VERSION_FILE = "VERSION"


@dataclass(frozen=True)
class EncoderSpec:
    """Everything besides the weights that determines an encoder's output.

    Attributes:
        dim: output dimension d.
        hidden: MLP width of the projection heads (0 = linear).
        uses_images: False when the image tower is skipped entirely.
        fusion: ``"mean"`` or ``"concat"``.
        image_size: image input side in pixels.
        text_max_tokens: MiniLM truncation length.
        kind: ``"pretrained"`` (frozen backbones + seeded projection) or ``"scl"``.
        variant: the SCL variant trained (None for pretrained).
        text_backbone, image_backbone: names of the frozen backbones (image None without images).
        backbone_precision: ``"float32"`` or ``"bfloat16"``, how the backbones run
            (:mod:`encoders.backbones`); artifacts written before it existed are float32.
        trainable_text_layers: k top MiniLM layers trained by SCL and held in the weights (0: the
            text backbone is frozen whole).
    """

    dim: int
    hidden: int
    uses_images: bool
    fusion: str
    image_size: int
    text_max_tokens: int
    kind: str
    variant: str | None = None
    text_backbone: str = TEXT_BACKBONE
    image_backbone: str | None = IMAGE_BACKBONE
    backbone_precision: str = "float32"
    trainable_text_layers: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (defaults added later are left out, so older artifacts keep their version)."""
        out = dataclasses.asdict(self)
        if out["backbone_precision"] == "float32":
            del out["backbone_precision"]
        if out["trainable_text_layers"] == 0:
            del out["trainable_text_layers"]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EncoderSpec:
        """Parse from :meth:`to_dict` output; raises ModelArtifactError on bad fields."""
        try:
            spec = cls(**raw)
        except TypeError as exc:
            raise ModelArtifactError(f"bad encoder spec in {CONFIG_FILE}: {exc}") from None
        if spec.backbone_precision not in PRECISIONS:
            raise ModelArtifactError(f"bad encoder spec in {CONFIG_FILE}: backbone_precision "
                                     f"{spec.backbone_precision!r} is not one of {PRECISIONS}")
        if not isinstance(spec.trainable_text_layers, int) or not 0 <= spec.trainable_text_layers <= 6:
            raise ModelArtifactError(f"bad encoder spec in {CONFIG_FILE}: trainable_text_layers "
                                     f"{spec.trainable_text_layers!r} is not an integer in 0..6")
        return spec


def compute_version(spec: EncoderSpec, state: dict[str, torch.Tensor]) -> str:
    """Content hash (16 hex digits) of the spec and the weights."""
    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_artifact(model_dir: Path, spec: EncoderSpec, state: dict[str, torch.Tensor],
                  metadata: dict[str, Any] | None = None) -> str:
    """Write an artifact directory; returns the version.

    Args:
        model_dir: the directory (created if needed; existing artifact files are replaced).
        spec: the encoder spec.
        state: the :class:`~encoders.towers.FusionEncoder` state dict.
        metadata: extra JSON-ready facts (training data, losses, timings).
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in state.items()}
    version = compute_version(spec, state)
    torch.save(state, model_dir / WEIGHTS_FILE)
    config = {"format_version": FORMAT_VERSION, "version": version, "spec": spec.to_dict(),
              "metadata": metadata or {}}
    (model_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    (model_dir / VERSION_FILE).write_text(version + "\n")
    logger.info("saved encoder %s (%s) to %s", version, spec.kind, model_dir)
    return version


def load_artifact(model_dir: Path) -> tuple[EncoderSpec, dict[str, torch.Tensor], str, dict[str, Any]]:
    """Read and verify an artifact directory.

    Returns:
        ``(spec, state, version, metadata)``.

    Raises:
        ModelArtifactError: a file is missing or unreadable, the format is unknown, or the weights
            do not hash to the recorded version.
    """
    model_dir = Path(model_dir)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (model_dir / name).is_file():
            raise ModelArtifactError(f"encoder artifact {model_dir}: {name} is missing")
    try:
        config = json.loads((model_dir / CONFIG_FILE).read_text())
        state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError) as exc:
        raise ModelArtifactError(f"encoder artifact {model_dir} is unreadable: {exc}") from None
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        raise ModelArtifactError(
            f"encoder artifact {model_dir}: unsupported format_version "
            f"{config.get('format_version') if isinstance(config, dict) else None!r} (expected {FORMAT_VERSION})")
    spec = EncoderSpec.from_dict(config.get("spec", {}))
    version = compute_version(spec, state)
    if version != config.get("version"):
        raise ModelArtifactError(
            f"encoder artifact {model_dir}: weights hash to {version} but config.json says "
            f"{config.get('version')!r} (files from different runs, or corrupted)")
    return spec, state, version, dict(config.get("metadata", {}))
