"""Request and response models of the ranking service, and the one request parser.

Requests are parsed from the raw body by :func:`parse_request` (pydantic in strict JSON mode), so
each bad input becomes a :class:`~serving.errors.RequestError` with one readable message:

* malformed JSON -> 400;
* a wrong type (``5.0``, ``true`` for an id), an unknown field, a negative or > int64 id, an empty
  string id, an empty, oversized (> ``cfg.serving.max_candidates``) or duplicated candidate list,
  ``k`` or ``top_k`` outside ``1..cfg.serving.max_k`` -> 422.

Ids are JSON integers or strings, as the dataset wrote them (:func:`infra.ids.id_to_int64` maps
them to the int64 the features are keyed by); responses answer with the same spellings.

Limits come from the configuration through :class:`Limits` (pydantic validation context).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from infra.config import ServingConfig
from infra.ids import InvalidIdError, id_to_int64
from serving.errors import RequestError

INT64_MAX = 2**63 - 1
MAX_SHOWN_ERRORS = 3
DEFAULT_K = 10  # per response: enough to act on, short enough to read



def _valid_id(v: Any) -> int | str:
    try:
        id_to_int64(v)
    except InvalidIdError as exc:
        raise ValueError(str(exc)) from None
    return v  # type: ignore[no-any-return]  # id_to_int64 accepted it: an int or a str


# an id as the dataset wrote it: a JSON integer in 0..2**63-1 or a non-empty string
EntityId = Annotated[int | str, PlainValidator(_valid_id), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": INT64_MAX}, {"type": "string", "minLength": 1}]})]
ResponseId = int | str


@dataclass(frozen=True)
class Limits:
    """Size limits of requests (from ``cfg.serving``).

    Attributes:
        max_candidates: most candidate ids one /rank request may carry.
        max_k: largest ``k`` (/recommend, /similar) and ``top_k`` (/rank).
    """

    max_candidates: int
    max_k: int

    @classmethod
    def from_config(cls, serving: ServingConfig) -> Limits:
        """The limits of a serving configuration."""
        return cls(max_candidates=serving.max_candidates, max_k=serving.max_k)


_DEFAULT_LIMITS = Limits.from_config(ServingConfig())


def _limits(info: ValidationInfo) -> Limits:
    ctx = info.context or {}
    limits = ctx.get("limits", _DEFAULT_LIMITS)
    return limits if isinstance(limits, Limits) else _DEFAULT_LIMITS


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RankRequest(_Request):
    """``POST /rank``: score the given candidates for a user.

    Attributes:
        user_id: the user (an unknown user is ranked with an empty history).
        candidate_item_ids: 1..max_candidates distinct item ids.
        top_k: return only the best ``top_k`` (default: all candidates).
    """

    user_id: EntityId
    candidate_item_ids: list[EntityId]
    top_k: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _check_sizes(self, info: ValidationInfo) -> RankRequest:
        limits = _limits(info)
        n = len(self.candidate_item_ids)
        if n == 0:
            raise ValueError("candidate_item_ids is empty: send at least one item id")
        if n > limits.max_candidates:
            raise ValueError(f"candidate_item_ids has {n} ids, more than the limit of {limits.max_candidates}")
        ints = [id_to_int64(i) for i in self.candidate_item_ids]
        if len(set(ints)) != n:
            dupes = sorted({str(i) for i, v in zip(self.candidate_item_ids, ints, strict=True) if Counter(ints)[v] > 1})
            shown = ", ".join(dupes[:5]) + (", ..." if len(dupes) > 5 else "")
            raise ValueError(f"candidate_item_ids holds duplicate ids: {shown}")
        if self.top_k is not None and self.top_k > limits.max_k:
            raise ValueError(f"top_k = {self.top_k} is more than the limit of {limits.max_k}")
        return self


class RecommendRequest(_Request):
    """``POST /recommend``: retrieve candidates from Milvus for a user, then rank them.

    Attributes:
        user_id: the user (a cold user gets the fallback candidates).
        k: how many items to return, 1..max_k (default ``min(DEFAULT_K, max_k)``).
    """

    user_id: EntityId
    k: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _check_k(self, info: ValidationInfo) -> RecommendRequest:
        limit = _limits(info).max_k
        if self.k is not None and self.k > limit:
            raise ValueError(f"k = {self.k} is more than the limit of {limit}")
        return self


class ReloadRequest(_Request):
    """``POST /admin/reload``: load a run directory (default: the current one) and swap it in.

    Attributes:
        run_dir: the trained run directory to serve from now on.
        model: the model name under ``RUN_DIR/ctr/models`` (default: the run's best model).
    """

    run_dir: str | None = None
    model: str | None = None


class ScoredItem(BaseModel):
    """One ranked item."""

    item_id: ResponseId
    score: float


class RankResponse(BaseModel):
    """The answer of ``/rank`` and ``/recommend``.

    Attributes:
        items: items sorted by score, best first.
        model_version: the version of the model that scored them.
        missing_embeddings: candidates scored without multimodal features (no vector yet).
        timing_ms: time per stage (``features``, ``model``, ``ann``, ``total``).
        source: where the candidates came from (``request``, ``ann``, ``ann+fresh``, ``fresh``).
    """

    items: list[ScoredItem]
    model_version: str
    missing_embeddings: list[ResponseId]
    timing_ms: dict[str, float]
    source: str = "request"


class SimilarItem(BaseModel):
    """One neighbour of ``/similar``: cosine similarity and the item's metadata."""

    item_id: ResponseId
    similarity: float
    category: str | None = None
    created_at_ms: int | None = None


class SimilarResponse(BaseModel):
    """The answer of ``/similar/{item_id}``."""

    item_id: ResponseId
    items: list[SimilarItem]
    timing_ms: dict[str, float]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: one human-readable message."""

    detail: str


def format_validation_error(exc: ValidationError) -> str:
    """One line naming the first few problems: ``field.path: message; ...``."""
    parts = []
    for err in exc.errors()[:MAX_SHOWN_ERRORS]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(exc.errors()) - MAX_SHOWN_ERRORS
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


Req = TypeVar("Req", bound=_Request)


def parse_request(model: type[Req], body: bytes, limits: Limits) -> Req:
    """Parse and validate a JSON request body.

    Args:
        model: the request model (:class:`RankRequest`, ...).
        body: the raw request body.
        limits: the size limits to enforce.

    Returns:
        The validated request.

    Raises:
        RequestError: 400 for malformed JSON, 422 for anything else that does not validate.
    """
    if not body.strip():
        raise RequestError(400, "the request body is empty: send a JSON object")
    try:
        return model.model_validate_json(body, context={"limits": limits})
    except ValidationError as exc:
        errors: list[Any] = exc.errors()
        if errors and errors[0]["type"] == "json_invalid":
            raise RequestError(400, f"malformed JSON: {errors[0]['msg']}") from None
        raise RequestError(422, f"invalid {model.__name__}: {format_validation_error(exc)}") from None
