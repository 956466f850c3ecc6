"""Triplet margin term for hard negatives: push a query's hard negative below its positive."""

from __future__ import annotations

import torch


def triplet_margin(
    queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, margin: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of ``max(0, margin - q.p + q.n)`` over the valid rows (cosines for unit vectors).

    Args:
        queries: ``(B, d)`` query vectors.
        positives: ``(B, d)`` each query's positive.
        negatives: ``(B, d)`` each query's hard negative.
        margin: required gap between the positive and the negative similarity.
        valid: ``(B,)`` bool, rows that have a hard negative (default all).

    Returns:
        Scalar loss; 0 when no row is valid.
    """
    gap = margin - (queries * positives).sum(-1) + (queries * negatives).sum(-1)  # (B,)
    losses = gap.clamp(min=0)
    if valid is not None:
        if not bool(valid.any()):
            return queries.sum() * 0.0
        losses = losses[valid]
    return losses.mean()
