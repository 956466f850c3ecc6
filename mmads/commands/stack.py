"""``mmads stack up | down | status``: the embedded stack (Tansu, Milvus Lite, Feast repo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from infra import stack as infra_stack
from infra.config import MmadsConfig
from mmads.commands.common import config_of, format_table


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``stack`` verbs."""
    p = sub.add_parser("stack", help="start, stop or probe the embedded stack")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser("up", help="start Tansu + Milvus Lite, render and apply the Feast repo",
                          epilog="example:\n  mmads stack up --run runs/demo")
    up.set_defaults(handler=_up)
    down = verbs.add_parser("down", help="stop everything the state dir records (clients first)",
                            epilog="example:\n  mmads stack down --run runs/demo")
    down.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    down.set_defaults(handler=_down)
    st = verbs.add_parser("status", help="probe each part and print a table",
                          epilog="example:\n  mmads stack status --run runs/demo")
    st.set_defaults(handler=_status)
    for verb in (up, down, st):
        verb.add_argument("--run", type=Path, metavar="RUN_DIR",
                          help="use the config a run recorded (RUN_DIR/config.yaml: its state dir, ports, "
                               "stores) unless --config or $MMADS_CONFIG is given")


def _definitions_fingerprint(cfg: MmadsConfig) -> str:
    """Hash of what ``feast apply`` depends on: the repo's sources and the config."""
    import hashlib
    from pathlib import Path

    import feature_repo

    h = hashlib.sha256(cfg.model_dump_json(include={"feast", "model", "state_dir"}).encode())
    for src in sorted(Path(feature_repo.__file__).parent.glob("*.py")):
        h.update(src.read_bytes())
    return h.hexdigest()


def stack_up(cfg: MmadsConfig) -> list[infra_stack.PartStatus]:
    """Start the services and apply the Feast repo (skipped when already applied unchanged).

    Returns:
        The status rows of every part, Feast included.
    """
    from feature_repo.data_sources import repo_dir
    from feature_repo.store import apply_repo

    rows = infra_stack.up(cfg)
    stamp = repo_dir(cfg) / ".applied"
    fingerprint = _definitions_fingerprint(cfg)
    registry = repo_dir(cfg) / "registry.db"
    if not (registry.is_file() and stamp.is_file() and stamp.read_text() == fingerprint):
        apply_repo(cfg)
        stamp.write_text(fingerprint)
    return rows + [feast_status(cfg)]


def feast_status(cfg: MmadsConfig) -> infra_stack.PartStatus:
    """Probe the Feast repo: registry applied and the online store answering a read."""
    from feature_repo.store import open_store

    where = f"{cfg.state_dir / 'feature_repo'} ({cfg.feast.online_store})"
    try:
        store = open_store(cfg)
        views = store.list_feature_views()
        store.get_online_features(features=["item_embeddings:category"], entity_rows=[{"item_id": -1}])
    except Exception as exc:  # noqa: BLE001 - a probe reports any failure as unhealthy, in one line
        return infra_stack.PartStatus("feast", False, where, f"{exc.__class__.__name__}: {exc}"[:200])
    return infra_stack.PartStatus("feast", True, where, f"{len(views)} feature views")


def _print_rows(rows: list[infra_stack.PartStatus]) -> None:
    print(format_table(
        ["part", "healthy", "endpoint", "detail"],
        [(r.part, r.healthy, r.endpoint, r.detail) for r in rows],
    ))


def _up(args: argparse.Namespace) -> int:
    cfg = config_of(args, args.run)
    rows = stack_up(cfg)
    _print_rows(rows)
    print(f"state dir: {cfg.state_dir.resolve()}")
    return 0 if all(r.healthy for r in rows) else 1


def _down(args: argparse.Namespace) -> int:
    cfg = config_of(args, args.run)
    stopped = infra_stack.down(cfg, grace_s=args.grace)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _status(args: argparse.Namespace) -> int:
    cfg = config_of(args, args.run)
    rows = infra_stack.status(cfg, extra={"feast": lambda: feast_status(cfg)})
    _print_rows(rows)
    return 0 if all(r.healthy for r in rows) else 1
