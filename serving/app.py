"""The FastAPI app of the ranking service: routes, auth, error answers and metrics.

Endpoints (bodies in :mod:`serving.schemas`):

* ``POST /rank`` - score the given candidates for a user;
* ``POST /recommend`` - retrieve candidates from Milvus by the user's recent behavior, then rank;
* ``GET /similar/{item_id}?k=`` - nearest items by multimodal vector;
* ``GET /healthz`` - which endpoints are ready and why not (model, Feast, Milvus); 200 while ``/rank``
  can answer (``status`` ``ok`` or ``degraded``), 503 when it cannot; ``?strict=true``: 503 unless
  every endpoint is ready;
* ``GET /metrics`` - Prometheus text;
* ``POST /admin/reload`` - load a run directory fully, then swap it in (in-flight requests finish on
  the old model).

Every error is answered as ``{"detail": "<one line>"}`` with a 4xx/5xx status, never a stack trace.
Blocking work (Feast, Milvus, torch) runs in the thread pool, so the event loop keeps accepting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.config import MmadsConfig
from infra.errors import MmadsError
from infra.ids import InvalidIdError, id_to_int64
from serving.auth import AuthPolicy
from serving.errors import http_status
from serving.metrics import MetricsMiddleware, ServiceMetrics, endpoint_label
from serving.ranker_service import RankingService
from serving.schemas import (
    ErrorResponse,
    Limits,
    RankRequest,
    RankResponse,
    RecommendRequest,
    ReloadRequest,
    SimilarResponse,
    parse_request,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Blocking request work (Feast, Milvus, torch) runs in worker threads; more than a few at once only
# contend for the GIL and the cores, so extra requests queue instead (better tail latency under load).
WORKER_THREADS = 4

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409,
                                                                                       422, 503)}


def _error_response(request: Request, status: int, message: str, kind: str) -> JSONResponse:
    metrics: ServiceMetrics = request.app.state.metrics
    metrics.error(endpoint_label(request.url.path), kind)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_mmads_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MmadsError)  # registered for MmadsError only
        status = http_status(exc)
        if status >= 500:
            logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        return _error_response(request, status, str(exc), exc.__class__.__name__)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]]
        return _error_response(request, 422, "invalid request: " + "; ".join(parts), "RequestValidationError")

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error_response(request, exc.status_code, str(exc.detail), "HTTPException")

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error_response(request, 500, f"internal error ({exc.__class__.__name__}); see the service log",
                               exc.__class__.__name__)

    app.add_exception_handler(MmadsError, on_mmads_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def _add_routes(app: FastAPI, service: RankingService, limits: Limits) -> None:
    limiter = CapacityLimiter(WORKER_THREADS)

    async def run_in_threadpool(fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    @app.post("/rank", response_model=RankResponse, responses=ERRORS)
    async def rank(request: Request) -> JSONResponse:
        req = parse_request(RankRequest, await request.body(), limits)
        return JSONResponse(await run_in_threadpool(service.rank, req))

    @app.post("/recommend", response_model=RankResponse, responses=ERRORS)
    async def recommend(request: Request) -> JSONResponse:
        req = parse_request(RecommendRequest, await request.body(), limits)
        return JSONResponse(await run_in_threadpool(service.recommend, req))

    @app.get("/similar/{item_id}", response_model=SimilarResponse, responses=ERRORS)
    async def similar(item_id: str, k: int = Query(10, ge=1, le=limits.max_k)) -> JSONResponse:
        try:  # a canonical decimal is the integer id; any other text is a string id
            id_to_int64(item_id)
        except InvalidIdError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return JSONResponse(await run_in_threadpool(service.similar, item_id, k))

    @app.get("/healthz", responses=ERRORS)
    async def healthz(strict: bool = Query(False, description="503 unless every endpoint is ready")) -> JSONResponse:
        rank_ready, detail = await run_in_threadpool(service.health)
        healthy = detail["status"] == "ok" if strict else rank_ready
        return JSONResponse(detail, status_code=200 if healthy else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/admin/reload", responses=ERRORS)
    async def reload(request: Request) -> JSONResponse:
        body = await request.body()
        req = parse_request(ReloadRequest, body, limits) if body.strip() else ReloadRequest()
        run_dir = Path(req.run_dir) if req.run_dir else None
        return JSONResponse(await run_in_threadpool(service.reload, run_dir, req.model))


def create_app(
    run_dir: Path, cfg: MmadsConfig, *, model: str | None = None, host: str | None = None,
    service: RankingService | None = None,
) -> FastAPI:
    """Build the ranking service app; the model is loaded (and checked) before this returns.

    Feast and Milvus are opened lazily on the first request that needs them, so the app starts
    (and ``/healthz`` says what is missing) while a part of the stack is still coming up.

    Args:
        run_dir: the trained run directory (``RUN_DIR/ctr/models/<name>``).
        cfg: the configuration (stack endpoints, feature shapes, ``serving`` limits and token).
        model: the model name to serve (default: ``RUN_DIR/serving.json``, else ``simtier_make``).
        host: the address the service will bind (decides the auth policy; default ``cfg.serving.host``).
        service: an already built service (tests); default builds one from ``run_dir`` and ``cfg``.

    Returns:
        The app; ``app.state.service`` is the :class:`RankingService` (SIGHUP reload uses it).

    Raises:
        ConfigError: binding a non-loopback host without a token in ``cfg.serving.token_env``.
        ModelArtifactError: the run directory or model is missing or does not fit the config.
    """
    policy = AuthPolicy.for_bind(cfg, host or cfg.serving.host)
    metrics = service.metrics if service is not None else ServiceMetrics()
    service = service or RankingService.create(Path(run_dir), cfg, model=model, metrics=metrics)
    limits = Limits.from_config(cfg.serving)

    async def authorize(request: Request) -> None:
        policy.check(request.url.path, request.headers.get("authorization"))

    app = FastAPI(title="mmads ranking service", version="1", dependencies=[Depends(authorize)])
    app.state.service = service
    app.state.metrics = metrics
    _install_error_handlers(app)
    _add_routes(app, service, limits)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
