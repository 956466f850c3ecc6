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


# ---- one CLI grammar ---------------------------------------------------------------------------------


def _leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    from mmads.cli import _subparsers, build_parser

    leaves = {}
    for p in _subparsers(build_parser()):
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions):
            leaves[p.prog] = p
    return leaves


def test_every_verb_has_an_example_and_every_option_a_help_with_its_default():
    leaves = _leaf_parsers()
    assert {"mmads serve", "mmads stack up", "mmads data validate", "mmads demo"} <= set(leaves)
    for prog, parser in leaves.items():
        text = parser.format_help()
        assert f"example:\n  {prog}" in text, prog
        for action in parser._actions:
            assert action.help, f"{prog} {action.option_strings or action.dest} has no help"
            if action.option_strings and not any(action.default is v for v in (None, False, argparse.SUPPRESS)):
                shown = " ".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default)
                assert "default" in (parser._get_formatter()._get_help_string(action) or ""), (prog, action.dest)
                assert shown in " ".join(text.split()), (prog, action.dest)


@pytest.mark.parametrize("argv", [
    ["--config", "c.yaml", "-v", "stack", "status"],
    ["stack", "status", "--config", "c.yaml", "-v"],
    ["-v", "stack", "status", "--config", "c.yaml"],
])
def test_global_options_go_before_or_after_the_verb(argv: list[str]):
    from mmads.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.config == "c.yaml" and args.verbose == 1 and args.quiet == 0


def test_version(capsys: pytest.CaptureFixture[str]):
    from mmads.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("mmads ")


def test_verbosity_sets_what_the_console_shows_of_mmads_own_logs(capsys: pytest.CaptureFixture[str]):
    import logging

    from mmads.cli import _setup_logging

    try:
        _setup_logging(0)
        logging.getLogger("serving.app").info("quiet by default")
        logging.getLogger("serving.app").warning("warnings show")
        _setup_logging(1)
        logging.getLogger("training.trainer").info("shown with -v")
        logging.getLogger("training.trainer").debug("debug needs -vv")
        _setup_logging(2)
        logging.getLogger("training.trainer").debug("shown with -vv")
        _setup_logging(0, quiet=1)
        logging.getLogger("serving.app").warning("hidden with -q")
    finally:
        _setup_logging(0)
    err = capsys.readouterr().err
    assert "warnings show" in err and "shown with -v" in err and "shown with -vv" in err
    assert "quiet by default" not in err and "debug needs -vv" not in err and "hidden with -q" not in err


def test_a_path_error_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]):
    from mmads.cli import main

    assert main(["data", "generate", "--out", "/proc/mmads-cannot-write-here", "--no-images"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "/proc/mmads-cannot-write-here" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmads.datagen import generate_dataset

    out = tmp_path_factory.mktemp("tiny") / "data"
    generate_dataset(out, seed=3, scale=0.01, images=False, progress=False)
    return out


def test_data_generate_refuses_a_non_empty_out_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from mmads.cli import main

    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["data", "generate", "--out", str(out), "--no-images", "--scale", "0.01"]
    assert main(argv) == 1
    assert "is not empty; pass --force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([*argv, "--force"]) == 0
    assert (out / "items.parquet").is_file() and (out / "notes.txt").read_text() == "mine"


def test_data_validate_takes_data_or_the_positional(tiny_data: Path, capsys: pytest.CaptureFixture[str]):
    from mmads.cli import main

    assert main(["data", "validate", "--data", str(tiny_data), "--no-decode"]) == 0
    assert main(["data", "validate", str(tiny_data), "--no-decode"]) == 0
    assert capsys.readouterr().out.count("is valid") == 2
    assert main(["data", "validate"]) == 1
    assert "--data DIR" in capsys.readouterr().err


def test_a_run_that_fails_validation_leaves_no_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from mmads.cli import main

    run = tmp_path / "run"
    assert main(["run", "--data", str(tmp_path / "missing"), "--out", str(run)]) == 1
    assert not run.exists()
    assert "run directory removed" in capsys.readouterr().err


def test_a_failed_run_keeps_an_existing_run_dir(tmp_path: Path):
    from mmads.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("x")
    assert main(["run", "--data", str(tmp_path / "missing"), "--out", str(run)]) == 1
    assert (run / "keep.txt").is_file()


def test_demo_regenerates_data_of_another_seed(tiny_data: Path, tmp_path: Path):
    import shutil

    from mmads.commands.pipeline import demo_data
    from mmads.datagen import generation_params

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    assert demo_data(data, seed=3, scale=0.01, images=False).startswith("skipped")
    said = demo_data(data, seed=4, scale=0.01, images=False)
    assert said.startswith("regenerated: it held seed 3")
    assert generation_params(data) == {"seed": 4, "scale": 0.01, "image_size": 64, "images": False, "regime": "default"}


def test_features_out_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from mmads.cli import main

    assert main(["features", "build-training-set", "--data", str(tmp_path), "--out", str(tmp_path / "t.parquet")]) == 1
    assert "--out is a directory" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "why"), [
    (["bench", "features", "--behaviors-only"], "--behaviors-only applies to the streaming benchmark"),
    (["bench", "serving", "--bursty"], "--bursty applies to the streaming benchmark"),
    (["bench", "streaming", "--bursty", "--behaviors-only"], "pick one"),
])
def test_streaming_bench_flags_are_refused_elsewhere(argv: list[str], why: str,
                                                     capsys: pytest.CaptureFixture[str]):
    from mmads.cli import main

    assert main(argv) == 1  # refused before any stack starts
    assert why in capsys.readouterr().err
