"""The deployment files (``infra/compose``, ``infra/k8s``) checked against the config schema and the CLI.

Docker and Kubernetes do not run here, so these checks are what keeps the files from rotting:

* every ``MMADS_*`` variable is a real config key, read with ``infra.config``'s own override logic, or a
  secret variable named by a ``*_env`` key, and the resulting config validates in the cluster profile;
* the hosts and ports in the Kafka, Milvus and Redis endpoints are services of the same deployment;
* every mmads container's arguments parse with the real ``mmads`` argument parser;
* the streaming jobs run with replicas, the ranking service listens where its health checks look and
  gets its bearer token, every long-running service has a health check;
* secrets are references (``${VAR}``, ``secretKeyRef``), never literal values.

Each checker raises :class:`DeployCheckError`; the last tests feed them broken input to show they fail.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import yaml

from infra.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    MmadsConfig,
    _env_overrides,
    load_config,
    secret_env_names,
)
from infra.errors import ConfigError
from mmads.cli import build_parser
from mmads.commands.stream import JOBS
from serving.auth import is_loopback

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = REPO_ROOT / "infra" / "compose"
K8S_DIR = REPO_ROOT / "infra" / "k8s"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
K8S_README = K8S_DIR / "README.md"
NAMESPACE = "mmads"
MIN_STREAM_REPLICAS = 2
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"

SECRET_WORDS = ("PASSWORD", "PASSWD", "TOKEN", "SECRET", "ACCESS_KEY", "CREDENTIAL")
# A secret may be ${VAR}, ${VAR:?message}, ${VAR?message}, ${VAR:-} or ${VAR-}: never a default value.
SECRET_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*|:?-)?\}$")
INTERPOLATED_NAME = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
ENV_VAR_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
MMADS_IMAGE = re.compile(r"(^|/)mmads[:@]")
HTTP_TARGET = re.compile(r"https?://[^/\s:'\"]+:(\d+)(/[^\s'\")]*)?")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


class DeployCheckError(Exception):
    """A deployment file disagrees with the config schema, the CLI or the deployment rules."""


@dataclass(frozen=True)
class SecretRef:
    """An environment value taken from a Kubernetes Secret (``valueFrom.secretKeyRef``)."""

    secret: str
    key: str


EnvValue: TypeAlias = str | SecretRef


@dataclass(frozen=True)
class MmadsContainer:
    """One container of the mmads image, reduced to what the checks read.

    Attributes:
        where: names the container in messages (file, service or workload, container).
        argv: the arguments of the ``mmads`` entry point.
        env: the container environment (compose interpolations are kept as written).
        replicas: how many copies run.
        ports: the container ports it declares.
        health: the text of its health check command ('' when none).
        http_checks: ``(port, path)`` of every HTTP health check or probe.
        init: an init container (runs to completion before the pod's main containers).
    """

    where: str
    argv: tuple[str, ...]
    env: Mapping[str, EnvValue]
    replicas: int
    ports: frozenset[int]
    health: str
    http_checks: tuple[tuple[int, str], ...]
    init: bool = False


# --------------------------------------------------------------------------------------------- loading


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """Parse the compose file (anchors and ``<<`` merge keys resolved by PyYAML)."""
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise DeployCheckError(f"{path}: no 'services' mapping")
    return doc


def load_k8s(folder: Path = K8S_DIR) -> list[dict[str, Any]]:
    """Every manifest document under ``folder`` (empty documents skipped)."""
    docs: list[dict[str, Any]] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise DeployCheckError(f"{path}: a document is not a mapping")
            docs.append(doc)
    return docs


def deploy_yaml_files() -> list[Path]:
    """Every YAML file of both deployment folders."""
    return sorted(p for d in (COMPOSE_DIR, K8S_DIR) for p in [*d.glob("*.yaml"), *d.glob("*.yml")])


# ---------------------------------------------------------------------------------- config and secrets


def config_from_env(env: Mapping[str, EnvValue], where: str) -> MmadsConfig:
    """The config a container with environment ``env`` loads, rejecting variables it would not read.

    Raises:
        DeployCheckError: a variable names no config key (``infra.config`` rejects it, or silently
            names neither, like ``MMADS_KAFKA_PORT`` with one underscore), or a value is invalid.
    """
    names = {n for n in env if n.startswith(ENV_PREFIX)}
    if CONFIG_ENV in names:
        raise DeployCheckError(f"{where}: {CONFIG_ENV} is set; deployments configure mmads by MMADS_* only")
    plain = {n: v for n, v in env.items() if n in names and isinstance(v, str)}
    try:
        _, origin = _env_overrides(plain)
        cfg = load_config(DEFAULT_CONFIG_FILE, env=plain)
    except ConfigError as exc:
        raise DeployCheckError(f"{where}: {exc}") from None
    ignored = names - set(origin.values()) - secret_env_names(cfg)
    if ignored:
        raise DeployCheckError(
            f"{where}: {', '.join(sorted(ignored))}: neither a config key (MMADS_<SECTION>__<KEY>, read "
            "from a literal value) nor a secret variable named by a *_env key; infra.config ignores it"
        )
    return cfg


def check_cluster_profile(cfg: MmadsConfig, where: str) -> None:
    """The config of a deployed container: cluster profile, external Kafka, Milvus and Redis."""
    problems = []
    if cfg.profile != "cluster":
        problems.append(f"profile is {cfg.profile!r} (set MMADS_PROFILE=cluster)")
    if cfg.kafka.embedded:
        problems.append("kafka.bootstrap_servers is unset (the embedded Tansu broker)")
    if cfg.milvus.embedded:
        problems.append("milvus.uri is unset (the embedded Milvus Lite server)")
    if cfg.feast.online_store != "redis":
        problems.append(f"feast.online_store is {cfg.feast.online_store!r}, a file inside one container")
    if not cfg.state_dir.is_absolute():
        problems.append(f"state_dir {cfg.state_dir} is relative to the working directory")
    if problems:
        raise DeployCheckError(f"{where}: " + "; ".join(problems))


def is_secret_name(name: str, value: EnvValue) -> bool:
    """True for a variable that holds a credential (``*_ENV`` keys that name a variable do not)."""
    upper = name.upper()
    if upper.endswith("_ENV") and isinstance(value, str) and ENV_VAR_NAME.match(value):
        return False
    return any(word in upper for word in SECRET_WORDS)


def check_no_literal_secrets(env: Mapping[str, EnvValue], where: str, *, interpolation: bool) -> None:
    """Secret variables must be references: ``${VAR}`` (compose) or a ``secretKeyRef`` (Kubernetes).

    Args:
        env: the environment as written in the file.
        where: names the container in messages.
        interpolation: the file is interpolated by its tool (compose); Kubernetes takes ``${...}``
            literally, so there only a ``secretKeyRef`` counts.
    """
    for name, value in env.items():
        if not is_secret_name(name, value) or isinstance(value, SecretRef):
            continue
        if interpolation and SECRET_INTERPOLATION.match(value):
            continue
        wanted = f"${{{name}}} (no default value)" if interpolation else "valueFrom.secretKeyRef"
        raise DeployCheckError(f"{where}: {name} holds a literal value; use {wanted}")


# ------------------------------------------------------------------------------------------- endpoints


def _host_port(address: str, var: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise DeployCheckError(f"{var}: {address!r} is not HOST:PORT")
    return host, int(port)


def endpoints(cfg: MmadsConfig) -> list[tuple[str, str, int]]:
    """``(variable, host, port)`` of every external service the config points at."""
    out: list[tuple[str, str, int]] = []
    var = f"{ENV_PREFIX}KAFKA__BOOTSTRAP_SERVERS"
    for address in cfg.kafka.servers.split(","):
        out.append((var, *_host_port(address, var)))
    var = f"{ENV_PREFIX}MILVUS__URI"
    url = urlsplit(cfg.milvus.address)
    if not url.hostname or url.port is None:
        raise DeployCheckError(f"{var}: {cfg.milvus.address!r} needs an explicit host and port")
    out.append((var, url.hostname, url.port))
    if cfg.feast.online_store == "redis":
        var = f"{ENV_PREFIX}FEAST__REDIS_CONNECTION_STRING"
        out.append((var, *_host_port(cfg.feast.redis_connection_string.split(",")[0], var)))
    return out


# ------------------------------------------------------------------------------------------------- CLI


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def parse_cli(argv: Iterable[object], where: str) -> argparse.Namespace:
    """Parse ``argv`` with the real ``mmads`` parser.

    Raises:
        DeployCheckError: an argument is not a string (YAML turned it into a number), or the parser
            rejects the arguments (argparse exits; its message is kept).
    """
    args = list(argv)
    if not args or not all(isinstance(a, str) for a in args):
        raise DeployCheckError(f"{where}: arguments must be a non-empty list of strings, got {args!r}")
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            return _parser().parse_args([str(a) for a in args])
    except SystemExit:
        said = (err.getvalue() or out.getvalue()).strip().splitlines()
        raise DeployCheckError(f"{where}: `mmads {shlex.join(map(str, args))}` is no valid command: "
                               f"{said[-1] if said else 'exits'}") from None


def role(ns: argparse.Namespace) -> str:
    """``"stream <job>"``, ``"serve"``, ``"stack up"``, ...: the verb a container runs."""
    verb = getattr(ns, "verb", None)
    return f"{ns.command} {verb}" if verb else str(ns.command)


def check_containers(containers: list[MmadsContainer]) -> dict[str, tuple[argparse.Namespace, MmadsConfig]]:
    """Parse every container's command and load its config (cluster profile, no literal secrets)."""
    out = {}
    for c in containers:
        ns = parse_cli(c.argv, c.where)
        cfg = config_from_env(c.env, c.where)
        check_cluster_profile(cfg, c.where)
        out[c.where] = (ns, cfg)
    return out


def check_streaming(containers: list[MmadsContainer]) -> None:
    """Each streaming job runs with replicas and HTTP health checks on its metrics port."""
    seen: dict[str, int] = {}
    for c in containers:
        ns, cfg = parse_cli(c.argv, c.where), config_from_env(c.env, c.where)
        if c.init or ns.command != "stream" or ns.verb not in JOBS:
            continue
        seen[ns.verb] = seen.get(ns.verb, 0) + c.replicas
        if c.replicas < MIN_STREAM_REPLICAS:
            raise DeployCheckError(f"{c.where}: {c.replicas} replica(s) of `stream {ns.verb}`, "
                                   f"want >= {MIN_STREAM_REPLICAS}")
        if c.replicas > cfg.kafka.partitions:
            raise DeployCheckError(f"{c.where}: {c.replicas} replicas but {cfg.kafka.partitions} partitions "
                                   "per topic: the extra consumers would sit idle")
        check_stream_probes(c, cfg)
    missing = sorted(set(JOBS) - set(seen))
    if missing:
        raise DeployCheckError(f"streaming jobs not deployed: {', '.join(missing)}")


def check_stream_probes(c: MmadsContainer, cfg: MmadsConfig) -> None:
    """A job's metrics port is reachable, declared and probed: ``/healthz`` always, ``/readyz`` in k8s."""
    bind = cfg.streaming.metrics_bind(cfg.profile)
    if bind is None:
        raise DeployCheckError(f"{c.where}: streaming.metrics_port is null: no /metrics, /healthz or /readyz")
    host, port = bind
    if is_loopback(host):
        raise DeployCheckError(f"{c.where}: metrics bind {host}, unreachable from outside its container")
    if port not in c.ports:
        raise DeployCheckError(f"{c.where}: metrics on {port} but declares ports {sorted(c.ports)}")
    wanted = [HEALTH_PATH, READY_PATH] if c.where.startswith(tuple(f"{k}/" for k in WORKLOAD_KINDS)) else [HEALTH_PATH]
    for path in wanted:
        if (port, path) not in c.http_checks:
            raise DeployCheckError(f"{c.where}: no probe on {path} at the metrics port {port} "
                                   f"(has {sorted(c.http_checks)})")


def check_ranking(containers: list[MmadsContainer]) -> None:
    """The ranking service: reachable bind, port = its ports and health checks, bearer token wired."""
    services = [c for c in containers if not c.init and parse_cli(c.argv, c.where).command == "serve"]
    if not services:
        raise DeployCheckError("no container runs `mmads serve`")
    for c in services:
        ns, cfg = parse_cli(c.argv, c.where), config_from_env(c.env, c.where)
        host = ns.host or cfg.serving.host
        port = ns.port or cfg.serving.port
        if is_loopback(host):
            raise DeployCheckError(f"{c.where}: binds {host}, unreachable from outside its container")
        if ns.port is not None and f"{ENV_PREFIX}SERVING__PORT" in c.env and ns.port != cfg.serving.port:
            raise DeployCheckError(f"{c.where}: --port {ns.port} contradicts serving.port {cfg.serving.port}")
        if port not in c.ports:
            raise DeployCheckError(f"{c.where}: serves on {port} but declares ports {sorted(c.ports)}")
        if not any(path == HEALTH_PATH for _, path in c.http_checks):
            raise DeployCheckError(f"{c.where}: no health check on {HEALTH_PATH}")
        wrong = [p for p, _ in c.http_checks if p != port]
        if wrong:
            raise DeployCheckError(f"{c.where}: health checks on port(s) {wrong}, the service is on {port}")
        if cfg.serving.token_env not in c.env:
            raise DeployCheckError(f"{c.where}: binds {host} without {cfg.serving.token_env}: it refuses to start")


# --------------------------------------------------------------------------------------------- compose


def compose_mmads_image(compose: Mapping[str, Any]) -> str:
    """The one image the compose file builds from ``infra/compose/Dockerfile``."""
    images = {s.get("image") for s in compose["services"].values() if "build" in s}
    if len(images) != 1 or None in images:
        raise DeployCheckError(f"{COMPOSE_FILE.name}: services build {len(images)} images, want one, tagged")
    for s in compose["services"].values():
        if "build" in s and s["build"].get("dockerfile") != "infra/compose/Dockerfile":
            raise DeployCheckError(f"{COMPOSE_FILE.name}: a build does not use infra/compose/Dockerfile")
    return str(images.pop())


def compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as written (list or mapping; a bare name passes the host's value)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.split("=", 1) if "=" in item else [item, None] for item in raw]
        raw = dict(pairs)
    return {str(k): f"${{{k}}}" if v is None else str(v) for k, v in raw.items()}


def compose_ports(service: Mapping[str, Any]) -> frozenset[int]:
    """The container ports a service declares (``expose`` and the container side of ``ports``)."""
    ports: set[int] = set()
    for item in service.get("expose", []):
        ports.add(int(str(item).split("/")[0]))
    for item in service.get("ports", []):
        target = item["target"] if isinstance(item, dict) else str(item).split("/")[0].split(":")[-1]
        ports.add(int(str(target)))
    return frozenset(ports)


def compose_health(service: Mapping[str, Any]) -> str:
    """The health check command of a service as one string ('' when none or disabled)."""
    check = service.get("healthcheck") or {}
    if check.get("disable"):
        return ""
    test = check.get("test") or ""
    return " ".join(str(t) for t in test) if isinstance(test, list) else str(test)


def _depends_on(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    return {d: {} for d in deps} if isinstance(deps, list) else dict(deps)


def compose_containers(compose: Mapping[str, Any]) -> list[MmadsContainer]:
    """Every service of the compose file that runs the mmads image."""
    image = compose_mmads_image(compose)
    out = []
    for name, s in compose["services"].items():
        if s.get("image") != image:
            continue
        where = f"{COMPOSE_FILE.name} service {name!r}"
        if s.get("entrypoint") not in (None, ["mmads"]):
            raise DeployCheckError(f"{where}: entrypoint {s['entrypoint']!r} replaces the mmads CLI")
        command = s.get("command") or []
        argv = tuple(shlex.split(command) if isinstance(command, str) else command)
        health = compose_health(s)
        checks = tuple((int(m.group(1)), m.group(2) or "/") for m in HTTP_TARGET.finditer(health))
        replicas = int((s.get("deploy") or {}).get("replicas", s.get("scale", 1)))
        out.append(MmadsContainer(where, argv, compose_env(s), replicas, compose_ports(s), health, checks))
    return out


def check_compose_endpoints(compose: Mapping[str, Any]) -> None:
    """Kafka, Milvus and Redis endpoints name compose services, on container ports they declare."""
    services = compose["services"]
    for name, s in services.items():
        if s.get("image") != compose_mmads_image(compose):
            continue
        where = f"{COMPOSE_FILE.name} service {name!r}"
        cfg = config_from_env(compose_env(s), where)
        deps = set(_depends_on(s))  # directly: it must wait for (and restart after) each one
        for var, host, port in endpoints(cfg):
            if host not in services:
                raise DeployCheckError(f"{where}: {var} names host {host!r}, which is no compose service")
            if port not in compose_ports(services[host]):
                raise DeployCheckError(f"{where}: {var} uses port {port}, but {host!r} declares "
                                       f"{sorted(compose_ports(services[host]))} (expose/ports)")
            if host not in deps:
                raise DeployCheckError(f"{where}: uses {host!r} ({var}) but does not depend on it")


def check_compose_health(compose: Mapping[str, Any]) -> None:
    """Long-running services have health checks; ``depends_on`` waits for health or completion."""
    services = compose["services"]
    for name, s in services.items():
        one_shot = s.get("restart") == "no"
        if not one_shot and not compose_health(s):
            raise DeployCheckError(f"{COMPOSE_FILE.name} service {name!r}: long-running without a healthcheck")
        for dep, spec in _depends_on(s).items():
            where = f"{COMPOSE_FILE.name} service {name!r} depends_on {dep!r}"
            if dep not in services:
                raise DeployCheckError(f"{where}: no such service")
            condition = spec.get("condition")
            dep_one_shot = services[dep].get("restart") == "no"
            wanted = "service_completed_successfully" if dep_one_shot else "service_healthy"
            if condition != wanted:
                raise DeployCheckError(f"{where}: condition {condition!r}, want {wanted!r}")


def check_compose_secrets(compose: Mapping[str, Any]) -> None:
    """No service of the compose file (infrastructure included) holds a literal secret."""
    for name, s in compose["services"].items():
        check_no_literal_secrets(compose_env(s), f"{COMPOSE_FILE.name} service {name!r}", interpolation=True)


def read_env_example(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``NAME=value`` lines of a dotenv file (comments and blank lines skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            if not sep:
                raise DeployCheckError(f"{path.name}: {line!r} is not NAME=value")
            out[name.strip()] = value.strip()
    return out


def check_env_example(compose: Mapping[str, Any], example: Mapping[str, str]) -> None:
    """``.env.example`` lists each variable interpolated into a secret, with an empty value only."""
    filled = sorted(n for n, v in example.items() if v)
    if filled:
        raise DeployCheckError(f"{ENV_EXAMPLE.name}: values for {filled}; placeholders must stay empty")
    needed: set[str] = set()
    for s in compose["services"].values():
        for name, value in compose_env(s).items():
            if is_secret_name(name, value):
                needed.update(INTERPOLATED_NAME.findall(value))
    missing = sorted(needed - set(example))
    if missing:
        raise DeployCheckError(f"{ENV_EXAMPLE.name}: lacks {missing}, interpolated into secrets")


# ------------------------------------------------------------------------------------------ kubernetes


def k8s_configmaps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """ConfigMap name -> its data."""
    return {d["metadata"]["name"]: {str(k): str(v) for k, v in (d.get("data") or {}).items()}
            for d in docs if d.get("kind") == "ConfigMap"}


def k8s_env(container: Mapping[str, Any], configmaps: Mapping[str, Mapping[str, str]],
            where: str) -> dict[str, EnvValue]:
    """A container's environment: ``envFrom`` ConfigMaps, then ``env`` entries (Secrets as refs)."""
    env: dict[str, EnvValue] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" not in source:
            raise DeployCheckError(f"{where}: envFrom {source!r}: list Secret keys one by one (secretKeyRef)")
        ref = source["configMapRef"]["name"]
        if ref not in configmaps:
            raise DeployCheckError(f"{where}: envFrom names ConfigMap {ref!r}, which is not in the manifests")
        env.update({source.get("prefix", "") + k: v for k, v in configmaps[ref].items()})
    for item in container.get("env", []):
        name, value_from = item["name"], item.get("valueFrom") or {}
        if "value" in item:
            env[name] = str(item["value"])
        elif "secretKeyRef" in value_from:
            env[name] = SecretRef(value_from["secretKeyRef"]["name"], value_from["secretKeyRef"]["key"])
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            env[name] = configmaps.get(ref["name"], {}).get(ref["key"], "")
        else:
            raise DeployCheckError(f"{where}: env {name} has neither value nor a Secret/ConfigMap reference")
    return env


def _probe_port(probe: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[int, str] | None:
    get = probe.get("httpGet")
    if not get:
        return None
    port = get["port"]
    if isinstance(port, str):
        named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if port not in named:
            raise DeployCheckError(f"probe port {port!r} names no container port")
        port = named[port]
    return int(port), str(get.get("path", "/"))


def k8s_workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(workload, pod spec)`` for every Deployment, StatefulSet, DaemonSet and Job."""
    for d in docs:
        if d.get("kind") in WORKLOAD_KINDS:
            yield d, d["spec"]["template"]["spec"]


def k8s_containers(docs: list[dict[str, Any]]) -> list[MmadsContainer]:
    """Every container (init containers included) of the manifests that runs the mmads image."""
    configmaps = k8s_configmaps(docs)
    out = []
    for workload, pod in k8s_workloads(docs):
        replicas = int(workload["spec"].get("replicas", 1)) if workload["kind"] != "Job" else 1
        for init, key in ((True, "initContainers"), (False, "containers")):
            for c in pod.get(key, []):
                if not MMADS_IMAGE.search(str(c.get("image", ""))):
                    continue
                where = f"{workload['kind']}/{workload['metadata']['name']} container {c['name']!r}"
                if c.get("command") not in (None, ["mmads"]):
                    raise DeployCheckError(f"{where}: command {c['command']!r} replaces the mmads CLI")
                probes = [c[p] for p in ("livenessProbe", "readinessProbe", "startupProbe") if p in c]
                health = " ".join(" ".join(map(str, p.get("exec", {}).get("command", []))) for p in probes)
                checks = tuple(x for p in probes if (x := _probe_port(p, c)) is not None)
                ports = frozenset(int(p["containerPort"]) for p in c.get("ports", []))
                out.append(MmadsContainer(where, tuple(c.get("args", [])), k8s_env(c, configmaps, where),
                                          replicas, ports, health, checks, init=init))
    return out


def check_k8s_objects(docs: list[dict[str, Any]]) -> None:
    """Every object is named and in the mmads namespace; no Secret (and so no secret data) is committed."""
    for d in docs:
        kind, meta = d.get("kind"), d.get("metadata") or {}
        if not d.get("apiVersion") or not kind or not meta.get("name"):
            raise DeployCheckError(f"manifest without apiVersion/kind/metadata.name: {d!r:.120}")
        if kind == "Secret":
            raise DeployCheckError(f"Secret {meta['name']!r} is committed; create it with kubectl (README.md)")
        if kind != "Namespace" and meta.get("namespace") != NAMESPACE:
            raise DeployCheckError(f"{kind}/{meta['name']}: namespace {meta.get('namespace')!r}, want {NAMESPACE!r}")


def check_k8s_endpoints(docs: list[dict[str, Any]]) -> None:
    """The ConfigMap's endpoints are Services of the namespace, on ports those Services declare."""
    services = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Service"}
    for c in k8s_containers(docs):
        cfg = config_from_env(c.env, c.where)
        for var, host, port in endpoints(cfg):
            name, _, rest = host.partition(".")
            if rest and not rest.startswith(f"{NAMESPACE}.svc"):
                raise DeployCheckError(f"{c.where}: {var} host {host!r} is outside namespace {NAMESPACE!r}; "
                                       "name an (ExternalName) Service of the namespace instead")
            if name not in services:
                raise DeployCheckError(f"{c.where}: {var} names {name!r}, which is no Service in the manifests")
            declared = sorted(int(p["port"]) for p in services[name]["spec"].get("ports", []))
            if port not in declared:
                raise DeployCheckError(f"{c.where}: {var} uses port {port}, Service {name!r} declares {declared}")


def check_k8s_ranking_service(docs: list[dict[str, Any]]) -> None:
    """A Service selects the ranking pods and forwards to the port the service listens on."""
    services = [d for d in docs if d.get("kind") == "Service" and d["spec"].get("selector")]
    for workload, pod in k8s_workloads(docs):
        for c in pod.get("containers", []):
            args = c.get("args", [])
            if not MMADS_IMAGE.search(str(c.get("image", ""))) or not args or args[0] != "serve":
                continue
            where = f"{workload['kind']}/{workload['metadata']['name']}"
            for probe in ("readinessProbe", "livenessProbe"):
                hit = _probe_port(c.get(probe, {}), c)
                if hit is None or hit[1] != HEALTH_PATH:
                    raise DeployCheckError(f"{where}: {probe} is not an httpGet on {HEALTH_PATH}")
            labels = workload["spec"]["template"]["metadata"].get("labels", {})
            named = {p.get("name"): int(p["containerPort"]) for p in c.get("ports", [])}
            targets = {
                named.get(p.get("targetPort"), p.get("targetPort", p["port"]))
                for s in services if s["spec"]["selector"].items() <= labels.items()
                for p in s["spec"].get("ports", [])
            }
            if not set(named.values()) & targets:
                raise DeployCheckError(f"{where}: no Service forwards to its ports {sorted(named.values())}")


def check_k8s_secrets(docs: list[dict[str, Any]], readme: str) -> None:
    """Secret variables come from secretKeyRefs that the README tells how to create; none is literal."""
    for c in k8s_containers(docs):
        check_no_literal_secrets(c.env, c.where, interpolation=False)
        for name, value in c.env.items():
            if not isinstance(value, SecretRef):
                continue
            if f"create secret generic {value.secret}" not in readme or f"{value.key}=" not in readme:
                raise DeployCheckError(f"{c.where}: {name} comes from Secret {value.secret!r} key {value.key!r}, "
                                       "which README.md does not tell how to create")
    for name, data in k8s_configmaps(docs).items():
        check_no_literal_secrets(data, f"ConfigMap/{name}", interpolation=False)
