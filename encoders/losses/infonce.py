"""InfoNCE over (query, positive item) pairs with in-batch and memory-bank negatives.

For query i with positive key k_i, the logits are ``q_i . k_j / T`` for every key j in the batch
and ``q_i . m_l / T`` for every key l in the queue; the loss is the cross-entropy of picking k_i.
A negative that is the same item as the positive (same item id: a duplicate in the batch or the
queue) is a false negative and is masked out of the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor,
    keys: torch.Tensor,
    temperature: float | torch.Tensor,
    *,
    key_ids: torch.Tensor | None = None,
    queue: torch.Tensor | None = None,
    queue_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean InfoNCE loss.

    Args:
        queries: ``(B, d)`` query vectors (normalised by the caller for cosine logits).
        keys: ``(B, d)``; row i is the positive of query i and a negative of every other query.
        temperature: scalar T > 0 (a tensor when learnable).
        key_ids: ``(B,)`` item id of each key; keys sharing the positive's id are masked.
        queue: ``(M, d)`` extra negatives (memory bank), or None.
        queue_ids: ``(M,)`` item ids of the queue rows (masking as above).

    Returns:
        Scalar loss.
    """
    b = queries.shape[0]
    logits = queries @ keys.T / temperature  # (B, B)
    eye = torch.eye(b, dtype=torch.bool, device=queries.device)
    if key_ids is not None:
        same = key_ids.unsqueeze(1) == key_ids.unsqueeze(0)
        logits = logits.masked_fill(same & ~eye, float("-inf"))
    if queue is not None and queue.shape[0] > 0:
        q_logits = queries @ queue.T / temperature  # (B, M)
        if key_ids is not None and queue_ids is not None:
            q_logits = q_logits.masked_fill(key_ids.unsqueeze(1) == queue_ids.unsqueeze(0), float("-inf"))
        logits = torch.cat([logits, q_logits], dim=1)
    target = torch.arange(b, device=queries.device)
    return F.cross_entropy(logits, target)
