import pytest

from infra.config import load_config
from infra.errors import ConfigError
from serving.auth import AuthPolicy, is_loopback
from serving.errors import AuthError

CFG = load_config(env={})
TOKEN_ENV = CFG.serving.token_env


@pytest.mark.parametrize(("host", "local"), [
    ("127.0.0.1", True), ("127.0.0.9", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("10.1.2.3", False), ("::", False), ("example.org", False),
])
def test_is_loopback(host: str, local: bool):
    assert is_loopback(host) is local


def test_non_loopback_bind_needs_a_token():
    with pytest.raises(ConfigError, match=f"set the environment variable {TOKEN_ENV}"):
        AuthPolicy.for_bind(CFG, "0.0.0.0", env={})
    with pytest.raises(ConfigError, match="needs a bearer token"):
        AuthPolicy.for_bind(CFG, "0.0.0.0", env={TOKEN_ENV: ""})


def test_loopback_without_token_is_open_but_admin_is_disabled():
    policy = AuthPolicy.for_bind(CFG, "127.0.0.1", env={})
    policy.check("/rank", None)
    policy.check("/metrics", None)
    with pytest.raises(AuthError, match="admin endpoints are disabled") as info:
        policy.check("/admin/reload", "Bearer anything")
    assert info.value.status == 403


def test_loopback_with_token_guards_admin_only():
    policy = AuthPolicy.for_bind(CFG, "127.0.0.1", env={TOKEN_ENV: "s3cret"})
    policy.check("/rank", None)
    policy.check("/admin/reload", "Bearer s3cret")
    with pytest.raises(AuthError, match="invalid bearer token") as info:
        policy.check("/admin/reload", "Bearer wrong")
    assert info.value.status == 401


def test_remote_bind_guards_everything_but_healthz():
    policy = AuthPolicy.for_bind(CFG, "0.0.0.0", env={TOKEN_ENV: "s3cret"})
    policy.check("/healthz", None)
    policy.check("/rank", "Bearer s3cret")
    policy.check("/rank", "bearer s3cret")
    for header, message in [(None, "missing bearer token"), ("Basic s3cret", "missing bearer token"),
                            ("Bearer ", "missing bearer token"), ("Bearer s3cre", "invalid bearer token")]:
        with pytest.raises(AuthError, match=message) as info:
            policy.check("/rank", header)
        assert info.value.status == 401
