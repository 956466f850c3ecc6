"""Which model a run directory serves, and loading it completely before it is swapped in.

Layout: ``RUN_DIR/ctr/models/<name>/`` (written by ``training.models.ranker.save_model``). The model
served is, in order: the ``model`` argument (``--model NAME``), the ``"model"`` key of
``RUN_DIR/serving.json`` (the main job names its best model there), else :data:`DEFAULT_MODEL`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from infra.config import MmadsConfig
from infra.errors import ModelArtifactError
from training.models.ranker import Ranker
from training.models.registry import DEFAULT_MODEL

logger = logging.getLogger(__name__)

SERVING_FILE = "serving.json"
MODELS_SUBDIR = Path("ctr") / "models"


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and where it came from (immutable: swapped as one reference).

    Attributes:
        ranker: the loaded model.
        run_dir: the run directory.
        name: the model's name under ``RUN_DIR/ctr/models``.
        loaded_at: epoch seconds of the load.
    """

    ranker: Ranker
    run_dir: Path
    name: str
    loaded_at: float

    @property
    def model_version(self) -> str:
        """The ranker's version string."""
        return self.ranker.model_version


def available_models(run_dir: Path) -> list[str]:
    """Names of the model directories in a run (sorted)."""
    folder = Path(run_dir) / MODELS_SUBDIR
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def choose_model(run_dir: Path, model: str | None = None) -> str:
    """The model name to serve from ``run_dir`` (see the module docstring).

    Raises:
        ModelArtifactError: the run directory, ``serving.json`` or the chosen model is missing or bad.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelArtifactError(f"run directory {run_dir} does not exist")
    name = model
    spec = run_dir / SERVING_FILE
    if name is None and spec.is_file():
        try:
            name = json.loads(spec.read_text()).get("model")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ModelArtifactError(f"{spec} is not a JSON object with a 'model' key: {exc}") from None
    name = name or DEFAULT_MODEL
    if not (run_dir / MODELS_SUBDIR / name).is_dir():
        found = available_models(run_dir)
        raise ModelArtifactError(
            f"model {name!r} not found under {run_dir / MODELS_SUBDIR}; available: {found or 'none'}")
    return str(name)


def load_model(run_dir: Path, cfg: MmadsConfig, model: str | None = None) -> ServedModel:
    """Load the chosen model of a run and check it fits the configured features.

    Args:
        run_dir: the trained run directory.
        cfg: the configuration (``model.dim``, ``model.n_tiers`` must match the model's).
        model: a model name, or None for the run's best model.

    Returns:
        The loaded model (not yet warmed up: the service scores a probe row before swapping it in).

    Raises:
        ModelArtifactError: the run or model is missing or does not fit the configuration.
    """
    run_dir = Path(run_dir).resolve()
    name = choose_model(run_dir, model)
    started = time.perf_counter()
    ranker = Ranker.load(run_dir / MODELS_SUBDIR / name)
    if ranker.vec_dim != cfg.model.dim or ranker.n_tiers != cfg.model.n_tiers:
        raise ModelArtifactError(
            f"model {ranker.model_version} expects d={ranker.vec_dim}, T={ranker.n_tiers} but the feature "
            f"store serves d={cfg.model.dim}, T={cfg.model.n_tiers} (model.dim / model.n_tiers in the config)")
    ranker.model.eval()
    logger.info("loaded %s from %s in %.2f s", ranker.model_version, run_dir, time.perf_counter() - started)
    return ServedModel(ranker=ranker, run_dir=run_dir, name=name, loaded_at=time.time())
