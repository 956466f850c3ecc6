"""Dead-letter reasons grouped by cause (streaming/dlq.py) and replay without a broker (streaming/replay.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from infra.errors import DeadLetterShareError, StackNotRunningError
from infra.processes import free_port
from mmads.cli import main
from streaming.dlq import reason_kind
from streaming.replay import replay
from tests.support import make_config


@pytest.mark.parametrize(("error", "kind"), [
    ("field 'ts' = '1601-01-01T00:00:00Z': timestamp 1601-01-01T00:00:00+00:00 is outside what nanosecond time "
     "holds (1677-09-21 to 2262-04-11)",
     "field 'ts': timestamp <time> is outside what nanosecond time holds (<n>-<n>-<n> to <n>-<n>-<n>)"),
    ("field 'item_id' = 7.5: invalid id 7.5: an id is an integer or a string, not float",
     "field 'item_id': invalid id <n>: an id is an integer or a string, not float"),
    ("unknown item 123456: not indexed after 30s", "unknown item <n>: not indexed after 30s"),
    ("missing field 'title'", "missing field 'title'"),
])
def test_reasons_lose_their_values(error: str, kind: str) -> None:
    assert reason_kind(error) == kind


def test_share_error_names_topic_and_counts() -> None:
    err = DeadLetterShareError("behaviors", 300, 1794, 0.01, [("bad JSON: EOF", 280), ("missing field 'ts'", 20)])
    assert str(err) == ("the streaming jobs dead-lettered 300 of the 1794 events of topic 'behaviors' (more than "
                        "checks.max_dead_letter_share = 0.01); top reasons: 280 x bad JSON: EOF; "
                        "20 x missing field 'ts'")


def test_replay_without_a_broker_fails_fast_with_the_status_line(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path / "state")
    port = free_port()
    cfg = cfg.with_overrides(kafka={"port": port})
    t0 = time.monotonic()
    with pytest.raises(StackNotRunningError, match=rf"kafka at 127.0.0.1:{port}: unreachable: connection refused"):
        replay(tmp_path / "no-dataset-needed", cfg, "items")  # the broker is checked before the dataset
    assert time.monotonic() - t0 < 5.0
    config = tmp_path / "cfg.yaml"
    config.write_text(f"kafka:\n  port: {port}\nstate_dir: {tmp_path / 'state'}\n")
    assert main(["--config", str(config), "events", "replay", "--data", str(tmp_path), "--topic", "items"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: kafka at 127.0.0.1:{port}: unreachable: connection refused; run `mmads stack up`\n"
