"""Process records under concurrent readers."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from infra.processes import ProcessRecord, list_records, read_record, run_dir, sigterm_as_exit, write_record

ROOT = Path(__file__).resolve().parents[3]


def _hammer(state_dir: Path, write: object) -> list[ProcessRecord | None]:
    rec = ProcessRecord("stream-items-1", 4242, ["python", "-m", "x"] * 200, "job", "/tmp/log")
    run_dir(state_dir).mkdir(parents=True)
    write(state_dir, rec)  # type: ignore[operator]
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            write(state_dir, rec)  # type: ignore[operator]

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    seen: list[ProcessRecord | None] = []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        seen.append(read_record(state_dir, "stream-items-1"))
        seen.extend(list_records(state_dir) or [None])
    stop.set()
    t.join()
    return seen


def test_readers_never_see_a_half_written_record(tmp_path: Path):
    seen = _hammer(tmp_path, write_record)
    assert seen and all(r is not None and r.pid == 4242 for r in seen)
    assert [p.name for p in run_dir(tmp_path).iterdir()] == ["stream-items-1.json"]  # no tmp files left


def test_sigterm_inside_sigterm_as_exit_runs_the_finally_clauses(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    script = ("import sys, time\nfrom infra.processes import sigterm_as_exit\n"
              "with sigterm_as_exit():\n    try:\n        print('ready', flush=True)\n        time.sleep(60)\n"
              f"    finally:\n        open({str(marker)!r}, 'w').write('stack down')\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    assert marker.read_text() == "stack down"


def test_sigterm_as_exit_puts_the_previous_handler_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
