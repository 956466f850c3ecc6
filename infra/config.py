"""mmads configuration: one YAML file plus ``MMADS_*`` environment overrides, validated by pydantic.

Precedence (lowest to highest): defaults in the models below, the YAML file (``--config`` or
``MMADS_CONFIG``), then environment variables. An override names a nested key with ``__``:
``MMADS_KAFKA__PORT=29092`` sets ``kafka.port``; top-level keys are plain: ``MMADS_STATE_DIR``.
Unknown keys anywhere are an error that names the key and the value. Secrets never live in the
file: fields ending in ``_env`` name the environment variable that holds them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from infra.errors import ConfigError

ENV_PREFIX = "MMADS_"
CONFIG_ENV = "MMADS_CONFIG"
DEFAULT_CONFIG_FILE = Path(__file__).with_name("default_config.yaml")
RUN_CONFIG_NAME = "config.yaml"  # every run directory records the config it ran with here


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicsConfig(_Section):
    """Kafka topic names (dead-letter topics are ``<name>.dlq``)."""

    items: str = "items"
    behaviors: str = "behaviors"
    impressions: str = "impressions"
    behavior_changelog: str = "behaviors.state"


class S3StorageConfig(_Section):
    """The S3-compatible store behind the embedded broker's ``s3`` storage (``kafka.storage: s3``).

    Attributes:
        endpoint: an S3 endpoint URL (a bucket on AWS, MinIO, ...); None starts moto's local S3
            server on ``host:port`` (objects in its memory: they survive a broker crash, not
            ``stack down``).
        host: where the local server listens.
        port: the local server's port.
        bucket: the bucket Tansu keeps topics, offsets and groups in (the local server creates it;
            on an external endpoint it must exist).
        region: the bucket's region.
        access_key_id_env: the variable holding the access key of an external endpoint.
        secret_access_key_env: the variable holding its secret key.
    """

    endpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=19094, ge=1, le=65535)
    bucket: str = Field(default="tansu", min_length=3, pattern=r"^[a-z0-9][a-z0-9.-]+$")
    region: str = "us-east-1"
    access_key_id_env: str = "MMADS_S3_ACCESS_KEY_ID"
    secret_access_key_env: str = "MMADS_S3_SECRET_ACCESS_KEY"

    @property
    def embedded(self) -> bool:
        """True when mmads starts the local S3-compatible server."""
        return self.endpoint is None


class KafkaConfig(_Section):
    """Broker: the embedded Tansu broker, or an external cluster when ``bootstrap_servers`` is set.

    ``storage`` picks the embedded broker's storage engine: ``memory`` loses every topic, message and
    committed offset when the broker process ends; ``s3`` keeps them in an S3-compatible bucket
    (``s3`` section), so a broker crash or restart loses nothing (``stack down`` loses them too when
    the bucket is the local server's).
    """

    bootstrap_servers: str | None = None
    storage: Literal["memory", "s3"] = "memory"
    s3: S3StorageConfig = S3StorageConfig()
    host: str = "127.0.0.1"
    port: int = Field(default=19092, ge=1, le=65535)
    partitions: int = Field(default=4, ge=1)
    group_prefix: str = "mmads"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username_env: str = "MMADS_KAFKA_USERNAME"
    sasl_password_env: str = "MMADS_KAFKA_PASSWORD"
    ssl_cafile: str | None = None
    session_timeout_ms: int = Field(default=6000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    fetch_max_wait_ms: int = Field(default=10, ge=0)
    max_partition_fetch_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    leave_group_on_close: bool | None = None
    topics: TopicsConfig = TopicsConfig()

    @property
    def embedded(self) -> bool:
        """True when mmads starts its own broker."""
        return self.bootstrap_servers is None

    @property
    def leaves_group_on_close(self) -> bool:
        """Whether a stopping consumer sends LeaveGroup (``leave_group_on_close``; None: not to Tansu).

        Tansu 0.6.0 wedges a group when a member leaves while a rebalance is in progress (two members
        stopping within a few seconds): later members wait for partitions forever. Without a
        LeaveGroup the group drops a stopped member after ``session_timeout_ms``, so the embedded
        broker's groups rebalance a few seconds later instead of never; a Kafka cluster handles the
        LeaveGroup and rebalances at once.
        """
        return not self.embedded if self.leave_group_on_close is None else self.leave_group_on_close

    @property
    def servers(self) -> str:
        """The bootstrap servers clients connect to."""
        return self.bootstrap_servers or f"{self.host}:{self.port}"

    def client_options(self) -> dict[str, Any]:
        """Security options for kafka-python clients; credentials come from the environment."""
        opts: dict[str, Any] = {"bootstrap_servers": self.servers.split(",")}
        if self.security_protocol != "PLAINTEXT":
            opts["security_protocol"] = self.security_protocol
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = os.environ.get(self.sasl_username_env)
            opts["sasl_plain_password"] = os.environ.get(self.sasl_password_env)
        if self.ssl_cafile:
            opts["ssl_cafile"] = self.ssl_cafile
        return opts


IndexType = Literal["HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX"]


class MilvusConfig(_Section):
    """Vector index: the embedded Milvus Lite server, or an external Milvus when ``uri`` is set."""

    uri: str | None = None
    token_env: str = "MMADS_MILVUS_TOKEN"
    host: str = "127.0.0.1"
    port: int = Field(default=19540, ge=1, le=65535)
    collection: str = "item_embeddings"
    index_type: IndexType = "HNSW"
    hnsw_m: int = Field(default=16, ge=4)
    hnsw_ef_construction: int = Field(default=128, ge=8)
    search_ef: int = Field(default=64, ge=8)
    flush_interval_s: float = Field(default=2.0, gt=0)

    @property
    def embedded(self) -> bool:
        """True when mmads starts its own Milvus Lite server."""
        return self.uri is None

    @property
    def address(self) -> str:
        """The URI clients connect to."""
        return self.uri or f"http://{self.host}:{self.port}"

    def token(self) -> str:
        """The access token from the environment ('' when unset)."""
        return os.environ.get(self.token_env, "")


class SparkConfig(_Section):
    """Feast's Spark offline store (``feast.offline_store: spark``): where and how Spark runs.

    Attributes:
        master: ``spark.master``: None = ``local[N]`` with N the machine's cores; a cluster URL
            (``spark://host:7077``, ``k8s://https://host:443``, ``yarn``) or a Spark Connect
            endpoint (``sc://host:15002``, rendered as ``spark.remote``).
        driver_memory: ``spark.driver.memory`` (in ``local[N]`` the driver JVM runs the tasks too).
        executor_memory: ``spark.executor.memory`` (cluster executors).
        shuffle_partitions: ``spark.sql.shuffle.partitions`` of the point-in-time join; adaptive
            execution coalesces small ones, so this is an upper bound on the output files.
        arrow_batch_rows: rows per Arrow batch handed to the Python workers (SimTier per batch:
            bounds a worker's memory at about rows x N x d floats).
        conf: any other Spark setting, passed as is (wins over the keys above).
    """

    master: str | None = None
    driver_memory: str = "2g"
    executor_memory: str = "2g"
    shuffle_partitions: int = Field(default=16, ge=1)
    arrow_batch_rows: int = Field(default=8192, ge=1)
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)

    def spark_conf(self) -> dict[str, str]:
        """The ``spark_conf`` of Feast's Spark offline store (and of the session mmads starts).

        Timestamps are read and written in UTC whatever the machine's zone (Feast's join compares
        them with UTC strings).
        """
        master = self.master or f"local[{os.cpu_count() or 1}]"
        out = {"spark.remote" if master.startswith("sc://") else "spark.master": master,
               "spark.driver.memory": self.driver_memory,
               "spark.executor.memory": self.executor_memory,
               "spark.sql.session.timeZone": "UTC",
               "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # not INT96: UTC micros, as pyarrow writes
               "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
               "spark.sql.execution.arrow.maxRecordsPerBatch": str(self.arrow_batch_rows),
               "spark.sql.execution.arrow.pyspark.enabled": "true"}
        if master.startswith("local"):
            # one machine: the Python workers run this interpreter (its packages), and nothing
            # binds beyond loopback (no web UI either), like the rest of the embedded stack
            out |= {"spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable,
                    "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                    "spark.ui.enabled": "false"}
        extra = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.conf.items()}
        return out | extra


class FeastConfig(_Section):
    """Feature store: SQLite or Redis online store; parquet files read by the duckdb, file or Spark store."""

    project: str = "mmads"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "127.0.0.1:6379"
    redis_type: Literal["redis", "redis_cluster"] = "redis"
    redis_password_env: str = "MMADS_REDIS_PASSWORD"
    offline_store: Literal["duckdb", "file", "spark"] = "duckdb"
    spark: SparkConfig = SparkConfig()
    item_ttl_days: int = Field(default=3650, ge=1)
    user_ttl_days: int = Field(default=3650, ge=1)
    entity_key_serialization_version: int = 3


class SCLConfig(_Section):
    """SCL encoder pre-training (see docs/architecture.md, Models)."""

    image_size: int = Field(default=64, ge=16)
    text_max_tokens: int = Field(default=32, ge=4)
    temperature: float = Field(default=0.07, gt=0)
    learn_temperature: bool = False
    queue_size: int = Field(default=4096, ge=0)
    momentum: float = Field(default=0.99, ge=0, le=1)
    hard_negative_weight: float = Field(default=0.5, ge=0)
    hard_negative_margin: float = Field(default=0.2, ge=0)
    batch_size: int = Field(default=128, ge=2)
    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    trainable_text_layers: int = Field(default=0, ge=0, le=6)
    fusion: Literal["mean", "concat"] = "mean"
    backbone_precision: Literal["bfloat16", "float32"] = "bfloat16"


class CTRConfig(_Section):
    """CTR models (ID model, SimTier, MAKE) and LightGBM."""

    id_dim: int = Field(default=16, ge=2)
    mlp_hidden: tuple[int, ...] = (128, 64)
    batch_size: int = Field(default=1024, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    emb_lr: float | None = Field(default=0.1, gt=0)
    id_epochs: int = Field(default=1, ge=1)
    id_dropout: float = Field(default=0.0, ge=0, lt=1)  # share of training rows whose target id is OOV
    make_epochs: int = Field(default=8, ge=1)
    make_patience: int = Field(default=2, ge=1)
    epoch_study: int = Field(default=3, ge=0)  # id_only epochs in the one-epoch study (0: skip it)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    seeds: int = Field(default=1, ge=1)
    bootstrap: int = Field(default=200, ge=10)
    lgbm_rounds: int = Field(default=300, ge=1)
    nproc: int = Field(default=1, ge=1)  # data-parallel processes for the torch models (torchrun's WORLD_SIZE wins)
    ddp_shared_memory: bool = True  # CPU ranks on one host average gradients through /dev/shm (training.shm_allreduce)


class ModelConfig(_Section):
    """Shared model dimensions, and the SCL and CTR sections."""

    dim: int = Field(default=64, ge=2)
    history_len: int = Field(default=50, ge=1)
    n_tiers: int = Field(default=10, ge=2)
    seed: int = 0
    scl: SCLConfig = SCLConfig()
    ctr: CTRConfig = CTRConfig()


class SideFeature(_Section):
    """One side feature: an extra column of ``items.parquet`` or ``users.parquet``.

    Attributes:
        name: the column name (unique over both files).
        kind: ``categorical`` (embedded / a LightGBM category) or ``numeric`` (normalised).
        source: ``items`` (joined on the target item) or ``users`` (joined on the user).
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: Literal["numeric", "categorical"]
    source: Literal["items", "users"]


class DataConfig(_Section):
    """Dataset handling: the time cut between train and test, the side features, the optional plausibility window.

    ``side_features``: None = every extra column of ``items.parquet`` and ``users.parquet`` (kinds
    inferred, see :mod:`infra.side_features`); a list = exactly those; ``[]`` = none.
    """

    cut_quantile: float = Field(default=0.8, gt=0, lt=1)
    cut_time: datetime | None = None
    side_features: tuple[SideFeature, ...] | None = None
    plausible_time_window: tuple[datetime, datetime] | None = None

    @field_validator("side_features")
    @classmethod
    def _unique(cls, v: tuple[SideFeature, ...] | None) -> tuple[SideFeature, ...] | None:
        names = [f.name for f in v or ()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"side feature names must be unique over items and users, repeated: {dup}")
        return v

    @field_validator("cut_time")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("cut_time must carry a timezone (UTC)")
        return v

    @field_validator("plausible_time_window")
    @classmethod
    def _window(cls, v: tuple[datetime, datetime] | None) -> tuple[datetime, datetime] | None:
        from infra.contract import parse_window

        return parse_window(v)


class StreamingConfig(_Section):
    """Consumer loops: micro-batching, retries and the behavior job's retry buffer."""

    batch_size: int = Field(default=64, ge=1)
    max_wait_ms: int = Field(default=50, ge=1)
    behavior_batch_size: int = Field(default=40000, ge=1)
    retry_buffer_size: int = Field(default=10000, ge=1)
    retry_max_wait_s: float = Field(default=30.0, gt=0)
    # commit points: offline append, changelog, offsets. The behavior job writes one changelog record
    # per user changed since the last one, so at 20,000 events/s a 20,000-row bound made that a
    # per-second cost; the 5-second bound (Kafka's own auto-commit interval) holds in both cases.
    offline_flush_rows: int = Field(default=100_000, ge=1)
    offline_flush_s: float = Field(default=5.0, gt=0)
    max_backoff_s: float = Field(default=10.0, gt=0)
    stats_interval_s: float = Field(default=5.0, gt=0)
    processes: int = Field(default=1, ge=1)
    encoder_threads: int = Field(default=1, ge=1)
    metrics_port: int | None = Field(default=9400, ge=0, le=65535)
    metrics_host: str | None = None

    def metrics_bind(self, profile: str) -> tuple[str, int] | None:
        """Where a job process serves ``/metrics``, ``/healthz`` and ``/readyz``; None when disabled.

        The host is ``metrics_host``, else 0.0.0.0 in the cluster profile (a scraper reaches the pod)
        and 127.0.0.1 in the embedded one. Port 0: the OS picks a free one (the job records it in its
        stats file). Several processes on one host add their process index (``--process-index``).
        """
        if self.metrics_port is None:
            return None
        return self.metrics_host or ("0.0.0.0" if profile == "cluster" else "127.0.0.1"), self.metrics_port


class ChecksConfig(_Section):
    """The main job's fail-fast checks.

    Attributes:
        parity_tolerance: the largest absolute difference allowed between offline and online
            features, serving and offline scores, and the on-demand view and the offline features.
        max_dead_letter_share: the share of published events the jobs may dead-letter before
            ``catch_up`` fails.
    """

    parity_tolerance: float = Field(default=1e-6, ge=0)
    max_dead_letter_share: float = Field(default=0.01, ge=0, le=1)


class ServingConfig(_Section):
    """The ranking HTTP service."""

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    token_env: str = "MMADS_SERVING_TOKEN"
    max_candidates: int = Field(default=1000, ge=1)
    max_k: int = Field(default=500, ge=1)
    ann_queries: int = Field(default=4, ge=1, le=64)
    item_cache_ttl_s: float = Field(default=30.0, ge=0)
    item_cache_max_items: int = Field(default=500_000, ge=1)


class LoggingConfig(_Section):
    """Log lines: ``text`` (``time pid level logger: message``) or ``json`` (one object per line)."""

    format: Literal["text", "json"] = "text"


class MmadsConfig(_Section):
    """The whole configuration."""

    profile: Literal["embedded", "cluster"] = "embedded"
    state_dir: Path = Path(".mmads")
    kafka: KafkaConfig = KafkaConfig()
    milvus: MilvusConfig = MilvusConfig()
    feast: FeastConfig = FeastConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    streaming: StreamingConfig = StreamingConfig()
    serving: ServingConfig = ServingConfig()
    checks: ChecksConfig = ChecksConfig()
    logging: LoggingConfig = LoggingConfig()

    def with_overrides(self, **changes: Any) -> MmadsConfig:
        """Return a validated copy with nested overrides, e.g. ``{"kafka": {"port": 1}}``."""
        merged = _deep_merge(self.model_dump(mode="python"), changes)
        return _validate(merged, {})


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Turn ``MMADS_A__B=v`` into ``{"a": {"b": v}}``; returns the tree and key -> variable name."""
    top_level = set(MmadsConfig.model_fields)
    tree: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if "__" not in rest and rest not in top_level:
            continue  # e.g. MMADS_SERVING_TOKEN: a secret named by a *_env field, not an override
        path = tuple(rest.split("__"))
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another override")
        node[path[-1]] = yaml.safe_load(value) if value != "" else None
        origin[path] = name
    return tree, origin


def _validate(raw: dict[str, Any], origin: Mapping[tuple[str, ...], str]) -> MmadsConfig:
    try:
        return MmadsConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            key = ".".join(loc)
            where = f" (from {origin[loc]})" if loc in origin else ""
            lines.append(f"config key '{key}' = {err.get('input')!r}{where}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> MmadsConfig:
    """Load and validate the configuration.

    Args:
        path: a YAML file; defaults to ``$MMADS_CONFIG``, else the shipped default file.
        env: the environment to read ``MMADS_*`` overrides from (default ``os.environ``).

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: the file is missing or malformed, or a key or value is invalid.
    """
    env = os.environ if env is None else env
    file = Path(path) if path else Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else DEFAULT_CONFIG_FILE
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {file} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {file} must hold a mapping at the top level")
    overrides, origin = _env_overrides(env)
    cfg = _validate(_deep_merge(raw, overrides), origin)
    _check_stray_variables(cfg, env)
    return cfg


def save_config(cfg: MmadsConfig, path: Path) -> Path:
    """Write ``cfg`` (overrides applied; secrets are never in it) as YAML that :func:`load_config` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def run_config_file(run_dir: Path) -> Path:
    """Where a run directory records its config (state dir, ports, stores): ``RUN_DIR/config.yaml``."""
    return Path(run_dir) / RUN_CONFIG_NAME


def secret_env_names(cfg: MmadsConfig) -> set[str]:
    """The environment variables the config names for secrets (the values of its ``*_env`` keys)."""
    names: set[str] = set()

    def walk(node: BaseModel) -> None:
        for field in type(node).model_fields:
            value = getattr(node, field)
            if isinstance(value, BaseModel):
                walk(value)
            elif field.endswith("_env") and isinstance(value, str):
                names.add(value)

    walk(cfg)
    return names


def _check_stray_variables(cfg: MmadsConfig, env: Mapping[str, str]) -> None:
    """A ``MMADS_`` variable that is neither an override nor a named secret is a typo: say so."""
    top_level = {f.upper() for f in MmadsConfig.model_fields}
    known = secret_env_names(cfg) | {CONFIG_ENV}
    for name in env:
        rest = name[len(ENV_PREFIX):]
        if name.startswith(ENV_PREFIX) and "__" not in rest and rest not in top_level and name not in known:
            raise ConfigError(
                f"environment variable {name} is neither a config override (those read "
                f"{ENV_PREFIX}<SECTION>__<KEY>, with two underscores, e.g. {ENV_PREFIX}KAFKA__PORT) nor one of "
                f"the secret variables the config names ({', '.join(sorted(known - {CONFIG_ENV}))}); "
                "rename or unset it")
