"""Bearer-token policy of the ranking service.

* Bound to a loopback address (127.0.0.1, ::1, localhost; the default): requests need no token.
* Bound to anything else: the token in the environment variable ``cfg.serving.token_env`` must be
  set (the service refuses to start otherwise) and every endpoint but ``/healthz`` needs
  ``Authorization: Bearer <token>``.
* ``/admin/*`` always needs the token; with no token configured the admin endpoints answer 403
  (reload with SIGHUP instead).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from infra.config import MmadsConfig
from infra.errors import ConfigError
from serving.errors import AuthError

PUBLIC_PATHS = frozenset({"/healthz"})
ADMIN_PREFIX = "/admin/"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AuthPolicy:
    """Who may call what.

    Attributes:
        token: the expected bearer token, or None when none is configured.
        require_everywhere: every non-public endpoint needs the token (non-loopback bind).
        token_env: the variable the token comes from (named in error messages).
    """

    token: str | None
    require_everywhere: bool
    token_env: str

    @classmethod
    def for_bind(cls, cfg: MmadsConfig, host: str, env: Mapping[str, str] | None = None) -> AuthPolicy:
        """The policy for a service bound to ``host``.

        Raises:
            ConfigError: ``host`` is not loopback and the token variable is unset or empty.
        """
        env = os.environ if env is None else env
        name = cfg.serving.token_env
        token = env.get(name) or None
        local = is_loopback(host)
        if not local and token is None:
            raise ConfigError(
                f"binding the ranking service to {host} needs a bearer token: set the environment "
                f"variable {name} (or bind 127.0.0.1)"
            )
        return cls(token=token, require_everywhere=not local, token_env=name)

    def check(self, path: str, authorization: str | None) -> None:
        """Allow or refuse one request.

        Args:
            path: the request path.
            authorization: the ``Authorization`` header, if any.

        Raises:
            AuthError: 401 for a missing or wrong token, 403 for admin calls with no token set.
        """
        admin = path.startswith(ADMIN_PREFIX)
        if path in PUBLIC_PATHS or not (admin or self.require_everywhere):
            return
        if self.token is None:
            raise AuthError(403, f"admin endpoints are disabled: set {self.token_env} to enable them "
                                 "(or send SIGHUP to reload)")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise AuthError(401, "invalid bearer token")
