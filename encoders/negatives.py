"""Hard-negative mining: the most similar same-category item that is not the positive."""

from __future__ import annotations

import torch


def mine_same_category(
    queries: torch.Tensor,
    pos_ids: torch.Tensor,
    pos_cats: torch.Tensor,
    candidates: torch.Tensor,
    cand_ids: torch.Tensor,
    cand_cats: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, pick the candidate of the positive's category (but another item) it scores highest.

    Args:
        queries: ``(B, d)``.
        pos_ids: ``(B,)`` the positive item's id.
        pos_cats: ``(B,)`` the positive item's category code.
        candidates: ``(M, d)`` candidate vectors (gradients flow through the chosen rows).
        cand_ids: ``(M,)`` candidate item ids.
        cand_cats: ``(M,)`` candidate category codes.

    Returns:
        ``(negatives (B, d), valid (B,) bool)``; a row without any same-category candidate is
        invalid and its negative row is arbitrary.
    """
    if candidates.shape[0] == 0:
        return torch.zeros_like(queries), torch.zeros(queries.shape[0], dtype=torch.bool)
    allowed = (pos_cats.unsqueeze(1) == cand_cats.unsqueeze(0)) & (pos_ids.unsqueeze(1) != cand_ids.unsqueeze(0))
    scores = (queries @ candidates.T).detach().masked_fill(~allowed, float("-inf"))  # (B, M)
    best = scores.argmax(dim=1)
    return candidates[best], allowed.any(dim=1)
