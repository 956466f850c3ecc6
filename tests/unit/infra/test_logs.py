"""JSON log lines (infra/logs.py): one object per record with the fixed keys and the record's extras."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from infra.logs import JsonFormatter, format_from_env

ROOT = Path(__file__).resolve().parents[3]


def test_a_record_becomes_one_json_object_with_its_extras() -> None:
    record = logging.LogRecord("streaming.loop", logging.WARNING, __file__, 1, "dead-letter %s[%d]", ("items", 2),
                               None)
    record.topic = "items"  # what extra={"topic": ...} does
    line = JsonFormatter("items").format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "WARNING" and doc["job"] == "items" and doc["logger"] == "streaming.loop"
    assert doc["message"] == "dead-letter items[2]" and doc["topic"] == "items"
    assert isinstance(doc["pid"], int) and doc["time"].endswith("Z")


def test_an_exception_is_carried_as_text() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    doc = json.loads(JsonFormatter("serving").format(record))
    assert "ValueError: boom" in doc["exc_info"]


def test_format_from_env() -> None:
    import os

    old = os.environ.pop("MMADS_LOGGING__FORMAT", None)
    try:
        assert format_from_env() == "text"
        os.environ["MMADS_LOGGING__FORMAT"] = "json"
        assert format_from_env() == "json"
    finally:
        os.environ.pop("MMADS_LOGGING__FORMAT", None)
        if old is not None:
            os.environ["MMADS_LOGGING__FORMAT"] = old


def test_the_cli_in_json_format_writes_only_json_lines(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MMADS_LOGGING__FORMAT": "json",
           "MMADS_STATE_DIR": str(tmp_path / "state")}
    res = subprocess.run([sys.executable, "-m", "mmads", "data", "generate", "--out", str(tmp_path / "data"),
                          "--scale", "0.01", "--no-images"], env=env, capture_output=True, timeout=300, cwd=ROOT)
    stderr = res.stderr.decode()
    assert res.returncode == 0, stderr[-2000:]
    # log lines; a progress bar draws carriage-return frames before them: keep what follows the last \r
    lines = [line.rsplit("\r", 1)[-1] for line in stderr.split("\n")]
    docs = [json.loads(line) for line in lines if line.strip()]
    assert docs, stderr
    for doc in docs:
        assert {"time", "level", "job", "pid", "message"} <= set(doc)
    assert any(d["job"] == "data" and d["level"] == "INFO" for d in docs)


def test_pymilvus_logs_go_through_the_root_handler() -> None:
    from infra.logs import adopt_pymilvus_logs

    adopt_pymilvus_logs()
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.decorators"):
        lib = logging.getLogger(name)
        assert lib.handlers == [] and lib.propagate, name  # no plain-text handler of its own
    # its RPC error lines (pymilvus.decorators) now reach the root's formatter
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    try:
        logging.getLogger("pymilvus.decorators").error("RPC error: [upsert_rows]")
    finally:
        logging.getLogger().removeHandler(handler)
    assert [r.getMessage() for r in seen] == ["RPC error: [upsert_rows]"]
