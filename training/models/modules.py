"""Reusable layers of the CTR models: MLP, DIN target attention, the SimTier tower."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected layers with ReLU between them (no activation after the last).

    Args:
        in_dim: input width.
        sizes: output width of each layer, e.g. ``(128, 64, 1)``.
    """

    def __init__(self, in_dim: int, sizes: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, size in enumerate(sizes):
            layers.append(nn.Linear(in_dim, size))
            if i < len(sizes) - 1:
                layers.append(nn.ReLU())
            in_dim = size
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, sizes[-1])."""
        return self.net(x)


class TargetAttention(nn.Module):
    """DIN-style target attention: the target attends over the behavior sequence.

    The attention MLP scores ``[q, k, q - k, q * k]`` per position. Its first layer is applied in
    factorised form, mathematically the same layer: ``(W1 + W3) q + (W2 - W3) k + W4 (q * k)``
    = ``A q + k (K + diag(q) P)``, so the query part is computed once per row and the per-position
    part is ONE batched matmul of the keys with a per-row (d, hidden) matrix.

    Args:
        dim: width d of query and keys.
        hidden: width of the attention MLP's hidden layer.
    """

    def __init__(self, dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, hidden)
        self.k_proj = nn.Linear(dim, hidden, bias=False)
        self.qk_proj = nn.Linear(dim, hidden, bias=False)
        self.score = nn.Linear(hidden, 1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attend.

        Args:
            query: (B, d) target.
            keys: (B, N, d) behavior sequence (values are the keys), or (1, N, d) shared by all B.
            mask: (B, N) bool, True at real positions (or (1, N) with shared keys).

        Returns:
            (B, d) pooled behaviors; zeros for rows with an empty sequence.
        """
        if keys.shape[0] == 1 and query.shape[0] != 1:
            return self._shared(query, keys[0], mask[0])
        # per-row key weights: K + diag(q) P, (B, d, hidden)
        w = self.k_proj.weight.t().unsqueeze(0) + query.unsqueeze(2) * self.qk_proj.weight.t().unsqueeze(0)
        h = torch.baddbmm(self.q_proj(query).unsqueeze(1), keys, w)  # (B, N, hidden)
        return torch.bmm(self._weights(h, mask).unsqueeze(1), keys).squeeze(1)

    def _shared(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same attention when all B queries attend over one (N, d) sequence.

        ``q (K + diag(q) P)`` per position becomes ``k K`` once plus ONE (B, d) x (d, N * hidden)
        matmul against ``k_n,j P_j`` (no (B, N, d) gather of the keys, no per-row (d, hidden)
        matrices): the service's case, one user and many candidates, at ~1/3 of the work.
        """
        n, d = keys.shape
        hidden = self.k_proj.weight.shape[0]
        per_key = keys.unsqueeze(2) * self.qk_proj.weight.t().unsqueeze(0)  # (N, d, hidden)
        qk = (query @ per_key.transpose(0, 1).reshape(d, n * hidden)).view(-1, n, hidden)  # (B, N, hidden)
        h = qk + self.k_proj(keys).unsqueeze(0) + self.q_proj(query).unsqueeze(1)
        return self._weights(h, mask) @ keys  # (B, N) x (N, d)

    def _weights(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, N) from the hidden layer ``h`` (B, N, hidden): masked softmax of the scores.

        ``mask`` is (B, N), or (N,) for a shared sequence (it broadcasts).
        """
        logits = self.score(torch.relu(h)).squeeze(-1)  # (B, N)
        # a finite fill keeps all-masked rows NaN-free; multiplying by the mask zeroes them
        return torch.softmax(logits.masked_fill(~mask, -1e9), dim=-1) * mask


class SimTierTower(nn.Module):
    """SimTier features -> log1p tier counts times learnable per-tier weights, plus the scalars.

    Input columns (the feature contract): tier fractions ``tier_0..tier_{T-1}`` (counts / length),
    ``hist_len``, ``sim_max``, ``sim_mean``. Counts are recovered as fraction x length.

    Args:
        n_tiers: T.
    """

    def __init__(self, n_tiers: int) -> None:
        super().__init__()
        self.n_tiers = n_tiers
        self.tier_weight = nn.Parameter(torch.ones(n_tiers))

    @property
    def out_dim(self) -> int:
        """Output width T + 3."""
        return self.n_tiers + 3

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T + 3) raw features -> (B, T + 3): weighted log1p counts, log1p length, max, mean."""
        fractions = feats[:, : self.n_tiers]
        length = feats[:, self.n_tiers : self.n_tiers + 1].clamp(min=0)
        counts = torch.log1p(fractions * length) * self.tier_weight
        return torch.cat([counts, torch.log1p(length), feats[:, self.n_tiers + 1 :]], dim=1)
