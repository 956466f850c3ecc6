"""Saved CTR models: the artifact format, saving, and :class:`Ranker` for inference.

A model directory holds ``model.pt`` (the state dict), ``config.json`` (format version, model name
and :class:`CTRModelConfig`, ``n_tiers``, ``simtier_columns`` (checked at load against
:func:`~feature_repo.simtier.SIMTIER_COLUMNS`), ``history_len``, ``vec_dim``, ``model_version``) and
``vocab.npz`` + ``vocab.json`` (the id vocabularies) and, when the model uses side features,
``side_features.json`` (their vocabularies and training-period statistics, :class:`SideEncoder`).
``Ranker.score`` builds its inputs with the same
:func:`~training.models.inputs.build_inputs` and runs the same :func:`predict_logits` as the
offline evaluation, so scores match the offline model's on the same features.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from feature_repo.simtier import SIMTIER_COLUMNS
from infra.errors import FeatureError, ModelArtifactError
from training.models.ctr import CTRModel, CTRModelConfig, predict_logits
from training.models.inputs import CTRInputs, IdVocab, ItemVectorLookup, build_inputs
from training.models.side import SideEncoder

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
VOCAB_FILE = "vocab.npz"


def _weights_digest(state: dict[str, torch.Tensor]) -> str:
    buf = io.BytesIO()
    torch.save(state, buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()[:12]


def save_model(model: CTRModel, vocab: IdVocab, model_dir: Path, *, name: str, n_tiers: int,
               history_len: int, vec_dim: int, extra: dict[str, Any] | None = None,
               side: SideEncoder | None = None) -> str:
    """Write a model directory.

    Args:
        model: the trained model.
        vocab: its id vocabularies.
        model_dir: the directory (created).
        name: the ablation name (``id_only``, ...).
        n_tiers: SimTier tiers T of the features it was trained on.
        history_len: history length N.
        vec_dim: multimodal vector width d.
        extra: more JSON-ready metadata (seed, metrics, ...).
        side: the side-feature encoder the model was trained with (None: no side features).

    Returns:
        The model version: ``<name>-<first 12 hex digits of the weights' sha256>``.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    version = f"{name}-{_weights_digest(state)}"
    torch.save(state, model_dir / WEIGHTS_FILE)
    vocab.save(model_dir / VOCAB_FILE)
    if side is not None and side.specs:
        side.save(model_dir)
    meta = {
        "format": FORMAT_VERSION, "name": name, "model_version": version, "model": model.cfg.to_dict(),
        "n_tiers": n_tiers, "simtier_columns": SIMTIER_COLUMNS(n_tiers), "history_len": history_len,
        "vec_dim": vec_dim, "side_features": side.names if side else [], **(extra or {}),
    }
    (model_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=str))
    logger.info("saved %s to %s", version, model_dir)
    return version


class Ranker:
    """A trained CTR model loaded for inference.

    Attributes:
        model_version: ``<name>-<weights digest>``, stable for the same weights.
        name: the ablation name.
        n_tiers, history_len, vec_dim: the feature shapes the model expects.
        side: the side-feature encoder (None when the model uses none).
    """

    def __init__(self, model: CTRModel, vocab: IdVocab, meta: dict[str, Any], side: SideEncoder | None = None) -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.name: str = meta["name"]
        self.model_version: str = meta["model_version"]
        self.n_tiers: int = int(meta["n_tiers"])
        self.simtier_columns: list[str] = list(meta.get("simtier_columns") or SIMTIER_COLUMNS(self.n_tiers))
        self.history_len: int = int(meta["history_len"])
        self.vec_dim: int = int(meta["vec_dim"])
        self.side = side

    @classmethod
    def load(cls, model_dir: Path) -> Ranker:
        """Load a model directory written by :func:`save_model`.

        Raises:
            ModelArtifactError: files are missing, of another format version, or do not fit.
        """
        model_dir = Path(model_dir)
        cfg_file = model_dir / CONFIG_FILE
        if not cfg_file.is_file() or not (model_dir / WEIGHTS_FILE).is_file():
            raise ModelArtifactError(f"{model_dir} is not a CTR model directory (no {CONFIG_FILE} / {WEIGHTS_FILE})")
        meta = json.loads(cfg_file.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ModelArtifactError(f"{model_dir}: format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        expected = SIMTIER_COLUMNS(int(meta["n_tiers"]))
        if meta.get("simtier_columns", expected) != expected:  # artifacts before the list was saved: n_tiers
            raise ModelArtifactError(f"{model_dir}: trained on SimTier columns {meta['simtier_columns']}, but "
                                     f"feature_repo.simtier computes {expected}: retrain the model")
        model = CTRModel(CTRModelConfig.from_dict(meta["model"]))
        state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelArtifactError(f"{model_dir}: weights do not fit the config: {exc}") from None
        side = SideEncoder.load(model_dir)
        if side is not None and (side.cardinalities != model.cfg.side_cardinalities
                                 or len(side.numeric) != model.cfg.n_side_numeric):
            raise ModelArtifactError(f"{model_dir}: side_features.json does not fit the model's side inputs")
        return cls(model, IdVocab.load(model_dir / VOCAB_FILE), meta, side)

    def score(self, frame: pd.DataFrame, item_vectors: ItemVectorLookup | pd.DataFrame) -> np.ndarray:
        """Click probabilities for rows in the training-set schema (``clicked`` not needed).

        Args:
            frame: R rows: the user's history ids, the candidate's vector, SimTier and side features.
            item_vectors: the item-vector lookup (or table) for the history gather.

        Returns:
            (R,) float64 probabilities.
        """
        lookup = item_vectors
        if not isinstance(lookup, ItemVectorLookup):
            lookup = ItemVectorLookup.from_frame(lookup)
        if lookup.dim != self.vec_dim:
            raise FeatureError(f"item vectors have d={lookup.dim}, model {self.model_version} expects {self.vec_dim}")
        inputs = build_inputs(frame, lookup, self.vocab, n_tiers=self.n_tiers, history_len=self.history_len,
                              side=self.side)
        return self.score_inputs(inputs)

    def score_inputs(self, inputs: CTRInputs) -> np.ndarray:
        """Click probabilities (R,) float64 for inputs built with this model's vocabulary.

        The inputs come from :func:`~training.models.inputs.build_inputs` or, in the service, from
        :func:`~training.models.inputs.inputs_from_arrays` (the same mapping without a DataFrame).
        """
        if inputs.vectors.shape[1] != self.vec_dim:
            raise FeatureError(f"item vectors have d={inputs.vectors.shape[1]}, model {self.model_version} "
                               f"expects {self.vec_dim}")
        return torch.sigmoid(predict_logits(self.model, inputs)).numpy().astype(np.float64)
