"""Side features as model inputs: vocabularies and normalisation fitted on the training period only.

:class:`SideEncoder` is fitted once on the training rows (``ts`` before the cut) and saved with
each model (``side_features.json``); training, the offline evaluation and the service all map raw
side values through the same :meth:`SideEncoder.transform`, so a value means the same everywhere.

* categorical: index 0 = missing (null, a zero embedding), 1 = out of vocabulary (a value not seen
  in the training period), known values from 2 in sorted order; values are matched as strings.
* numeric: ``(x - mean) / std`` with the training period's mean and standard deviation (std 1 when
  constant); missing values become 0, the training mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infra.config import SideFeature
from infra.errors import FeatureError, ModelArtifactError

MISSING = 0
OOV = 1
FIRST_VALUE = 2
SIDE_FILE = "side_features.json"


def label_of(value: Any) -> str | None:
    """A categorical value as its label: None when missing, integral floats without ``.0``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class SideEncoder:
    """Fitted side-feature transforms.

    Attributes:
        specs: the side features, in model order (categoricals and numerics keep their relative order).
        vocabs: per categorical, its known labels (sorted).
        means, stds: per numeric, the training period's mean and standard deviation.
    """

    specs: tuple[SideFeature, ...]
    vocabs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)

    @property
    def categorical(self) -> tuple[SideFeature, ...]:
        """The categorical features, in model order."""
        return tuple(s for s in self.specs if s.kind == "categorical")

    @property
    def numeric(self) -> tuple[SideFeature, ...]:
        """The numeric features, in model order."""
        return tuple(s for s in self.specs if s.kind == "numeric")

    @property
    def names(self) -> list[str]:
        """Every feature name."""
        return [s.name for s in self.specs]

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Embedding table size per categorical (known values + missing + OOV rows)."""
        return tuple(len(self.vocabs[s.name]) + FIRST_VALUE for s in self.categorical)

    @classmethod
    def fit(cls, train: pd.DataFrame, specs: Sequence[SideFeature]) -> SideEncoder:
        """Fit on training-period rows only (the caller passes the rows before the cut).

        Raises:
            FeatureError: a side-feature column is missing from ``train``.
        """
        missing = [s.name for s in specs if s.name not in train.columns]
        if missing:
            raise FeatureError(f"the training set lacks side-feature columns {missing}; rebuild it")
        vocabs: dict[str, tuple[str, ...]] = {}
        means: dict[str, float] = {}
        stds: dict[str, float] = {}
        for spec in specs:
            col = train[spec.name]
            if spec.kind == "categorical":
                labels = {lab for lab in (label_of(v) for v in col.tolist()) if lab is not None}
                vocabs[spec.name] = tuple(sorted(labels))
            else:
                x = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
                x = x[np.isfinite(x)]
                mean = float(x.mean()) if len(x) else 0.0
                std = float(x.std()) if len(x) else 0.0
                means[spec.name], stds[spec.name] = mean, std if std > 0 else 1.0
        return cls(tuple(specs), vocabs, means, stds)

    def transform(self, values: Mapping[str, Sequence[Any] | pd.Series], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw side values to model inputs.

        Args:
            values: per feature name, its R raw values (a user feature may give one value for all rows).
            n_rows: R.

        Returns:
            ``(categorical (R, C) int64, numeric (R, M) float32)``.

        Raises:
            FeatureError: a feature the model uses is not in ``values``.
        """
        missing = [n for n in self.names if n not in values]
        if missing:
            raise FeatureError(f"side features {missing} are missing from the model's input")
        cat = np.zeros((n_rows, len(self.categorical)), dtype=np.int64)
        for k, spec in enumerate(self.categorical):
            lut = self.__dict__.get(f"_lut_{spec.name}")
            if lut is None:
                lut = {v: i + FIRST_VALUE for i, v in enumerate(self.vocabs[spec.name])}
                object.__setattr__(self, f"_lut_{spec.name}", lut)  # a cache, not state
            raw = _broadcast(values[spec.name], n_rows)
            cat[:, k] = [MISSING if (lab := label_of(v)) is None else lut.get(lab, OOV) for v in raw]
        num = np.zeros((n_rows, len(self.numeric)), dtype=np.float32)
        for k, spec in enumerate(self.numeric):
            raw = _broadcast(values[spec.name], n_rows)
            x = pd.to_numeric(pd.Series(raw, dtype="object"), errors="coerce").to_numpy(np.float64)
            z = (x - self.means[spec.name]) / self.stds[spec.name]
            num[:, k] = np.where(np.isfinite(z), z, 0.0)
        return cat, num

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what :meth:`save` writes)."""
        return {"specs": [s.model_dump() for s in self.specs], "vocabs": {k: list(v) for k, v in self.vocabs.items()},
                "means": self.means, "stds": self.stds}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SideEncoder:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(SideFeature(**s) for s in raw["specs"]),
                   {k: tuple(v) for k, v in raw["vocabs"].items()},
                   {k: float(v) for k, v in raw["means"].items()}, {k: float(v) for k, v in raw["stds"].items()})

    def save(self, model_dir: Path) -> None:
        """Write ``model_dir/side_features.json``."""
        (Path(model_dir) / SIDE_FILE).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, model_dir: Path) -> SideEncoder | None:
        """Read ``model_dir/side_features.json``; None when the model uses no side features."""
        path = Path(model_dir) / SIDE_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelArtifactError(f"{path} is not a side-feature file: {exc}") from None


def _broadcast(values: Sequence[Any] | pd.Series, n_rows: int) -> list[Any]:
    raw = values.tolist() if isinstance(values, pd.Series) else list(values)
    if len(raw) == 1 and n_rows != 1:
        return raw * n_rows
    if len(raw) != n_rows:
        raise FeatureError(f"a side feature has {len(raw)} values for {n_rows} rows")
    return raw
