"""Run the ranking service on uvicorn, with SIGHUP hot reload.

``serve`` binds ``cfg.serving.host`` (127.0.0.1 by default); binding anything else needs the bearer
token in ``$<cfg.serving.token_env>`` (see :mod:`serving.auth`). SIGHUP re-reads the current run
directory in a background thread (load fully, probe, swap one reference), exactly like
``POST /admin/reload`` without a body; a failed reload is logged and the old model keeps serving.
SIGINT/SIGTERM stop uvicorn gracefully (in-flight requests finish).

``workers > 1`` runs that many worker processes on one listening socket (one process is bound by
the GIL at ~110 requests/s here; two served 160). The served run is then a pointer file
(``<state_dir>/serving/served-<port>.json``) every worker loads at start. A reload
(``POST /admin/reload`` to any worker, or SIGHUP to the parent) first loads and probes the new
model in the worker that got it, then rewrites the pointer and has uvicorn replace the workers one
by one, each new one serving before its predecessor retires, so no request fails (a retiring worker
still answers the requests it has accepted: see :mod:`serving.draining`). Each worker keeps
its own ``/metrics``; every response names its worker in the ``x-mmads-worker`` header.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG

from infra.config import MmadsConfig, load_config, save_config
from infra.errors import MmadsError
from infra.logs import adopt_pymilvus_logs, setup_logging
from infra.processes import write_json_atomic
from infra.redact import redact_logs
from serving.app import create_app
from serving.draining import http_protocol
from serving.ranker_service import RankingService

logger = logging.getLogger(__name__)

# Per-request batches are small (<= 1000 rows): one intra-op thread per request scores fastest and
# lets concurrent requests use the cores instead of contending inside one matmul.
TORCH_THREADS = 1
POINTER_ENV = "MMADS_SERVING_POINTER"  # set by the parent for its workers
WORKER_START_S = 120  # a new worker imports torch/Feast and loads the model before it serves


def _reload_in_background(service: RankingService) -> None:
    def work() -> None:
        try:
            result = service.reload()
            logger.info("SIGHUP reload done: %s", result)
        except MmadsError as exc:
            logger.error("SIGHUP reload failed, still serving the previous model: %s", exc)

    threading.Thread(target=work, name="mmads-sighup-reload", daemon=True).start()


def install_sighup(service: RankingService) -> None:
    """Make SIGHUP reload ``service`` in a background thread (main thread only; POSIX only)."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        logger.warning("SIGHUP reload not installed (not the main thread, or no SIGHUP on this OS)")
        return

    def on_sighup(signum: int, frame: FrameType | None) -> None:
        logger.info("SIGHUP: reloading %s", service.served.run_dir)
        _reload_in_background(service)

    signal.signal(signal.SIGHUP, on_sighup)


def serve(run_dir: Path, cfg: MmadsConfig, host: str | None = None, port: int | None = None, *,
          model: str | None = None, log_level: str = "info", workers: int = 1) -> None:
    """Serve ``run_dir``'s model until SIGINT/SIGTERM.

    Args:
        run_dir: the trained run directory.
        cfg: the configuration.
        host: the bind address (default ``cfg.serving.host``, i.e. 127.0.0.1).
        port: the port (default ``cfg.serving.port``).
        model: the model name to serve (default: the run's best, see ``serving.model_loader``).
        log_level: uvicorn's log level.
        workers: worker processes on the one socket (see the module docstring).

    Raises:
        ConfigError: a non-loopback ``host`` without the token variable set.
        ModelArtifactError: the run directory or model is missing or does not fit the config.
    """
    host = host or cfg.serving.host
    port = port or cfg.serving.port
    if workers > 1:
        _serve_workers(Path(run_dir), cfg, host, port, model, log_level, workers)
        return
    torch.set_num_threads(TORCH_THREADS)
    app = create_app(Path(run_dir), cfg, model=model, host=host)
    install_sighup(app.state.service)
    logger.info("serving %s on http://%s:%d", app.state.service.served.model_version, host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=10, lifespan="off", http=http_protocol(),
                            log_config=_uvicorn_log_config(cfg))
    _redact_logs()
    uvicorn.Server(config).run()


def _uvicorn_log_config(cfg: MmadsConfig) -> dict[str, Any] | None:
    """The uvicorn handlers for text logs; none for JSON, so its loggers reach the root's JSON handler."""
    return LOGGING_CONFIG if cfg.logging.format == "text" else None


def _redact_logs() -> None:
    """Mask secrets in the root logger's and uvicorn's own handlers (uvicorn installs its own)."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        redact_logs(logging.getLogger(name))


def pointer_path(cfg: MmadsConfig, port: int) -> Path:
    """The file that names the run the workers on ``port`` serve."""
    return Path(cfg.state_dir) / "serving" / f"served-{port}.json"


def _serve_workers(run_dir: Path, cfg: MmadsConfig, host: str, port: int, model: str | None, log_level: str,
                   workers: int) -> None:
    from serving.auth import AuthPolicy
    from serving.model_loader import load_model

    AuthPolicy.for_bind(cfg, host)  # fail here, once, rather than in every worker
    served = load_model(run_dir, cfg, model)
    pointer = pointer_path(cfg, port)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    config_file = pointer.with_name(f"config-{port}.yaml")
    save_config(cfg, config_file)
    doc = {"run_dir": str(Path(run_dir).resolve()), "model": model, "config": str(config_file), "host": host,
           "workers": workers}
    write_json_atomic(pointer, doc, indent=2)
    os.environ[POINTER_ENV] = str(pointer)
    logger.info("serving %s on http://%s:%d with %d workers", served.model_version, host, port, workers)
    uvicorn.run("serving.server:worker_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=False, timeout_graceful_shutdown=10, lifespan="off",
                timeout_worker_healthcheck=WORKER_START_S, http=http_protocol(), log_config=_uvicorn_log_config(cfg))


def worker_app() -> FastAPI:
    """The app of one worker process: the run named by the pointer file in ``$MMADS_SERVING_POINTER``."""
    pointer = Path(os.environ[POINTER_ENV])
    doc = json.loads(pointer.read_text())
    cfg = load_config(doc["config"], env={})  # the parent's overrides are in the file; secrets in os.environ
    if cfg.logging.format == "json":  # a spawned worker does not inherit the parent's handlers
        adopt_pymilvus_logs()
        setup_logging("json", "serving")
    torch.set_num_threads(TORCH_THREADS)
    _redact_logs()
    app = create_app(Path(doc["run_dir"]), cfg, model=doc["model"], host=doc["host"])
    service: RankingService = app.state.service

    def roll_workers(run_dir: Path, model: str | None) -> None:
        """Point every worker at the model this one just loaded; uvicorn then replaces them one by one."""
        write_json_atomic(pointer, {**doc, "run_dir": str(Path(run_dir).resolve()), "model": model}, indent=2)
        os.kill(os.getppid(), signal.SIGHUP)

    service.after_reload = roll_workers
    logger.info("worker %d serving %s", os.getpid(), service.served.model_version)
    return app
