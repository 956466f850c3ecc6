"""Tests of the deployment files (``infra/compose``, ``infra/k8s``); the checkers live in ``tests/deploy_checks.py``."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import load_config
from serving.auth import is_loopback
from tests.deploy_checks import (
    DOCKERFILE,
    ENV_EXAMPLE,
    K8S_README,
    NAMESPACE,
    REPO_ROOT,
    DeployCheckError,
    EnvValue,
    SecretRef,
    check_cluster_profile,
    check_compose_endpoints,
    check_compose_health,
    check_compose_secrets,
    check_containers,
    check_env_example,
    check_k8s_endpoints,
    check_k8s_objects,
    check_k8s_ranking_service,
    check_k8s_secrets,
    check_no_literal_secrets,
    check_ranking,
    check_streaming,
    compose_containers,
    compose_env,
    compose_mmads_image,
    config_from_env,
    deploy_yaml_files,
    endpoints,
    k8s_containers,
    k8s_workloads,
    load_compose,
    load_k8s,
    parse_cli,
    read_env_example,
    role,
)

# ================================================================================================ tests


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed compose file."""
    return load_compose()


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    """The parsed Kubernetes manifests."""
    return load_k8s()


@pytest.mark.parametrize("path", deploy_yaml_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_deployment_yaml_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def test_deployment_folders_hold_the_expected_files() -> None:
    names = {p.name for p in deploy_yaml_files()}
    assert "docker-compose.yml" in names
    assert len([n for n in names if n != "docker-compose.yml"]) >= 6  # namespace ... ranking
    assert DOCKERFILE.is_file() and ENV_EXAMPLE.is_file() and K8S_README.is_file()


def test_compose_mmads_containers_load_a_valid_cluster_config(compose: dict[str, Any]) -> None:
    containers = compose_containers(compose)
    assert len(containers) >= 5  # init, three jobs, ranking
    configs = check_containers(containers)
    assert all(cfg.profile == "cluster" for _, cfg in configs.values())


def test_k8s_mmads_containers_load_a_valid_cluster_config(k8s: list[dict[str, Any]]) -> None:
    containers = k8s_containers(k8s)
    assert len(containers) >= 5
    configs = check_containers(containers)
    roles = {role(ns) for ns, _ in configs.values()}
    assert {"stack up", "stack status", "serve"} <= roles


def test_compose_endpoints_are_compose_services(compose: dict[str, Any]) -> None:
    check_compose_endpoints(compose)


def test_k8s_endpoints_are_services_of_the_namespace(k8s: list[dict[str, Any]]) -> None:
    check_k8s_objects(k8s)
    check_k8s_endpoints(k8s)


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_streaming_jobs_run_with_replicas_and_health_checks(source: str, compose: dict[str, Any],
                                                            k8s: list[dict[str, Any]]) -> None:
    check_streaming(compose_containers(compose) if source == "compose" else k8s_containers(k8s))


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_ranking_service_port_health_and_token(source: str, compose: dict[str, Any],
                                               k8s: list[dict[str, Any]]) -> None:
    check_ranking(compose_containers(compose) if source == "compose" else k8s_containers(k8s))


def test_k8s_ranking_has_probes_and_a_service(k8s: list[dict[str, Any]]) -> None:
    check_k8s_ranking_service(k8s)


def test_compose_health_checks_and_dependencies(compose: dict[str, Any]) -> None:
    check_compose_health(compose)
    assert any(s.get("restart") == "no" for s in compose["services"].values())  # the init job
    assert {"kafka", "milvus", "etcd", "minio", "redis"} <= set(compose["services"])


def test_compose_has_no_literal_secrets_and_env_example_matches(compose: dict[str, Any]) -> None:
    check_compose_secrets(compose)
    check_env_example(compose, read_env_example())


def test_k8s_has_no_literal_secrets(k8s: list[dict[str, Any]]) -> None:
    check_k8s_secrets(k8s, K8S_README.read_text())


def test_one_image_everywhere(compose: dict[str, Any], k8s: list[dict[str, Any]]) -> None:
    compose_mmads_image(compose)
    assert len({c["image"] for _, pod in k8s_workloads(k8s)
                for key in ("initContainers", "containers") for c in pod.get(key, [])}) == 1


def test_dockerfile_matches_pyproject() -> None:
    text = DOCKERFILE.read_text()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    torch_pin = next(d for d in project["project"]["dependencies"] if d.startswith("torch=="))
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(rf"pip install {re.escape(torch_pin)} --index-url https://download\.pytorch\.org/whl/cpu", text)
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", text, re.M)
    assert entrypoint and json.loads(entrypoint.group(1)) == ["mmads"]
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        part = pattern.rstrip("*")
        if (REPO_ROOT / part).is_dir():
            assert re.search(rf"^COPY {part} ", text, re.M), f"Dockerfile does not copy the {part}/ package"


def test_embedded_default_binds_loopback_only() -> None:
    cfg = load_config(env={})
    assert cfg.profile == "embedded" and is_loopback(cfg.serving.host)
    assert is_loopback(cfg.kafka.host) and is_loopback(cfg.milvus.host)


# ------------------------------------------------------------------------- the checkers can fail


CLUSTER_ENV = {
    "MMADS_PROFILE": "cluster",
    "MMADS_STATE_DIR": "/var/lib/mmads",
    "MMADS_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
    "MMADS_MILVUS__URI": "http://milvus:19530",
    "MMADS_FEAST__ONLINE_STORE": "redis",
    "MMADS_FEAST__REDIS_CONNECTION_STRING": "redis:6379",
}


def test_config_checker_accepts_a_cluster_env_and_secret_variables() -> None:
    cfg = config_from_env({**CLUSTER_ENV, "MMADS_SERVING_TOKEN": "${MMADS_SERVING_TOKEN}"}, "t")
    check_cluster_profile(cfg, "t")
    assert endpoints(cfg) == [("MMADS_KAFKA__BOOTSTRAP_SERVERS", "kafka", 9092),
                              ("MMADS_MILVUS__URI", "milvus", 19530),
                              ("MMADS_FEAST__REDIS_CONNECTION_STRING", "redis", 6379)]


@pytest.mark.parametrize(("extra", "match"), [
    ({"MMADS_KAFKA__BOOTSTRAP_SERVER": "kafka:9092"}, "kafka.bootstrap_server"),
    ({"MMADS_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}, "MMADS_KAFKA_BOOTSTRAP_SERVERS.*neither"),
    ({"MMADS_SERVING_TOKN": "${X}"}, "MMADS_SERVING_TOKN"),
    ({"MMADS_FEAST__ONLINE_STORE": "postgres"}, "online_store"),
    ({"MMADS_CONFIG": "/etc/mmads.yaml"}, "MMADS_CONFIG"),
])
def test_config_checker_rejects_wrong_variables(extra: dict[str, str], match: str) -> None:
    with pytest.raises(DeployCheckError, match=match):
        config_from_env({**CLUSTER_ENV, **extra}, "t")


def test_cluster_checker_rejects_the_embedded_profile() -> None:
    env = {k: v for k, v in CLUSTER_ENV.items() if k not in ("MMADS_PROFILE", "MMADS_MILVUS__URI")}
    with pytest.raises(DeployCheckError, match=r"profile is 'embedded'.*milvus\.uri"):
        check_cluster_profile(config_from_env(env, "t"), "t")


@pytest.mark.parametrize(("env", "interpolation"), [
    ({"MMADS_SERVING_TOKEN": "hunter2"}, True),
    ({"MMADS_SERVING_TOKEN": "${MMADS_SERVING_TOKEN:-hunter2}"}, True),
    ({"MINIO_ROOT_PASSWORD": "minioadmin"}, True),
    ({"MMADS_SERVING_TOKEN": "${MMADS_SERVING_TOKEN}"}, False),
])
def test_secret_checker_rejects_literals(env: dict[str, EnvValue], interpolation: bool) -> None:
    with pytest.raises(DeployCheckError, match="literal value"):
        check_no_literal_secrets(env, "t", interpolation=interpolation)


def test_secret_checker_accepts_references() -> None:
    check_no_literal_secrets({"A_TOKEN": "${A_TOKEN:?set it}", "B_PASSWORD": "${B_PASSWORD:-}",
                              "MMADS_SERVING__TOKEN_ENV": "OTHER_VAR"}, "t", interpolation=True)
    check_no_literal_secrets({"A_TOKEN": SecretRef("s", "A_TOKEN")}, "t", interpolation=False)


@pytest.mark.parametrize(("argv", "match"), [
    (["stream", "item"], "invalid choice"),
    (["serve", "--port", "8700"], "--run"),
    (["serve", "--run", "/runs/current", "--port", 8700], "strings"),
])
def test_cli_checker_rejects_unknown_commands(argv: list[object], match: str) -> None:
    with pytest.raises(DeployCheckError, match=match):
        parse_cli(argv, "t")


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


@pytest.mark.parametrize(("var", "value", "match"), [
    ("MMADS_KAFKA__BOOTSTRAP_SERVERS", "kafak:9092", "no compose service"),
    ("MMADS_KAFKA__BOOTSTRAP_SERVERS", "kafka:9093", "port 9093"),
    ("MMADS_MILVUS__URI", "http://milvus:19531", "port 19531"),
    ("MMADS_FEAST__REDIS_CONNECTION_STRING", "etcd:2379", "does not depend"),
])
def test_compose_endpoint_checker_rejects_wrong_hosts(compose: dict[str, Any], var: str, value: str,
                                                      match: str) -> None:
    broken = copy.deepcopy(compose)
    service = _service(broken, "stream-items")
    service["environment"] = {**compose_env(service), var: value}
    with pytest.raises(DeployCheckError, match=match):
        check_compose_endpoints(broken)


def test_k8s_endpoint_checker_rejects_an_unknown_service(k8s: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(k8s)
    cm = next(d for d in broken if d["kind"] == "ConfigMap")
    cm["data"]["MMADS_MILVUS__URI"] = "http://milvus-standalone:19530"
    with pytest.raises(DeployCheckError, match="no Service"):
        check_k8s_endpoints(broken)
    cm["data"]["MMADS_MILVUS__URI"] = "http://milvus:19531"
    with pytest.raises(DeployCheckError, match="port 19531"):
        check_k8s_endpoints(broken)


def test_health_checker_rejects_missing_checks_and_weak_conditions(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    del _service(broken, "redis")["healthcheck"]
    with pytest.raises(DeployCheckError, match="'redis'.*without a healthcheck"):
        check_compose_health(broken)
    broken = copy.deepcopy(compose)
    _service(broken, "ranking")["depends_on"] = {"kafka": {"condition": "service_started"}}
    with pytest.raises(DeployCheckError, match="service_started"):
        check_compose_health(broken)


def test_streaming_checker_rejects_one_replica_and_a_missing_job(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    _service(broken, "stream-behaviors")["deploy"] = {"replicas": 1}
    with pytest.raises(DeployCheckError, match="1 replica"):
        check_streaming(compose_containers(broken))
    broken = copy.deepcopy(compose)
    del broken["services"]["stream-impressions"]
    with pytest.raises(DeployCheckError, match="not deployed: impressions"):
        check_streaming(compose_containers(broken))


def test_streaming_checker_rejects_jobs_without_reachable_probed_metrics(compose: dict[str, Any],
                                                                        k8s: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(compose)
    _service(broken, "stream-items")["healthcheck"] = {"test": ["CMD", "true"]}
    with pytest.raises(DeployCheckError, match="no probe on /healthz at the metrics port 9400"):
        check_streaming(compose_containers(broken))
    broken = copy.deepcopy(compose)
    _service(broken, "stream-items")["environment"] = {**CLUSTER_ENV, "MMADS_STREAMING__METRICS_HOST": "127.0.0.1"}
    with pytest.raises(DeployCheckError, match="metrics bind 127.0.0.1"):
        check_streaming(compose_containers(broken))
    broken = copy.deepcopy(compose)
    del _service(broken, "stream-behaviors")["expose"]
    with pytest.raises(DeployCheckError, match="metrics on 9400 but declares ports"):
        check_streaming(compose_containers(broken))
    broken = copy.deepcopy(k8s)
    del _workload(broken, "Deployment", "mmads-stream-impressions")["spec"]["template"]["spec"]["containers"][0][
        "readinessProbe"]
    with pytest.raises(DeployCheckError, match="no probe on /readyz"):
        check_streaming(k8s_containers(broken))


@pytest.mark.parametrize(("change", "match"), [
    ({"command": ["serve", "--run", "/runs/current", "--host", "0.0.0.0", "--port", "8701"]}, "serves on 8701"),
    ({"command": ["serve", "--run", "/runs/current", "--port", "8700"]}, "binds 127.0.0.1"),
    ({"environment": {k: v for k, v in CLUSTER_ENV.items()}}, "MMADS_SERVING_TOKEN"),
    ({"healthcheck": {"test": ["CMD", "curl", "-f", "http://127.0.0.1:8700/"]}}, "no health check on /healthz"),
])
def test_ranking_checker_rejects_wrong_port_bind_and_token(compose: dict[str, Any], change: dict[str, Any],
                                                           match: str) -> None:
    broken = copy.deepcopy(compose)
    _service(broken, "ranking").update(change)
    with pytest.raises(DeployCheckError, match=match):
        check_ranking(compose_containers(broken))


def test_k8s_checkers_reject_committed_secrets_and_literal_tokens(k8s: list[dict[str, Any]]) -> None:
    broken = [*copy.deepcopy(k8s), {"apiVersion": "v1", "kind": "Secret",
                                    "metadata": {"name": "mmads-secrets", "namespace": NAMESPACE}}]
    with pytest.raises(DeployCheckError, match="committed"):
        check_k8s_objects(broken)
    broken = copy.deepcopy(k8s)
    next(d for d in broken if d["kind"] == "ConfigMap")["data"]["MMADS_MILVUS_TOKEN"] = "root:Milvus"
    with pytest.raises(DeployCheckError, match="literal value"):
        check_k8s_secrets(broken, K8S_README.read_text())
    with pytest.raises(DeployCheckError, match="README.md does not tell"):
        check_k8s_secrets(k8s, "no instructions")


def test_env_example_checker_rejects_values_and_gaps(compose: dict[str, Any]) -> None:
    example = read_env_example()
    with pytest.raises(DeployCheckError, match="placeholders must stay empty"):
        check_env_example(compose, {**example, "MMADS_SERVING_TOKEN": "abc"})
    with pytest.raises(DeployCheckError, match="lacks"):
        check_env_example(compose, {k: v for k, v in example.items() if k != "MINIO_ROOT_PASSWORD"})


def _workload(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    return found


def test_k8s_checkers_reject_missing_probes_service_and_replicas(k8s: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(k8s)
    ranking = _workload(broken, "Deployment", "mmads-ranking")
    del ranking["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    with pytest.raises(DeployCheckError, match="readinessProbe"):
        check_k8s_ranking_service(broken)
    broken = copy.deepcopy(k8s)
    _workload(broken, "Service", "mmads-ranking")["spec"]["selector"] = {"app.kubernetes.io/name": "other"}
    with pytest.raises(DeployCheckError, match="no Service forwards"):
        check_k8s_ranking_service(broken)
    broken = copy.deepcopy(k8s)
    _workload(broken, "Deployment", "mmads-stream-items")["spec"]["replicas"] = 1
    with pytest.raises(DeployCheckError, match="1 replica"):
        check_streaming(k8s_containers(broken))
    broken = copy.deepcopy(k8s)
    _workload(broken, "Service", "kafka")["metadata"]["namespace"] = "kafka"
    with pytest.raises(DeployCheckError, match="namespace 'kafka'"):
        check_k8s_objects(broken)
