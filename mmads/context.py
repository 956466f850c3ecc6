"""What the main job's stages share: :class:`RunContext` (config, paths, the results of earlier stages).

Apart from :mod:`mmads.pipeline` so the stages (``mmads/steps/*``) do not import the module that
imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.config import MmadsConfig, run_config_file
from infra.dataset import Dataset, load_dataset
from mmads.stages import StageRunner


@dataclass
class RunContext:
    """What the stages share: config, paths and the results of earlier stages."""

    cfg: MmadsConfig
    data_dir: Path
    run_dir: Path
    keep_running: bool
    runner: StageRunner | None = None
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def dataset(self) -> Dataset:
        """The validated dataset (loaded once)."""
        if self._dataset is None:
            self._dataset = load_dataset(self.data_dir, window=self.cfg.data.plausible_time_window)
        return self._dataset

    def result(self, stage: str) -> dict[str, Any]:
        """The result of an earlier stage."""
        if self.runner is None or stage not in self.runner.results:
            raise KeyError(f"stage {stage} has not run")
        return self.runner.results[stage]

    @property
    def config_file(self) -> Path:
        """The run's config as YAML: the streaming processes and the service read it."""
        return run_config_file(self.run_dir)
