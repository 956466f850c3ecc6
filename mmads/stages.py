"""A small resumable stage runner for the main job.

Each stage's result and fingerprint are stored in ``RUN_DIR/stages/<name>.json``. A cacheable stage
whose fingerprint (its inputs: the dataset manifest, the config and the fingerprints of the stages
before it) is unchanged and whose outputs exist is skipped; ``--from-stage NAME`` reruns from NAME on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.errors import MmadsError

logger = logging.getLogger(__name__)


class StageFailedError(MmadsError):
    """A stage of the main job failed; the message names the stage and the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage '{stage}' failed: {cause.__class__.__name__}: {cause}")
        self.stage = stage
        self.cause = cause


@dataclass(frozen=True)
class Stage:
    """One step of the main job.

    Attributes:
        name: the stage name (``--from-stage`` takes it).
        run: does the work; returns a JSON-able result (what the report and later stages read).
        summary: turns the result into the one-line message printed after the stage.
        cacheable: may be skipped when its fingerprint and outputs are unchanged.
        outputs: files that must exist for a skip (relative to the run dir).
        chain_keys: fields of the result that later stages depend on; they enter the fingerprints of
            every later stage, so e.g. a new replay invalidates a cached training set.
    """

    name: str
    run: Callable[[Any], dict[str, Any]]
    summary: Callable[[dict[str, Any]], str]
    cacheable: bool = True
    outputs: tuple[str, ...] = ()
    chain_keys: tuple[str, ...] = ()


@dataclass
class StageRunner:
    """Runs stages in order with skip/resume logic and per-stage timings."""

    run_dir: Path
    base_fingerprint: str
    from_stage: str | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _chain: str = ""

    def __post_init__(self) -> None:
        (self.run_dir / "stages").mkdir(parents=True, exist_ok=True)
        self._chain = self.base_fingerprint
        self._reached = False  # once --from-stage is reached, every stage reruns

    def _record_path(self, name: str) -> Path:
        return self.run_dir / "stages" / f"{name}.json"

    def _cached(self, stage: Stage, fingerprint: str) -> dict[str, Any] | None:
        path = self._record_path(stage.name)
        if not stage.cacheable or not path.is_file():
            return None
        rec = json.loads(path.read_text())
        if rec.get("fingerprint") != fingerprint:
            return None
        if not all((self.run_dir / o).exists() for o in stage.outputs):
            return None
        return dict(rec["result"])

    def _advance(self, fingerprint: str, stage: Stage, result: dict[str, Any]) -> None:
        keys = json.dumps({k: result.get(k) for k in stage.chain_keys}, sort_keys=True, default=str)
        self._chain = hashlib.sha256(f"{fingerprint}|{keys}".encode()).hexdigest()[:16]

    def execute(self, stage: Stage, ctx: Any) -> dict[str, Any]:
        """Run (or skip) one stage; raises :class:`StageFailedError` naming it."""
        fingerprint = hashlib.sha256(f"{self._chain}|{stage.name}".encode()).hexdigest()[:16]
        if self.from_stage == stage.name:
            self._reached = True
        cached = None if self._reached else self._cached(stage, fingerprint)
        if cached is not None:
            self.results[stage.name] = cached
            self.timings[stage.name] = 0.0
            self._advance(fingerprint, stage, cached)
            print(f"[{stage.name}] skipped (outputs exist for the same inputs): {stage.summary(cached)}")
            return cached
        t0 = time.perf_counter()
        logger.info("stage %s: starting", stage.name)
        try:
            result = stage.run(ctx)
        except MmadsError as exc:
            raise StageFailedError(stage.name, exc) from exc
        except Exception as exc:
            logger.exception("stage %s failed", stage.name)
            raise StageFailedError(stage.name, exc) from exc
        seconds = time.perf_counter() - t0
        self.results[stage.name] = result
        self.timings[stage.name] = round(seconds, 2)
        self._advance(fingerprint, stage, result)
        self._record_path(stage.name).write_text(json.dumps(
            {"fingerprint": fingerprint, "result": result, "seconds": seconds}, indent=2, default=str))
        print(f"[{stage.name}] {stage.summary(result)} ({seconds:.1f}s)")
        return result


def dataset_manifest(data_dir: Path) -> str:
    """A fingerprint of a dataset directory from file names, sizes and mtimes."""
    h = hashlib.sha256()
    for p in sorted(data_dir.glob("*.parquet")):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    images = data_dir / "images"
    if images.is_dir():
        h.update(str(sum(1 for _ in images.iterdir())).encode())
    return h.hexdigest()[:16]
