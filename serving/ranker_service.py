"""The ranking service's logic: rank, recommend, similar, health and hot reload (no HTTP here).

Scoring: the request's features come from Feast online (:class:`~serving.features.FeatureFetcher`),
are arranged into the training-set schema and scored by :meth:`Ranker.score` in inference mode, the
same input builder and forward pass as the offline evaluation.

Hot reload: :meth:`RankingService.reload` loads the new model completely (and scores a probe row)
before assigning the one reference :attr:`RankingService.served`; a request reads that reference
once at its start, so in-flight requests finish on the model they started with and none fails.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_repo.online import OnlineFeatures, UserRow
from feature_repo.simtier import SIMTIER_COLUMNS
from infra.config import MmadsConfig
from infra.errors import MmadsError, ModelArtifactError
from infra.ids import STRING_ID_BASE, id_to_int64
from serving.features import FeatureFetcher, UserHistory, model_inputs
from serving.metrics import ServiceMetrics
from serving.model_loader import ServedModel, load_model
from serving.retrieval import Retriever, merge_hits
from serving.schemas import DEFAULT_K, RankRequest, RecommendRequest

logger = logging.getLogger(__name__)

# What each endpoint needs to answer; /healthz reports readiness per endpoint from this.
ENDPOINT_NEEDS: dict[str, tuple[str, ...]] = {
    "/rank": ("model", "feast"),
    "/recommend": ("model", "feast", "milvus"),
    "/similar": ("milvus",),
}
MIN_POOL = 100  # /recommend ranks at least this many retrieved candidates (when there are that many)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class RankingService:
    """Ranks candidates for users with the served model; retrieves candidates from Milvus.

    Args:
        cfg: the configuration.
        served: the loaded model.
        fetcher: the Feast feature fetcher.
        retriever: the Milvus retriever.
        metrics: where to record stage timings.
        model_arg: the model name asked for at start (``--model``), kept across reloads.
    """

    def __init__(self, cfg: MmadsConfig, served: ServedModel, fetcher: FeatureFetcher, retriever: Retriever,
                 metrics: ServiceMetrics, model_arg: str | None = None) -> None:
        self.cfg = cfg
        self.fetcher = fetcher
        self.retriever = retriever
        self.metrics = metrics
        self._model_arg = model_arg
        self._reload_lock = threading.Lock()
        # called after a successful reload with (run_dir, model); multi-worker serving sets it
        self.after_reload: Callable[[Path, str | None], None] | None = None
        self._probe(served)
        self.served = served
        metrics.set_model(served.model_version, str(served.run_dir))

    @classmethod
    def create(cls, run_dir: Path, cfg: MmadsConfig, *, model: str | None = None,
               metrics: ServiceMetrics | None = None) -> RankingService:
        """Load the run's model; Feast and Milvus are connected on first use."""
        return cls(cfg, load_model(run_dir, cfg, model), FeatureFetcher(cfg), Retriever(cfg),
                   metrics or ServiceMetrics(), model_arg=model)

    # ---- scoring -------------------------------------------------------------------------------

    def _score(self, served: ServedModel, features: OnlineFeatures, history: UserHistory) -> np.ndarray:
        start = time.perf_counter()
        with torch.inference_mode():
            scores = served.ranker.score_inputs(model_inputs(features, history, served.ranker))
        self.metrics.model.observe(time.perf_counter() - start)
        self.metrics.candidates.observe(len(scores))
        return scores

    def _rank_ids(self, served: ServedModel, user_id: int, item_ids: Sequence[int], top_k: int | None,
                  row: UserRow | None = None) -> tuple[dict[str, Any], dict[str, float]]:
        """Read features, score, sort; returns the response body (without timings) and stage times."""
        t0 = time.perf_counter()
        features = self.fetcher.candidates(user_id, item_ids, row)
        history = self.fetcher.history_of(features, user_id)
        t1 = time.perf_counter()
        self.metrics.feature_fetch.observe(t1 - t0)
        scores = self._score(served, features, history)
        order = np.argsort(-scores, kind="stable")[: top_k or len(scores)]
        ids = features.item_ids[order].tolist()
        body = {
            "items": [{"item_id": i, "score": s} for i, s in zip(ids, scores[order].tolist(), strict=True)],
            "model_version": served.model_version,
            "missing_embeddings": features.missing_item_ids,
        }
        return body, {"features": _ms(t1 - t0), "model": _ms(time.perf_counter() - t1)}

    def _spell(self, body: dict[str, Any], known: dict[int, int | str] | None = None) -> dict[str, Any]:
        """The response's item ids as the dataset wrote them (a request's spelling, else Milvus's)."""
        known = dict(known or {})
        ids = [it["item_id"] for it in body["items"]] + list(body["missing_embeddings"])
        hashed = [i for i in ids if i >= STRING_ID_BASE and i not in known]
        if hashed:
            known.update(self.retriever.keys(hashed))
        return {**body, "items": [{**it, "item_id": known.get(it["item_id"], it["item_id"])} for it in body["items"]],
                "missing_embeddings": [known.get(i, i) for i in body["missing_embeddings"]]}

    def rank(self, req: RankRequest) -> dict[str, Any]:
        """Answer ``POST /rank``: the candidates sorted by click probability, best first.

        An unknown user is ranked with an empty history; a candidate without a vector is scored
        without multimodal features and listed in ``missing_embeddings``. Ids are answered as the
        request spelled them.
        """
        start = time.perf_counter()
        served = self.served  # one read: a concurrent reload cannot change the model mid-request
        spelled = {id_to_int64(i): i for i in req.candidate_item_ids}
        body, timing = self._rank_ids(served, id_to_int64(req.user_id), list(spelled), req.top_k)
        timing["total"] = _ms(time.perf_counter() - start)
        return {**self._spell(body, spelled), "timing_ms": timing, "source": "request"}

    # ---- retrieval -----------------------------------------------------------------------------

    def retrieve(self, history: UserHistory, pool: int) -> tuple[list[int], str, float]:
        """Candidates for a user: ANN by recent behavior vectors, topped up with fresh items.

        Args:
            history: the user's history (ids and vectors, newest first).
            pool: how many candidates to return at most.

        Returns:
            ``(item ids, source, ANN seconds)``; source is ``ann``, ``ann+fresh`` or ``fresh``.
        """
        queries = history.query_vectors(self.cfg.serving.ann_queries)
        exclude = set(history.item_ids.tolist())
        chosen: list[int] = []
        ann_s = 0.0
        if len(queries):
            # Milvus's time grows with queries x hits: ask each query for its share of the pool with
            # 50% slack for overlap between queries, plus room for the user's own (excluded) items,
            # which sit close to the queries; a shortfall is topped up with fresh items.
            share = math.ceil(1.5 * pool / len(queries))
            per_query = share + min(len(exclude), max(share // 2, 8))
            start = time.perf_counter()
            hits = self.retriever.search(queries, per_query)
            ann_s = time.perf_counter() - start
            self.metrics.ann.observe(ann_s)
            chosen = merge_hits(hits, exclude, pool)
        source = "ann" if chosen else "fresh"
        if len(chosen) < pool:
            taken = exclude | set(chosen)
            fresh = [i for i in self.retriever.fresh_items(pool + len(taken)).tolist() if i not in taken]
            if fresh and chosen:
                source = "ann+fresh"
            chosen += fresh[: pool - len(chosen)]
        return chosen, source, ann_s

    def recommend(self, req: RecommendRequest) -> dict[str, Any]:
        """Answer ``POST /recommend``: retrieve from Milvus, then rank like ``/rank``; top ``k``.

        Candidates: one batched ANN search with the user's most recent behavior vectors, merged,
        de-duplicated, the user's own history excluded; a cold user (no history vectors) gets the
        freshest items (see :mod:`serving.retrieval`).
        """
        start = time.perf_counter()
        served = self.served
        t0 = time.perf_counter()
        user_id = id_to_int64(req.user_id)
        row = self.fetcher.user_row(user_id)
        history = self.fetcher.user_history(user_id, row)
        user_s = time.perf_counter() - t0
        k = req.k if req.k is not None else min(DEFAULT_K, self.cfg.serving.max_k)
        pool = min(self.cfg.serving.max_candidates, max(k + k // 2, MIN_POOL))
        candidates, source, ann_s = self.retrieve(history, pool)
        if not candidates:
            body: dict[str, Any] = {"items": [], "model_version": served.model_version, "missing_embeddings": []}
            timing = {"features": _ms(user_s), "model": 0.0}
        else:
            body, timing = self._rank_ids(served, user_id, candidates, k, row=row)
            body = self._spell(body)
            timing["features"] = round(timing["features"] + _ms(user_s), 3)
        timing["ann"] = _ms(ann_s)
        timing["total"] = _ms(time.perf_counter() - start)
        return {**body, "timing_ms": timing, "source": source}

    def similar(self, item_id: int | str, k: int) -> dict[str, Any]:
        """Answer ``GET /similar/{item_id}``: the nearest items by multimodal vector.

        ``item_id`` is the path segment (a canonical decimal is the integer id); neighbours are
        answered with their ids as the dataset wrote them.
        """
        start = time.perf_counter()
        neighbours = self.retriever.similar(id_to_int64(item_id), k, label=item_id)
        elapsed = time.perf_counter() - start
        self.metrics.ann.observe(elapsed)
        items = [{"item_id": n.key if n.key else n.item_id, "similarity": n.similarity, "category": n.category,
                  "created_at_ms": n.created_at_ms} for n in neighbours]
        spelled = id_to_int64(item_id) if isinstance(item_id, str) and id_to_int64(item_id) < STRING_ID_BASE \
            else item_id
        return {"item_id": spelled, "items": items, "timing_ms": {"ann": _ms(elapsed), "total": _ms(elapsed)}}

    # ---- operations ----------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Which endpoints can answer now, and why not: model loaded, Feast readable, Milvus collection.

        ``/rank`` needs the model and Feast; ``/similar`` needs Milvus; ``/recommend`` needs all three.
        So right after ``stack up`` on a fresh state dir ``/rank`` is ready while Milvus has no
        collection yet.

        Returns:
            ``(rank_ready, detail)``; detail has ``status`` (``ok``: every endpoint ready, ``degraded``:
            some, ``down``: none), ``endpoints`` (path -> ``{"ready", "needs"}``), then one entry per part.
        """
        served = self.served
        parts: dict[str, Any] = {
            "model": {"ok": True, "model_version": served.model_version, "name": served.name,
                      "run_dir": str(served.run_dir)},
        }
        for name, probe in (("feast", self._probe_feast), ("milvus", self.retriever.ping)):
            try:
                parts[name] = {"ok": True, "detail": probe()}
            except MmadsError as exc:
                parts[name] = {"ok": False, "detail": str(exc)}
        ready = {path: all(parts[p]["ok"] for p in needs) for path, needs in ENDPOINT_NEEDS.items()}
        endpoints = {path: {"ready": ready[path], "needs": list(needs)} for path, needs in ENDPOINT_NEEDS.items()}
        status = "ok" if all(ready.values()) else "degraded" if any(ready.values()) else "down"
        return ready["/rank"], {"status": status, "endpoints": endpoints, **parts}

    def _probe_feast(self) -> str:
        self.fetcher.user_history(0)
        return f"{self.cfg.feast.online_store} online store readable"

    def _probe(self, served: ServedModel) -> None:
        """Score one synthetic row (empty history, no vector) so a broken model never goes live."""
        t = self.cfg.model.n_tiers
        probe = OnlineFeatures(
            user_id=0, item_ids=np.zeros(1, np.int64), hist_item_ids=np.zeros(0, np.int64),
            item_emb=np.zeros((1, self.cfg.model.dim), np.float32), has_emb=np.zeros(1, bool),
            category=[None], item_created_at=[None], simtier=np.zeros((1, t + 3)),
            simtier_columns=SIMTIER_COLUMNS(t),
            side={n: [None] for n in served.ranker.side.names} if served.ranker.side else {},
        )
        try:
            scores = self._score(served, probe, UserHistory.empty(self.cfg.model.dim))
        except Exception as exc:  # noqa: BLE001 - any failure means this model must not go live
            raise ModelArtifactError(f"model {served.model_version} cannot score a probe row: "
                                     f"{exc.__class__.__name__}: {exc}") from exc
        if scores.shape != (1,) or not np.isfinite(scores).all():
            raise ModelArtifactError(f"model {served.model_version} gave {scores!r} for the probe row")

    def reload(self, run_dir: Path | None = None, model: str | None = None) -> dict[str, Any]:
        """Load a run directory (default: the current one) fully, probe it, then swap it in.

        Args:
            run_dir: the new run directory, or None to re-read the current one.
            model: a model name, or None (the name asked for at start, else the run's best model).

        Returns:
            ``{"model_version", "previous_model_version", "run_dir", "name", "seconds"}``.

        Raises:
            ModelArtifactError: the new run or model is bad; the old model keeps serving.
        """
        with self._reload_lock:
            start = time.perf_counter()
            old = self.served
            try:
                new = load_model(run_dir or old.run_dir, self.cfg, model or self._model_arg)
                self._probe(new)
            except MmadsError:
                self.metrics.reloads.labels(result="failed").inc()
                raise
            self.served = new  # the swap: one reference assignment
            self.metrics.reloads.labels(result="ok").inc()
            self.metrics.set_model(new.model_version, str(new.run_dir))
            seconds = time.perf_counter() - start
            logger.info("reloaded: %s -> %s (%s) in %.2f s", old.model_version, new.model_version, new.run_dir,
                        seconds)
            result: dict[str, Any] = {
                "model_version": new.model_version, "previous_model_version": old.model_version,
                "run_dir": str(new.run_dir), "name": new.name, "seconds": round(seconds, 3)}
            if self.after_reload is not None:
                self.after_reload(new.run_dir, model or self._model_arg)
                result["workers"] = "replacing every worker (rolling, no request fails)"
            return result
