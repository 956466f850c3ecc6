"""Peak memory of the main job: its own process plus every process it started, summed over time."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from infra.processes import list_records

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """Samples the summed RSS of this process and the recorded ones (broker, Milvus, jobs, service).

    Args:
        state_dir: where the process records live.
        interval_s: seconds between samples.
    """

    def __init__(self, state_dir: Path, interval_s: float = 1.0) -> None:
        self.state_dir = state_dir
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def sample(self) -> int:
        """Take one sample now; returns the current total in bytes."""
        pids = {os.getpid(), *(r.pid for r in list_records(self.state_dir))}
        total = sum(_rss_bytes(p) for p in pids)
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak_gib(self) -> float:
        """The peak total in GiB."""
        return round(self.peak_bytes / 2**30, 2)
