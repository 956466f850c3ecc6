import sys
import time
from pathlib import Path

from infra.processes import start_process, stop_process
from mmads.memory import PeakMemory


def test_peak_memory_sums_recorded_processes(tmp_path: Path):
    alone = PeakMemory(tmp_path).sample()
    start_process(tmp_path, "hog", [sys.executable, "-c",
                                     "import time; x = bytearray(200_000_000); time.sleep(60)"], role="client")
    try:
        mem = PeakMemory(tmp_path, interval_s=0.1)
        with mem:
            deadline = time.monotonic() + 20
            while mem.peak_bytes < alone + 150_000_000 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert mem.peak_bytes >= alone + 150_000_000
        assert mem.peak_gib == round(mem.peak_bytes / 2**30, 2)
    finally:
        stop_process(tmp_path, "hog")
