"""The CTR model registry: every model of the ablation, what it uses, and the one served by default.

The one list the trainer, the CLI, the report and the service read: adding a model means adding a
:class:`ModelSpec` here (and its construction in :mod:`training.models.ctr` or the LightGBM baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infra.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """One CTR model of the ablation.

    Attributes:
        name: the model's name in reports, run directories and ``--models``.
        kind: ``torch`` (:class:`~training.models.ctr.CTRModel`) or ``lightgbm`` (the baseline).
        uses_simtier: reads the SimTier features.
        uses_make: carries MAKE's outputs (MAKE pre-trained on the CTR objective first).
        finetune_make: MAKE's weights keep training in the ID epoch (else frozen).
        about: one line for help texts.
    """

    name: str
    kind: Literal["torch", "lightgbm"]
    uses_simtier: bool
    uses_make: bool
    finetune_make: bool = False
    about: str = ""


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("id_only", "torch", False, False, about="ID embeddings + DIN attention + MLP"),
    ModelSpec("simtier", "torch", True, False, about="+ SimTier"),
    ModelSpec("make", "torch", False, True, about="+ frozen MAKE outputs"),
    ModelSpec("make_ft", "torch", False, True, finetune_make=True, about="+ MAKE fine-tuned in the ID epoch"),
    ModelSpec("simtier_make", "torch", True, True, about="+ SimTier + frozen MAKE (the paper's model)"),
    ModelSpec("lightgbm", "lightgbm", True, False, about="LightGBM on counts, CTRs and the SimTier columns"),
)
MODEL_NAMES: tuple[str, ...] = tuple(m.name for m in MODELS)
TORCH_MODELS: tuple[str, ...] = tuple(m.name for m in MODELS if m.kind == "torch")
MAKE_MODELS: tuple[str, ...] = tuple(m.name for m in MODELS if m.uses_make)
# served when a run names none (RUN_DIR/serving.json) and by the main job: the paper's model, chosen
# up front, never by test metrics
DEFAULT_MODEL = "simtier_make"


def model_spec(name: str) -> ModelSpec:
    """The spec of ``name``.

    Raises:
        ConfigError: no such model.
    """
    for spec in MODELS:
        if spec.name == name:
            return spec
    raise ConfigError(f"unknown CTR model '{name}'; expected one of {list(MODEL_NAMES)}")
