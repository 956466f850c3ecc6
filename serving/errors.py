"""Errors of the ranking service and the HTTP status each one answers with.

Every error a client or a broken dependency can cause is an :class:`~infra.errors.MmadsError`;
:func:`http_status` maps it to a status code and the app answers ``{"detail": message}`` without a
stack trace (see ``serving.app``).
"""

from __future__ import annotations

from infra.errors import MmadsError, ModelArtifactError, StackError, StackNotRunningError


class RequestError(MmadsError):
    """A request the service cannot answer as sent (bad JSON, bad value, unknown item).

    Attributes:
        status: the HTTP status (4xx).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AuthError(RequestError):
    """A missing or wrong bearer token (401), or an admin call with no token configured (403)."""


class FeatureStoreUnavailableError(StackNotRunningError):
    """The Feast online store cannot be read (SQLite file missing or locked, Redis down)."""


class RetrievalUnavailableError(StackNotRunningError):
    """The Milvus collection cannot be searched (server down, collection missing)."""


def http_status(exc: MmadsError) -> int:
    """The HTTP status for an error raised while serving a request.

    Args:
        exc: the error.

    Returns:
        4xx for request errors, 503 for an unreachable dependency, 409 for a bad model
        artifact (the old model keeps serving), 500 otherwise (e.g. a FeatureError: the stored
        features do not fit the model; the message still says which).
    """
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, StackError):
        return 503
    if isinstance(exc, ModelArtifactError):
        return 409
    return 500
