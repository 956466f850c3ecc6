"""The SCL training module: online encoder, momentum encoder, memory bank and the combined loss.

Variants (see :data:`VARIANTS`):

- ``inbatch``: InfoNCE with the other items of the batch as negatives.
- ``queue``: plus a MoCo queue of keys from the momentum encoder (a slow exponential moving average
  of the online encoder), so each query sees K more negatives than the batch holds.
- ``hard``: plus a triplet term weighted by ``hard_negative_weight``: the hard negative is an item
  clicked but not bought after the same query when the data has one, else the most similar
  same-category item mined from the batch and the queue.

Duplicates of a positive item (same item id in the batch or the queue) are masked as false
negatives. The towers are shared by queries and items. With ``trainable_text_layers = k``, the
encoder (and so the momentum encoder) holds MiniLM's top k layers, initialised from the published
weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from encoders.backbones import text_backbone
from encoders.losses import info_nce, triplet_margin
from encoders.negatives import mine_same_category
from encoders.queue import KeyQueue
from encoders.towers import Fusion, FusionEncoder
from infra.config import SCLConfig

VARIANTS = ("inbatch", "queue", "hard")


@dataclass
class TowerInput:
    """Backbone features of B rows: text ``(B, 384)``, image ``(B, 1280)`` or ``(B, 0)``, has_image ``(B,)``.

    With trainable text layers, text is ``(B, L, 384)`` token states and ``text_mask`` ``(B, L)``.
    """

    text: torch.Tensor
    image: torch.Tensor
    has_image: torch.Tensor
    text_mask: torch.Tensor | None = None


@dataclass
class SCLBatch:
    """One training batch of B (query, purchased item) pairs.

    Attributes:
        query, item: tower inputs of the queries and their positive items.
        item_ids, cats: ``(B,)`` long, the positive's item id and category code.
        hard: tower inputs of a clicked-not-bought item per query (rows without one are arbitrary).
        hard_valid: ``(B,)`` bool, True where ``hard`` holds a real clicked item.
    """

    query: TowerInput
    item: TowerInput
    item_ids: torch.Tensor
    cats: torch.Tensor
    hard: TowerInput
    hard_valid: torch.Tensor


class SCLModel(nn.Module):
    """Trainable SCL model.

    Args:
        dim: vector dimension d.
        hidden: MLP width of the projection heads.
        use_images: whether the encoder has an image tower.
        fusion: tower fusion method.
        variant: one of :data:`VARIANTS`.
        scl: temperature, momentum, hard-negative weight and margin.
        queue_size: K (ignored by ``inbatch``).
    """

    def __init__(self, *, dim: int, hidden: int, use_images: bool, fusion: Fusion, variant: str,
                 scl: SCLConfig, queue_size: int) -> None:
        super().__init__()
        self.variant = variant
        self.scl = scl
        self.encoder = FusionEncoder(dim, hidden, use_images, fusion, text_layers=scl.trainable_text_layers)
        if self.encoder.text_top is not None:  # start from MiniLM's published top layers
            self.encoder.text_top.load_pretrained_(text_backbone(scl.text_max_tokens))
        self.momentum_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.log_temp = nn.Parameter(torch.tensor(math.log(scl.temperature)),
                                     requires_grad=scl.learn_temperature)
        self.uses_queue = variant in ("queue", "hard") and queue_size > 0
        self.queue = KeyQueue(queue_size if self.uses_queue else 0, dim)
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _encode(self, x: TowerInput) -> torch.Tensor:
        return self.encoder(x.text, x.image, x.has_image, x.text_mask)

    def forward(self, batch: SCLBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch; call :meth:`end_step` after the optimiser step.

        Returns:
            ``(loss, stats)`` with stats ``infonce`` and ``triplet``.
        """
        q = self._encode(batch.query)  # (B, d)
        k = self._encode(batch.item)  # (B, d)
        temp = self.log_temp.exp()
        queue_keys, queue_ids, queue_cats = self.queue.contents()
        if self.uses_queue:
            with torch.no_grad():
                k_m = self.momentum_encoder(batch.item.text, batch.item.image, batch.item.has_image,
                                            batch.item.text_mask)
            self._pending = (k_m, batch.item_ids, batch.cats)
        nce = info_nce(q, k, temp, key_ids=batch.item_ids,
                       queue=queue_keys if self.uses_queue else None, queue_ids=queue_ids)
        stats = {"infonce": float(nce.detach())}
        loss = nce
        if self.variant == "hard" and self.scl.hard_negative_weight > 0:
            trip = self._hard_term(q, k, batch, queue_keys, queue_ids, queue_cats)
            stats["triplet"] = float(trip.detach())
            loss = loss + self.scl.hard_negative_weight * trip
        return loss, stats

    def _hard_term(self, q: torch.Tensor, k: torch.Tensor, batch: SCLBatch, queue_keys: torch.Tensor,
                   queue_ids: torch.Tensor, queue_cats: torch.Tensor) -> torch.Tensor:
        cands = torch.cat([k, queue_keys]) if self.uses_queue else k
        cand_ids = torch.cat([batch.item_ids, queue_ids]) if self.uses_queue else batch.item_ids
        cand_cats = torch.cat([batch.cats, queue_cats]) if self.uses_queue else batch.cats
        mined, mined_ok = mine_same_category(q, batch.item_ids, batch.cats, cands, cand_ids, cand_cats)
        neg, valid = mined, mined_ok
        if bool(batch.hard_valid.any()):
            clicked = self._encode(batch.hard)
            use = batch.hard_valid.unsqueeze(-1)
            neg = torch.where(use, clicked, mined)
            valid = batch.hard_valid | mined_ok
        return triplet_margin(q, k, neg, self.scl.hard_negative_margin, valid)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``theta_k <- m theta_k + (1 - m) theta_q`` for every momentum-encoder weight."""
        m = self.scl.momentum
        for pk, pq in zip(self.momentum_encoder.parameters(), self.encoder.parameters(), strict=True):
            pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)

    def end_step(self) -> None:
        """After the optimiser step: update the momentum encoder and enqueue this batch's keys."""
        if not self.uses_queue or self._pending is None:
            return
        self.momentum_update()
        self.queue.enqueue(*self._pending)
        self._pending = None
