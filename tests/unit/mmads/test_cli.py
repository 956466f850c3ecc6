import argparse
from pathlib import Path

import pytest

from infra.config import load_config, run_config_file, save_config
from mmads.commands.common import config_of


@pytest.fixture
def recorded_run(tmp_path: Path) -> Path:
    """A run directory whose recorded config names its own state dir and Kafka port."""
    run = tmp_path / "run"
    cfg = load_config(env={}).with_overrides(state_dir=run / "state", kafka={"port": 29111})
    save_config(cfg, run_config_file(run))
    return run


def test_a_run_is_served_with_the_config_it_recorded(recorded_run: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MMADS_CONFIG", raising=False)
    cfg = config_of(argparse.Namespace(config=None), recorded_run)
    assert cfg.state_dir == recorded_run / "state"
    assert cfg.kafka.port == 29111


def test_an_explicit_config_wins_over_the_recorded_one(recorded_run: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    other = save_config(load_config(env={}).with_overrides(state_dir=tmp_path / "elsewhere"), tmp_path / "o.yaml")
    monkeypatch.delenv("MMADS_CONFIG", raising=False)
    assert config_of(argparse.Namespace(config=str(other)), recorded_run).state_dir == tmp_path / "elsewhere"
    monkeypatch.setenv("MMADS_CONFIG", str(other))
    assert config_of(argparse.Namespace(config=None), recorded_run).state_dir == tmp_path / "elsewhere"


def test_env_overrides_apply_on_top_of_the_recorded_config(recorded_run: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MMADS_CONFIG", raising=False)
    monkeypatch.setenv("MMADS_KAFKA__PORT", "29222")
    assert config_of(argparse.Namespace(config=None), recorded_run).kafka.port == 29222


def test_a_run_without_a_recorded_config_gets_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MMADS_CONFIG", raising=False)
    assert config_of(argparse.Namespace(config=None), tmp_path).state_dir == load_config(env={}).state_dir


def test_stack_status_of_a_run_probes_the_run_s_own_ports_and_state_dir(
        recorded_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from mmads.cli import main

    monkeypatch.delenv("MMADS_CONFIG", raising=False)
    assert main(["stack", "status", "--run", str(recorded_run)]) == 1  # nothing runs there
    out = capsys.readouterr().out
    assert "127.0.0.1:29111" in out
    assert str(recorded_run / "state" / "feature_repo") in out
