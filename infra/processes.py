"""Managed background processes: start with a pid file and a log, probe, stop politely then firmly.

Every process mmads starts (broker, Milvus Lite, streaming jobs, the ranking service) is recorded in
``<state_dir>/run/<name>.json`` (pid, argv, port, role, log file) so ``mmads stack down`` can stop it
later from another shell, and a second ``up`` can see it is already running.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

from infra.errors import StackError

logger = logging.getLogger(__name__)

Role = Literal["service", "client"]


@dataclass(frozen=True)
class ProcessRecord:
    """What the state dir remembers about a started process."""

    name: str
    pid: int
    argv: list[str]
    role: Role
    log: str
    host: str | None = None
    port: int | None = None
    started_at: float = 0.0


def run_dir(state_dir: Path) -> Path:
    """Folder of pid records."""
    return Path(state_dir) / "run"


def log_dir(state_dir: Path) -> Path:
    """Folder of process logs."""
    return Path(state_dir) / "logs"


def write_json_atomic(path: Path, doc: object, indent: int | None = None) -> None:
    """Replace ``path`` with ``doc`` as JSON; a reader sees the old file or the new one, never half."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=indent))
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and one of its threads is not a zombie.

    A killed multi-threaded process (the Tansu broker) shows its main thread as a zombie while its
    other threads are still exiting, and they hold its open files: its listening socket still
    accepted connections, and a broker started again at once found its port "in use". So every
    thread counts, not only the main one.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # no /proc: the signal says it exists
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                if f.read().split(") ", 1)[1][0] not in "ZX":
                    return True
        except (OSError, IndexError):
            continue  # the thread is gone
    return False


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_holder(port: int) -> str:
    """Who listens on TCP ``port`` (any address), as ``pid N (command line)``; "" when unknown.

    Reads ``/proc/net/tcp{,6}`` for a listening socket on the port and looks for its inode among
    the open files of every process this user may inspect (Linux only; elsewhere, or for another
    user's process, the answer is "").
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return ""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _open_files(proc) & inodes:
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:  # it exited meanwhile
                cmd = ""
            return f"pid {proc.name} ({cmd[:200] or 'exiting'})"
    return ""


def _open_files(proc: Path) -> set[str]:
    """What a process's fds point at; read from its threads when its main thread (a zombie) shows none."""
    found = _links(proc / "fd")
    if not found:
        try:
            for task in (proc / "task").iterdir():
                found |= _links(task / "fd")
        except OSError:
            pass
    return found


def _links(fds: Path) -> set[str]:
    """The targets of the links in an ``fd`` folder (empty when it cannot be read)."""
    out = set()
    try:
        for fd in fds.iterdir():
            try:
                out.add(os.readlink(fd))
            except OSError:
                continue  # closed meanwhile
    except OSError:
        pass
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on host (for tests and ephemeral stacks)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def write_record(state_dir: Path, rec: ProcessRecord) -> None:
    """Write a process record atomically (tmp + rename).

    Other threads and processes read records at any time (the run's memory sampler lists them
    every few seconds); a half-written file read as unreadable was removed, and the stage that had
    just started the process then took it for dead and left it running unrecorded.
    """
    folder = run_dir(state_dir)
    tmp = folder / f".{rec.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(asdict(rec)))
    os.replace(tmp, folder / f"{rec.name}.json")


def read_record(state_dir: Path, name: str) -> ProcessRecord | None:
    """The record of a process, or None."""
    path = run_dir(state_dir) / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return ProcessRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        logger.warning("removing unreadable pid record %s", path)
        path.unlink(missing_ok=True)
        return None


def list_records(state_dir: Path) -> list[ProcessRecord]:
    """All records in the state dir, oldest first."""
    recs = [read_record(state_dir, p.stem) for p in sorted(run_dir(state_dir).glob("*.json"))]
    return sorted((r for r in recs if r is not None), key=lambda r: r.started_at)


def live_record(state_dir: Path, name: str) -> ProcessRecord | None:
    """The record of a process that is still alive; a stale record is removed."""
    rec = read_record(state_dir, name)
    if rec is None:
        return None
    if pid_alive(rec.pid):
        return rec
    logger.info("cleaning stale pid record of %s (pid %d is gone)", name, rec.pid)
    (run_dir(state_dir) / f"{name}.json").unlink(missing_ok=True)
    return None


def log_tail(path: str | Path, lines: int = 5) -> str:
    """The last lines of a log file, joined with ' | ' for one-line error messages."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(t.strip() for t in text[-lines:])


def start_process(
    state_dir: Path,
    name: str,
    argv: Sequence[str],
    *,
    role: Role = "service",
    host: str | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 30.0,
) -> ProcessRecord:
    """Start ``argv`` in its own session, log to ``logs/<name>.log`` and record it.

    When ``port`` is given, waits until host:port accepts connections.

    Raises:
        StackError: the port is taken, the binary is missing, or the process died or never listened.
    """
    if port is not None and host is not None and port_open(host, port):
        holder = port_holder(port)
        raise StackError(f"{name}: port {port} on {host} is already in use by another process"
                         + (f": {holder}" if holder else ""))
    logs = log_dir(state_dir)
    logs.mkdir(parents=True, exist_ok=True)
    run_dir(state_dir).mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **(env or {})},
            )
    except FileNotFoundError:
        raise StackError(f"{name}: binary not found: {argv[0]}") from None
    rec = ProcessRecord(name, proc.pid, list(argv), role, str(log_path), host, port, time.time())
    write_record(state_dir, rec)
    if port is not None and host is not None:
        deadline = time.monotonic() + ready_timeout_s
        while not port_open(host, port):
            if proc.poll() is not None:
                (run_dir(state_dir) / f"{name}.json").unlink(missing_ok=True)
                raise StackError(f"{name} exited with code {proc.returncode}: {log_tail(log_path)}")
            if time.monotonic() > deadline:
                stop_process(state_dir, name)
                raise StackError(f"{name} did not listen on {host}:{port} within {ready_timeout_s:.0f}s")
            time.sleep(0.05)
    logger.info("started %s (pid %d)%s", name, proc.pid, f" on {host}:{port}" if port else "")
    return rec


def stop_process(state_dir: Path, name: str, grace_s: float = 5.0) -> bool:
    """Stop a recorded process: SIGTERM to its process group, SIGKILL after ``grace_s``.

    Returns:
        True when a live process was stopped, False when there was none.
    """
    rec = read_record(state_dir, name)
    path = run_dir(state_dir) / f"{name}.json"
    if rec is None:
        return False
    stopped = False
    if pid_alive(rec.pid):
        _signal_group(rec.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while pid_alive(rec.pid) and time.monotonic() < deadline:
            _reap(rec.pid)
            time.sleep(0.05)
        if pid_alive(rec.pid):
            logger.warning("%s (pid %d) ignored SIGTERM for %.0fs: SIGKILL", name, rec.pid, grace_s)
            _signal_group(rec.pid, signal.SIGKILL)
            for _ in range(100):
                _reap(rec.pid)
                if not pid_alive(rec.pid):
                    break
                time.sleep(0.02)
        stopped = True
        logger.info("stopped %s (pid %d)", name, rec.pid)
    path.unlink(missing_ok=True)
    return stopped


@contextmanager
def sigterm_as_exit(code: int = 143) -> Iterator[None]:
    """Inside the block, SIGTERM raises ``SystemExit(code)``, so the block's ``finally`` clauses run.

    Python's default SIGTERM handling ends the process at once: a benchmark stopped by ``timeout``
    left its embedded stack (broker, Milvus Lite) running and its temporary folder on disk. Main
    thread only; the previous handler is put back on leaving.
    """
    previous = signal.getsignal(signal.SIGTERM)

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(code)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    """Collect an exited child of this process so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
