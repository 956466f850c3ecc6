"""Projection heads on top of the frozen backbones, and the fusion of the two towers.

Fusion (``fusion="mean"``, the default): each tower's projection is L2-normalised, the two unit
vectors are averaged, and the mean is L2-normalised again, so text and image weigh equally. A row
without an image (none given, unreadable, or an encoder without an image tower) gets the normalised
text projection alone. ``fusion="concat"``: the two normalised projections (the image half zero when
there is no image) are concatenated and mapped to d by a linear layer, then normalised.

Queries and items go through the same :class:`FusionEncoder` (query text -> text head, query image
-> image head), as in the paper's SCL. With ``text_layers = k > 0`` the encoder also holds MiniLM's
top k layers (:class:`encoders.backbones.TextTop`), and its text input is the token states below
them instead of the pooled features.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from encoders.backbones import IMAGE_DIM, TEXT_DIM, TextTop

Fusion = Literal["mean", "concat"]


class ProjectionHead(nn.Module):
    """Maps backbone features to d: a linear map plus, when ``hidden > 0``, a residual MLP branch.

    Args:
        in_dim: backbone feature size.
        dim: output size d.
        hidden: width of the MLP branch (0 = a plain linear projection).

    Shapes: ``(B, in_dim) -> (B, d)`` (not normalised).
    """

    def __init__(self, in_dim: int, dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, elementwise_affine=False)
        self.linear = nn.Linear(in_dim, dim, bias=False)
        self.mlp: nn.Module | None = None
        if hidden > 0:
            self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project a batch of features."""
        x = self.norm(x)
        out = self.linear(x)
        if self.mlp is not None:
            out = out + self.mlp(x)
        return out


class FusionEncoder(nn.Module):
    """Text head, optional image head and fusion: backbone features -> one unit vector per row.

    Args:
        dim: output dimension d.
        hidden: MLP width of each head (0 = linear heads, as in the frozen baseline).
        use_images: build the image head; without it every vector is text-only.
        fusion: ``"mean"`` or ``"concat"`` (see the module docstring).
        text_layers: k trainable MiniLM layers below the text head (0 = pooled frozen features).
    """

    def __init__(self, dim: int, hidden: int = 0, use_images: bool = True, fusion: Fusion = "mean",
                 text_layers: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.use_images = use_images
        self.fusion = fusion
        self.text_top = TextTop(text_layers) if text_layers else None
        self.text_head = ProjectionHead(TEXT_DIM, dim, hidden)
        self.image_head = ProjectionHead(IMAGE_DIM, dim, hidden) if use_images else None
        self.fuse = nn.Linear(2 * dim, dim, bias=False) if use_images and fusion == "concat" else None

    def forward(self, text: torch.Tensor, image: torch.Tensor, has_image: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse a batch.

        Args:
            text: ``(B, 384)`` pooled MiniLM features, or with ``text_layers > 0`` the ``(B, L, 384)``
                token states below the trainable layers.
            image: ``(B, 1280)`` EfficientNet features (any values where ``has_image`` is False),
                or ``(B, 0)`` when the encoder has no image tower.
            has_image: ``(B,)`` bool.
            text_mask: ``(B, L)`` bool, the real tokens of ``text`` (only with ``text_layers > 0``).

        Returns:
            ``(B, d)`` L2-normalised vectors.

        Raises:
            ValueError: token states without a mask, or pooled features given to an encoder with
                trainable text layers (or the reverse).
        """
        if (self.text_top is None) != (text.dim() == 2) or (self.text_top is not None and text_mask is None):
            want = "(B, 384) pooled features" if self.text_top is None else "(B, L, 384) token states and a mask"
            raise ValueError(f"this encoder takes {want}; got text of shape {tuple(text.shape)}")
        if self.text_top is not None and text_mask is not None:
            text = self.text_top(text, text_mask)
        t = F.normalize(self.text_head(text), dim=-1)
        if self.image_head is None or not bool(has_image.any()):
            if self.fuse is not None:
                return F.normalize(self.fuse(torch.cat([t, torch.zeros_like(t)], dim=-1)), dim=-1)
            return t
        mask = has_image.to(t.dtype).unsqueeze(-1)  # (B, 1)
        i = F.normalize(self.image_head(image), dim=-1) * mask
        if self.fuse is not None:
            return F.normalize(self.fuse(torch.cat([t, i], dim=-1)), dim=-1)
        return F.normalize(t + i, dim=-1)


def random_projection_(encoder: FusionEncoder, seed: int) -> FusionEncoder:
    """Reset every weight to a fixed seeded Gaussian (the 'no SCL' baseline); returns the encoder.

    A Gaussian linear map approximately preserves the backbone's cosine geometry (Johnson-
    Lindenstrauss), so the baseline measures the frozen backbones themselves.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in encoder.parameters():
            fan_in = p.shape[-1] if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5 if p.dim() > 1 else torch.zeros(p.shape))
    return encoder
