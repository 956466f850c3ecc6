"""Process records under concurrent readers."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infra.errors import StackError
from infra.processes import (
    ProcessRecord,
    list_records,
    pid_alive,
    port_holder,
    port_open,
    read_record,
    run_dir,
    sigterm_as_exit,
    start_process,
    write_record,
)

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


def test_a_taken_port_names_the_process_that_listens_on_it(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert port_holder(port) == ""  # bound, not listening
        s.listen()
        assert port_holder(port).startswith(f"pid {os.getpid()} (")
        with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 is already in use by another process: "
                                             f"pid {os.getpid()} "):
            start_process(tmp_path, "broker", [sys.executable, "-c", "pass"], host="127.0.0.1", port=port)
    assert port_holder(port) == ""


EXIT_THREAD = {"x86_64": 60, "aarch64": 93}  # SYS_exit: ends the calling thread only


@pytest.mark.skipif(platform.machine() not in EXIT_THREAD or not Path("/proc/self/task").is_dir(),
                    reason="needs Linux on x86_64 or aarch64")
def test_a_process_whose_main_thread_is_a_zombie_is_alive_while_another_thread_runs() -> None:
    """The killed broker's case: its main thread had exited, another still held the listening socket."""
    code = ("import ctypes, socket, threading, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True)\n"
            "threading.Thread(target=time.sleep, args=(600,)).start()\n"
            f"ctypes.CDLL(None).syscall({EXIT_THREAD[platform.machine()]}, 0)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().split(") ", 1)[1][0] != "Z":
            assert time.monotonic() < deadline, "the main thread did not exit"
            time.sleep(0.01)
        assert port_open("127.0.0.1", port)
        assert pid_alive(proc.pid)  # the old check (main thread only) said dead here
        assert port_holder(port).startswith(f"pid {proc.pid} (")
    finally:
        proc.kill()
        proc.wait(10)
    assert not pid_alive(proc.pid)
