"""The ``simtier`` on-demand feature view (python mode): it calls the shared :func:`simtier`.

Inputs are the candidate's ``item_embeddings:emb`` and the user's history vectors, ``hist_emb_flat``
(``L x d`` float32, newest first), a field of the request source ``history_vectors``; outputs are the
:func:`~feature_repo.simtier.SIMTIER_COLUMNS` as Float64 (python mode needs Float64).

Why a request field: the lean ``user_behavior`` row holds item ids, not vectors, and a Feast ODFV
can read only the rows of its request's own entities (the target item, the user), not the rows of
the items a feature *names* - Feast has no lookup by a list of ids. So the caller gathers the
history vectors with the one :func:`feature_repo.history.gather` (serving's reference path over the
item rows it read, the offline parity check over the item table) and hands them in as request data;
Feast still joins the target's vector and evaluates the view, and the value is the fast paths'.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import FunctionType
from typing import Any

import numpy as np
from feast import FeatureView, Field, OnDemandFeatureView, RequestSource
from feast.types import Array, Float32, Float64

from feature_repo.schema import HIST_VECTORS_FIELD, HIST_VECTORS_REQUEST, SIMTIER_VIEW
from feature_repo.simtier import SIMTIER_COLUMNS, simtier
from infra.config import MmadsConfig


def target_matrix(emb_rows: Sequence[Any], dim: int) -> np.ndarray:
    """Stack target vectors: (B, dim) float32; a missing (None) or wrong-length one becomes zeros."""
    target = np.zeros((len(emb_rows), dim), dtype=np.float32)
    for i, emb in enumerate(emb_rows):
        if emb is not None and len(emb) == dim:
            target[i] = emb
    return target


def history_matrix(flat: Any, dim: int) -> np.ndarray:
    """One ``hist_emb_flat`` value as (L, dim) float32.

    None, or a length that is not a multiple of ``dim`` (e.g. the one-element dummy input ``feast
    apply`` passes), is an empty history.
    """
    arr = np.asarray(flat if flat is not None else (), dtype=np.float32)
    return arr.reshape(-1, dim) if arr.size % dim == 0 else np.zeros((0, dim), np.float32)


def _history_tensor(flat_rows: Sequence[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, N_max, dim) float32 zero-padded histories and their lengths from ``hist_emb_flat`` rows."""
    arrays = [history_matrix(flat, dim) for flat in flat_rows]
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    hist = np.zeros((len(arrays), int(lengths.max(initial=0)), dim), dtype=np.float32)
    for i, arr in enumerate(arrays):
        hist[i, : arr.shape[0]] = arr
    return hist, lengths


def simtier_from_lists(
    emb_rows: Sequence[Any], flat_rows: Sequence[Any], dim: int, n_tiers: int
) -> dict[str, list[float]]:
    """SimTier over row lists as Feast hands them to a python-mode ODFV.

    Args:
        emb_rows: per row, the target item's vector (length ``dim``) or None.
        flat_rows: per row, the user's ``hist_emb_flat`` (``L * dim`` floats) or None.
        dim: the vector dimension d.
        n_tiers: the number of tiers T.

    Returns:
        ``{column: [float per row]}`` for :func:`SIMTIER_COLUMNS`.
    """
    target = target_matrix(emb_rows, dim)
    hist, lengths = _history_tensor(flat_rows, dim)
    out = simtier(target, hist, lengths, n_tiers)
    return {name: out[:, k].tolist() for k, name in enumerate(SIMTIER_COLUMNS(n_tiers))}


def apply_simtier_udf(inputs: dict[str, Any], dim: int, n_tiers: int) -> dict[str, list[float]]:
    """The body of the ODFV: ``{"emb": [...], "hist_emb_flat": [...]} -> {column: [...]}``.

    Feast passes the inputs under short and/or ``view__feature`` names; both are accepted.
    """
    emb = inputs.get("emb", inputs.get("item_embeddings__emb"))
    flat = inputs.get(HIST_VECTORS_FIELD, inputs.get(f"{HIST_VECTORS_REQUEST}__{HIST_VECTORS_FIELD}"))
    emb_rows = list(emb) if emb is not None else []
    flat_rows = list(flat) if flat is not None else [None] * len(emb_rows)
    return simtier_from_lists(emb_rows, flat_rows, dim, n_tiers)


# Feast 0.67 re-creates a UDF by exec'ing its source text (registry body_text), without the
# defining module's globals or closure cells: the source must be self-contained, with the
# configuration baked in as literals. The callable we register is exec'd from that same text.
_UDF_TEMPLATE = """def simtier_udf(inputs):
    from feature_repo.on_demand import apply_simtier_udf

    return apply_simtier_udf(inputs, dim={dim}, n_tiers={n_tiers})
"""


def make_simtier_udf(dim: int, n_tiers: int) -> tuple[FunctionType, str]:
    """The python-mode UDF and its (self-contained) source text.

    Args:
        dim: the vector dimension d.
        n_tiers: the number of tiers T.

    Returns:
        ``(udf, source)``; ``udf`` is the function that ``source`` defines.
    """
    source = _UDF_TEMPLATE.format(dim=int(dim), n_tiers=int(n_tiers))
    namespace: dict[str, Any] = {}
    exec(compile(source, "<feature_repo.simtier_udf>", "exec"), namespace)  # noqa: S102 - our own text
    return namespace["simtier_udf"], source


def history_request() -> RequestSource:
    """The request source of the history vectors (``hist_emb_flat``, gathered by the caller)."""
    return RequestSource(name=HIST_VECTORS_REQUEST, schema=[Field(name=HIST_VECTORS_FIELD, dtype=Array(Float32))])


def simtier_view(cfg: MmadsConfig, items: FeatureView) -> OnDemandFeatureView:
    """The ``simtier`` ODFV over ``items[emb]`` and the request's gathered history vectors."""
    udf, source = make_simtier_udf(cfg.model.dim, cfg.model.n_tiers)
    return OnDemandFeatureView(
        name=SIMTIER_VIEW,
        sources=[items[["emb"]], history_request()],
        schema=[Field(name=c, dtype=Float64) for c in SIMTIER_COLUMNS(cfg.model.n_tiers)],
        mode="python",
        udf=udf,
        udf_string=source,
        description="Histogram of cosine similarities target vs behavior vectors (feature_repo.simtier).",
    )
