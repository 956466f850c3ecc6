"""Run the ranking service on uvicorn, with SIGHUP hot reload.

``serve`` binds ``cfg.serving.host`` (127.0.0.1 by default); binding anything else needs the bearer
token in ``$<cfg.serving.token_env>`` (see :mod:`serving.auth`). SIGHUP re-reads the current run
directory in a background thread (load fully, probe, swap one reference), exactly like
``POST /admin/reload`` without a body; a failed reload is logged and the old model keeps serving.
SIGINT/SIGTERM stop uvicorn gracefully (in-flight requests finish).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import torch
import uvicorn

from infra.config import MmadsConfig
from infra.errors import MmadsError
from infra.redact import redact_logs
from serving.app import create_app
from serving.ranker_service import RankingService

logger = logging.getLogger(__name__)

# Per-request batches are small (<= 1000 rows): one intra-op thread per request scores fastest and
# lets concurrent requests use the cores instead of contending inside one matmul.
TORCH_THREADS = 1


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
          model: str | None = None, log_level: str = "info") -> None:
    """Serve ``run_dir``'s model until SIGINT/SIGTERM.

    Args:
        run_dir: the trained run directory.
        cfg: the configuration.
        host: the bind address (default ``cfg.serving.host``, i.e. 127.0.0.1).
        port: the port (default ``cfg.serving.port``).
        model: the model name to serve (default: the run's best, see ``serving.model_loader``).
        log_level: uvicorn's log level.

    Raises:
        ConfigError: a non-loopback ``host`` without the token variable set.
        ModelArtifactError: the run directory or model is missing or does not fit the config.
    """
    host = host or cfg.serving.host
    port = port or cfg.serving.port
    torch.set_num_threads(TORCH_THREADS)
    app = create_app(Path(run_dir), cfg, model=model, host=host)
    install_sighup(app.state.service)
    logger.info("serving %s on http://%s:%d", app.state.service.served.model_version, host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=10, lifespan="off")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's own handlers
        redact_logs(logging.getLogger(name))
    uvicorn.Server(config).run()
