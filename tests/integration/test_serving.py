"""The ranking service against the real Feast online store (SQLite) and Milvus Lite server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from benchmarks.serving_world import World, build_world
from feature_repo.simtier import SIMTIER_COLUMNS, simtier
from infra.config import MmadsConfig
from infra.milvus import milvus_client
from infra.processes import free_port
from serving.app import create_app
from serving.model_loader import load_model
from training.models.inputs import ItemVectorLookup
from training.models.ranker import Ranker

pytestmark = pytest.mark.integration

TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def cfg(stack_cfg: MmadsConfig, tmp_path_factory: pytest.TempPathFactory) -> MmadsConfig:
    return stack_cfg.with_overrides(
        state_dir=tmp_path_factory.mktemp("serving_state"),
        model={"dim": 8, "history_len": 5},
        milvus={"collection": "serving_it"},
        serving={"max_candidates": 50, "max_k": 20},
    )


@pytest.fixture(scope="module")
def world(cfg: MmadsConfig, tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(cfg, tmp_path_factory.mktemp("run"), n_items=60, n_users=8, seed=3)


@pytest.fixture(scope="module")
def client(world: World, cfg: MmadsConfig) -> Iterator[TestClient]:
    with TestClient(create_app(world.run_dir, cfg)) as c:
        yield c


def offline_scores(world: World, ranker: Ranker, cfg: MmadsConfig, user_id: int, cands: list[int]) -> np.ndarray:
    """The training path: item vectors and history from the tables, SimTier by the shared function."""
    d, t = cfg.model.dim, cfg.model.n_tiers
    vec = dict(zip(world.items["item_id"].tolist(), world.items["emb"], strict=True))
    cat = dict(zip(world.items["item_id"].tolist(), world.items["category"], strict=True))
    row = world.users[world.users["user_id"] == user_id]
    hist = row["hist_item_ids"].iloc[0] if len(row) else []
    target = np.stack([vec.get(i, np.zeros(d, np.float32)) for i in cands])
    history = np.stack([vec[h] for h in hist]) if hist else np.zeros((0, d), np.float32)
    sim = simtier(target, history, None, t)
    frame = pd.DataFrame({
        "user_id": user_id, "item_id": cands, "category": [cat.get(i) for i in cands],
        "has_emb": [i in vec for i in cands], "item_emb": list(target), "hist_item_ids": [list(hist)] * len(cands),
    })
    for k, col in enumerate(SIMTIER_COLUMNS(t)):
        frame[col] = sim[:, k]
    return ranker.score(frame, ItemVectorLookup.from_frame(world.items))


def _scores(body: dict) -> dict[int, float]:
    return {it["item_id"]: it["score"] for it in body["items"]}


def test_rank_scores_equal_the_offline_model(client: TestClient, world: World, cfg: MmadsConfig):
    ranker = load_model(world.run_dir, cfg).ranker
    cands = world.items["item_id"].tolist()[::3] + world.missing_item_ids.tolist()
    for user in (1, 2, 8):  # user 8 is outside the model's vocabulary
        res = client.post("/rank", json={"user_id": user, "candidate_item_ids": cands})
        assert res.status_code == 200, res.text
        body = res.json()
        got = _scores(body)
        want = offline_scores(world, ranker, cfg, user, cands)
        np.testing.assert_allclose([got[i] for i in cands], want, atol=1e-5, rtol=0)
        assert body["model_version"] == ranker.model_version
        assert [it["score"] for it in body["items"]] == sorted(got.values(), reverse=True)
    # the comparison has teeth: the features move the scores far more than the tolerance
    assert np.ptp(want) > 1e-2


def test_candidate_without_embedding_is_scored_and_listed(client: TestClient, world: World):
    missing = world.missing_item_ids.tolist() + [987654]
    cands = world.items["item_id"].tolist()[:5] + missing
    body = client.post("/rank", json={"user_id": 1, "candidate_item_ids": cands, "top_k": 20}).json()
    assert sorted(body["missing_embeddings"]) == sorted(missing)
    assert set(_scores(body)) == set(cands)
    assert all(0.0 < s < 1.0 for s in _scores(body).values())


def test_unknown_user_is_ranked_with_an_empty_history(client: TestClient, world: World, cfg: MmadsConfig):
    cands = world.items["item_id"].tolist()[:10]
    body = client.post("/rank", json={"user_id": 4242, "candidate_item_ids": cands, "top_k": 3}).json()
    assert len(body["items"]) == 3
    ranker = load_model(world.run_dir, cfg).ranker
    want = dict(zip(cands, offline_scores(world, ranker, cfg, 4242, cands), strict=True))
    for it in body["items"]:
        assert abs(it["score"] - want[it["item_id"]]) <= 1e-5
    assert body["items"][0]["score"] == pytest.approx(max(want.values()), abs=1e-5)


@pytest.mark.parametrize(("body", "status", "message"), [
    (b'{"user_id": 1, "candidate_item_ids": [1, 2', 400, "malformed JSON"),
    (b'{"user_id": "", "candidate_item_ids": [1]}', 422, "user_id: invalid id '': an id cannot be the empty"),
    (b'{"user_id": 1, "candidate_item_ids": [1.5]}', 422, "candidate_item_ids.0: invalid id 1.5: an id is an"),
    (b'{"user_id": 1, "candidate_item_ids": []}', 422, "candidate_item_ids is empty"),
    (b'{"user_id": 1, "candidate_item_ids": [' + b",".join(str(i).encode() for i in range(51)) + b"]}", 422,
     "has 51 ids, more than the limit of 50"),
    (b'{"user_id": 1, "candidate_item_ids": [3, 3]}', 422, "duplicate ids: 3"),
    (b'{"user_id": 1, "candidate_item_ids": [-3]}', 422, "invalid id -3: an integer id must be in 0.."),
    (b'{"user_id": -1, "candidate_item_ids": [3]}', 422, "invalid id -1: an integer id must be in 0.."),
])
def test_bad_rank_input_gets_4xx_with_a_message(client: TestClient, body: bytes, status: int, message: str):
    res = client.post("/rank", content=body, headers={"content-type": "application/json"})
    assert res.status_code == status
    assert message in res.json()["detail"]
    assert "Traceback" not in res.text


@pytest.mark.parametrize(("method", "url", "body", "status", "message"), [
    ("POST", "/recommend", b'{"user_id": 1, "k": 21}', 422, "k = 21 is more than the limit of 20"),
    ("POST", "/recommend", b'{"user_id": 1, "k": "5"}', 422, "k: Input should be a valid integer"),
    ("POST", "/recommend", b"not json", 400, "malformed JSON"),
    ("GET", "/similar/abc", None, 404, "item abc has no multimodal vector"),
    ("GET", "/similar/5?k=21", None, 422, "k"),
    ("GET", "/similar/-5", None, 404, "has no multimodal vector"),
    ("GET", "/nowhere", None, 404, "Not Found"),
    ("GET", "/rank", None, 405, "Method Not Allowed"),
])
def test_bad_input_on_other_endpoints(client: TestClient, method: str, url: str, body: bytes | None, status: int,
                                      message: str):
    res = client.request(method, url, content=body)
    assert res.status_code == status
    assert message in res.json()["detail"]


def test_retrieval_finds_the_users_cluster_and_skips_the_history(client: TestClient, world: World):
    service = client.app.state.service  # type: ignore[attr-defined]
    cat = dict(zip(world.items["item_id"], world.items["category"], strict=True))
    for _, user in world.users.iterrows():
        history = service.fetcher.user_history(int(user["user_id"]))
        assert history.item_ids.tolist() == list(user["hist_item_ids"])
        ids, source, _ = service.retrieve(history, pool=5)
        assert source == "ann" and len(ids) == 5 == len(set(ids))
        assert not set(ids) & set(user["hist_item_ids"])
        hist_cat = cat[user["hist_item_ids"][0]]
        assert sum(cat[i] == hist_cat for i in ids) >= 4, (ids, hist_cat)


def test_recommend_ranks_retrieved_items(client: TestClient, world: World):
    user = world.users.iloc[0]
    body = client.post("/recommend", json={"user_id": int(user["user_id"]), "k": 10}).json()
    assert body["source"].startswith("ann")
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 10 == len(set(ids)) and not set(user["hist_item_ids"]) & set(ids)
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert body["timing_ms"]["ann"] > 0 and body["timing_ms"]["features"] > 0


def test_recommend_cold_user_gets_the_freshest_items(client: TestClient, world: World):
    body = client.post("/recommend", json={"user_id": 5555, "k": 5}).json()
    assert body["source"] == "fresh"
    newest = world.items.sort_values(["created_at", "item_id"], ascending=[False, True])["item_id"].tolist()
    pool = set(newest[:100])
    assert len(body["items"]) == 5 and {it["item_id"] for it in body["items"]} <= pool


def test_similar_returns_the_nearest_items(client: TestClient, world: World):
    item = int(world.items["item_id"].iloc[4])
    body = client.get(f"/similar/{item}", params={"k": 5}).json()
    ids = [it["item_id"] for it in body["items"]]
    vecs = np.stack(world.items["emb"].to_list())
    sims = vecs @ vecs[4]
    order = [int(world.items["item_id"].iloc[j]) for j in np.argsort(-sims) if j != 4][:5]
    assert ids == order
    assert body["items"][0]["similarity"] == pytest.approx(float(np.sort(sims)[-2]), abs=1e-4)
    assert body["items"][0]["category"] is not None
    res = client.get("/similar/123456789")
    assert res.status_code == 404
    assert "has no multimodal vector" in res.json()["detail"]


def test_healthz_and_metrics(client: TestClient, world: World):
    res = client.get("/healthz")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["status"] == "ok" and body["feast"]["ok"] and body["milvus"]["ok"]
    assert all(e["ready"] for e in body["endpoints"].values())
    assert client.get("/healthz", params={"strict": "true"}).status_code == 200
    text = client.get("/metrics").text
    assert 'mmads_serving_requests_total{endpoint="/rank",status="200"}' in text
    assert 'mmads_serving_requests_total{endpoint="/rank",status="422"}' in text
    assert "mmads_serving_feature_fetch_seconds_count" in text
    assert "mmads_serving_ann_seconds_count" in text
    assert 'mmads_serving_errors_total{endpoint="/rank",kind="RequestError"}' in text
    assert f'mmads_serving_model_info{{model_version="{body["model"]["model_version"]}"' in text


def test_feast_unreachable_is_503_with_the_reason(world: World, cfg: MmadsConfig, tmp_path: Path):
    # retry=null: fail fast (redis-py 7 otherwise retries a refused connection with backoff for ~9 s)
    dead = cfg.with_overrides(state_dir=tmp_path, feast={
        "online_store": "redis", "redis_connection_string": f"127.0.0.1:{free_port()},retry=null"})
    (tmp_path / "feature_repo").mkdir()
    shutil.copy(Path(cfg.state_dir) / "feature_repo" / "registry.db", tmp_path / "feature_repo" / "registry.db")
    with TestClient(create_app(world.run_dir, dead)) as c:
        res = c.post("/rank", json={"user_id": 1, "candidate_item_ids": [1000, 1001]})
        assert res.status_code == 503
        assert "Feast online store (redis) unreachable" in res.json()["detail"]
        assert "Traceback" not in res.text
        health = c.get("/healthz")
        assert health.status_code == 503 and health.json()["feast"]["ok"] is False


def test_healthz_names_the_ready_endpoints_while_milvus_has_no_collection(world: World, cfg: MmadsConfig):
    # a fresh state dir after `stack up`: Feast applied and the model loaded, nothing indexed yet
    unindexed = cfg.with_overrides(milvus={"collection": "never_indexed"})
    with TestClient(create_app(world.run_dir, unindexed)) as c:
        res = c.get("/healthz")
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["status"] == "degraded"
        assert body["endpoints"]["/rank"]["ready"] is True
        assert body["endpoints"]["/recommend"] == {"ready": False, "needs": ["model", "feast", "milvus"]}
        assert body["endpoints"]["/similar"]["ready"] is False
        assert "'never_indexed' does not exist yet" in body["milvus"]["detail"]
        assert c.get("/healthz", params={"strict": "true"}).status_code == 503
        assert c.post("/rank", json={"user_id": 1, "candidate_item_ids": [1000, 1001]}).status_code == 200
        assert c.get("/similar/1000").status_code == 503


def test_a_released_collection_is_loaded_again_on_first_use(world: World, cfg: MmadsConfig):
    # what a restarted Milvus Lite server (stack down, then up on the same state dir) looks like
    client = milvus_client(cfg)
    for first in ("/similar/1000?k=3", "/healthz"):
        client.release_collection(cfg.milvus.collection)
        assert client.get_load_state(cfg.milvus.collection)["state"].name == "NotLoad"
        with TestClient(create_app(world.run_dir, cfg)) as c:
            res = c.get(first)
            assert res.status_code == 200, res.text
            assert c.get("/similar/1000", params={"k": 3}).status_code == 200
        assert client.get_load_state(cfg.milvus.collection)["state"].name == "Loaded"


def test_feature_repo_never_applied_is_503(world: World, cfg: MmadsConfig, tmp_path: Path):
    with TestClient(create_app(world.run_dir, cfg.with_overrides(state_dir=tmp_path))) as c:
        res = c.post("/rank", json={"user_id": 1, "candidate_item_ids": [1000]})
        assert res.status_code == 503
        assert "never applied" in res.json()["detail"]


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_concurrent_requests_during_hot_reload_all_succeed(world: World, cfg: MmadsConfig,
                                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(cfg.serving.token_env, TOKEN)
    app = create_app(world.run_dir, cfg)
    versions = {name: load_model(world.run_dir, cfg, name).model_version for name in world.model_names}
    cands = world.items["item_id"].tolist()[:40]
    stop = threading.Event()

    def hammer() -> list[tuple[int, str]]:
        out = []
        with httpx.Client(timeout=30) as h:
            while not stop.is_set():
                r = h.post(f"{base}/rank", json={"user_id": 2, "candidate_item_ids": cands})
                out.append((r.status_code, r.json().get("model_version", r.text)))
        return out

    with running(app) as base, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer) for _ in range(4)]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(timeout=60) as h:
            assert h.post(f"{base}/admin/reload", json={"model": "simtier"}).status_code == 401
            for name in ("simtier", "simtier_make", "simtier", "simtier_make"):
                time.sleep(0.3)
                r = h.post(f"{base}/admin/reload", json={"model": name, "run_dir": str(world.run_dir)}, headers=auth)
                assert r.status_code == 200, r.text
                assert r.json()["model_version"] == versions[name]
            bad = h.post(f"{base}/admin/reload", json={"run_dir": "/no/such/run"}, headers=auth)
            assert bad.status_code == 409 and "does not exist" in bad.json()["detail"]
            time.sleep(0.3)
        stop.set()
        results = [r for f in futures for r in f.result()]
    assert len(results) >= 20
    assert all(status == 200 for status, _ in results), {s for s, _ in results}
    assert {v for _, v in results} == set(versions.values())  # both models answered, none failed


def test_binding_beyond_loopback_needs_a_token(world: World, cfg: MmadsConfig, monkeypatch: pytest.MonkeyPatch):
    from infra.errors import ConfigError
    from serving.server import serve

    monkeypatch.delenv(cfg.serving.token_env, raising=False)
    with pytest.raises(ConfigError, match=f"set the environment variable {cfg.serving.token_env}"):
        serve(world.run_dir, cfg, host="0.0.0.0", port=free_port())


@contextmanager
def _service_process(world: World, cfg: MmadsConfig, tmp_path: Path, *args: str,
                     env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], Path, str]]:
    """``mmads serve`` on a copy of the world's run in a child process, until /healthz answers 200.

    Yields the process, the run directory (a copy the test may change) and the base URL; on exit the
    process gets SIGTERM and must stop cleanly.
    """
    run = tmp_path / "run"
    shutil.copytree(world.run_dir, run)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MMADS_")}
    child_env |= {"MMADS_CONFIG": str(config), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "mmads", "serve", "--run", str(run), "--port", str(port), *args],
                            env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the service did not start"
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield proc, run, base
    finally:
        proc.terminate()
        code = proc.wait(30)
    # uvicorn shuts down gracefully, then re-raises the captured SIGTERM (exit by that signal)
    assert code in (0, -signal.SIGTERM)


def test_sighup_reloads_the_run_without_failing_requests(world: World, cfg: MmadsConfig, tmp_path: Path):
    body = {"user_id": 1, "candidate_item_ids": world.items["item_id"].tolist()[:20]}
    with _service_process(world, cfg, tmp_path) as (proc, run, base), httpx.Client(timeout=30) as h:
        versions = {name: load_model(run, cfg, name).model_version for name in world.model_names}
        assert h.post(f"{base}/rank", json=body).json()["model_version"] == versions["simtier_make"]
        (run / "serving.json").write_text(json.dumps({"model": "simtier"}))
        proc.send_signal(signal.SIGHUP)
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = h.post(f"{base}/rank", json=body)
            assert r.status_code == 200, r.text
            seen.append(r.json()["model_version"])
            if seen[-1] == versions["simtier"]:
                break
        assert seen[-1] == versions["simtier"], seen[-3:]


def test_json_logs_of_the_service_and_its_workers(world: World, cfg: MmadsConfig, tmp_path: Path):
    body = {"user_id": 1, "candidate_item_ids": world.items["item_id"].tolist()[:5]}
    with _service_process(world, cfg, tmp_path, "--workers", "2", env={"MMADS_LOGGING__FORMAT": "json"}) as (
            proc, _, base):
        assert httpx.post(f"{base}/rank", json=body, timeout=30).status_code == 200
    assert proc.stdout is not None
    lines = [line for line in proc.stdout.read().decode().split("\n") if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "job", "pid", "message"} <= set(d) and d["job"] == "serving" for d in docs), docs
    workers = {d["pid"] for d in docs if d["message"].startswith("worker ")}
    assert len(workers) == 2 and proc.pid not in workers  # the spawned workers log JSON too
    assert any(d["logger"].startswith("uvicorn") for d in docs)  # uvicorn's own lines as well


def test_two_workers_share_the_port_and_reload_together(world: World, cfg: MmadsConfig, tmp_path: Path):
    token = {cfg.serving.token_env: "t0ken-for-admin"}
    body = {"user_id": 1, "candidate_item_ids": world.items["item_id"].tolist()[:20]}
    answers: list[tuple[int, str, str]] = []  # (status, worker pid, model version) of the background load
    stop = threading.Event()
    with _service_process(world, cfg, tmp_path, "--workers", "2", env=token) as (_, run, base):
        versions = {name: load_model(run, cfg, name).model_version for name in world.model_names}

        def load() -> None:  # a fresh connection per request: the kernel spreads them over the workers
            while not stop.is_set():
                try:
                    r = httpx.post(f"{base}/rank", json=body, timeout=30)
                except httpx.HTTPError as exc:
                    answers.append((-1, "", f"{exc.__class__.__name__}: {exc}"))
                    continue
                answers.append((r.status_code, r.headers.get("x-mmads-worker", ""),
                                r.json().get("model_version", "") if r.status_code == 200 else r.text))

        threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        try:
            for t in threads:
                t.start()
            time.sleep(3)
            before = len(answers)
            assert len({pid for _, pid, _ in answers[:before]}) == 2  # both workers answer
            r = httpx.post(f"{base}/admin/reload", json={"model": "simtier"}, timeout=60,
                           headers={"Authorization": f"Bearer {token[cfg.serving.token_env]}"})
            assert r.status_code == 200, r.text
            assert r.json()["model_version"] == versions["simtier"] and "workers" in r.json()
            old_pids = {pid for _, pid, _ in answers[:before]}
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:  # until two replacement workers serve the new model
                recent = answers[-20:]
                pids = {pid for _, pid, _ in recent}
                if len(answers) > before + 20 and {v for _, _, v in recent} == {versions["simtier"]} \
                        and len(pids) == 2 and not pids & old_pids:
                    break
                time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert all(status == 200 for status, _, _ in answers), [a for a in answers if a[0] != 200][:3]
    assert {v for _, _, v in answers[-20:]} == {versions["simtier"]}
    assert not old_pids & {pid for _, pid, _ in answers[-20:]}  # every worker was replaced


def test_a_stale_fresh_list_is_served_while_one_thread_replaces_it(cfg: MmadsConfig,
                                                                   monkeypatch: pytest.MonkeyPatch):
    import serving.retrieval as retrieval
    from streaming.milvus_sink import MilvusSink

    cfg = cfg.with_overrides(milvus={"collection": "fresh_refresh_it"})
    sink = MilvusSink(cfg, 4)
    sink.ensure_collection()
    rng = np.random.default_rng(0)

    def add(ids: list[int], created_ms: list[int]) -> None:
        sink.upsert(np.array(ids, np.int64), rng.standard_normal((len(ids), 4)).astype(np.float32),
                    ["c"] * len(ids), np.array(created_ms, np.int64), "v1")
        sink.maybe_flush(force=True)

    now_ms = int(time.time() * 1000)
    add([1, 2, 3], [now_ms - 3000, now_ms - 2000, now_ms - 1000])
    r = retrieval.Retriever(cfg)
    try:
        assert r.fresh_items(2).tolist() == [3, 2]  # cold cache: read on the caller's thread
        add([4], [now_ms])
        assert r.fresh_items(2).tolist() == [3, 2]  # within the TTL: cached
        monkeypatch.setattr(retrieval, "FRESH_TTL_S", 0.0)
        assert r.fresh_items(2).tolist() == [3, 2]  # stale: served as is, replaced in the background
        deadline = time.monotonic() + 10
        while r.fresh_items(2).tolist() != [4, 3] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.fresh_items(2).tolist() == [4, 3]
        assert r.fresh_items(4).tolist() == [4, 3, 2, 1]  # the cache holds every row read, not just n
    finally:
        r.close()
        sink.close()


def test_string_ids_are_answered_as_written(world: World, cfg: MmadsConfig):
    """Items indexed under string ids: /similar, /rank and /recommend answer with the spellings."""
    from infra.ids import id_to_int64
    from streaming.milvus_sink import MilvusSink

    cfg = cfg.with_overrides(milvus={"collection": "string_ids_it"})
    sink = MilvusSink(cfg, cfg.model.dim)
    sink.ensure_collection()
    skus = ["sku-a", "sku-b", "sku-c", "007"]  # "007" is not canonical: a string id, not 7
    base = np.stack(world.items["emb"].to_list()[:4]).astype(np.float32)
    ids = np.array([id_to_int64(s) for s in skus], np.int64)
    sink.upsert(ids, base, ["c"] * 4, np.full(4, int(time.time() * 1000), np.int64), "v1", item_keys=skus)
    sink.maybe_flush(force=True)
    sink.close()
    with TestClient(create_app(world.run_dir, cfg)) as c:
        body = c.get("/similar/sku-a", params={"k": 3}).json()
        assert body["item_id"] == "sku-a"
        assert {it["item_id"] for it in body["items"]} == {"sku-b", "sku-c", "007"}
        known = int(world.items["item_id"].iloc[0])
        user = int(world.users["user_id"].iloc[0])
        ranked = c.post("/rank", json={"user_id": user, "candidate_item_ids": ["sku-b", known]}).json()
        assert {it["item_id"] for it in ranked["items"]} == {"sku-b", known}
        assert ranked["missing_embeddings"] == ["sku-b"]  # no Feast row: scored without multimodal features
        rec = c.post("/recommend", json={"user_id": "nobody-yet", "k": 4}).json()
        assert {it["item_id"] for it in rec["items"]} == set(skus)  # a cold user: the freshest items
        assert c.get("/similar/unknown-sku").status_code == 404
