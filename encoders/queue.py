"""The MoCo memory bank: a FIFO ring buffer of momentum-encoder keys with their item ids and categories.

Keys enter at the tail; once ``size`` keys are held, each new key evicts the oldest. The item ids
let the loss mask duplicates of a query's positive item (false negatives); the categories let the
trainer mine same-category hard negatives from the bank.
"""

from __future__ import annotations

from typing import Any

import torch


class KeyQueue:
    """A fixed-size FIFO of ``(key, item_id, category)`` rows.

    Args:
        size: capacity K (0 = an always-empty queue).
        dim: key dimension d.
    """

    def __init__(self, size: int, dim: int) -> None:
        self.size = size
        self.dim = dim
        self.keys = torch.zeros(size, dim)
        self.ids = torch.full((size,), -1, dtype=torch.long)
        self.cats = torch.full((size,), -1, dtype=torch.long)
        self.ptr = 0  # next slot to write (= the oldest key once the queue is full)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor, cats: torch.Tensor) -> None:
        """Append keys, evicting the oldest when full.

        Args:
            keys: ``(B, d)`` momentum-encoder keys.
            ids: ``(B,)`` long item ids.
            cats: ``(B,)`` long category codes.
        """
        if self.size == 0:
            return
        keys, ids, cats = keys.detach()[-self.size:], ids[-self.size:], cats[-self.size:]
        n = keys.shape[0]
        slots = (self.ptr + torch.arange(n)) % self.size
        self.keys[slots] = keys.to(self.keys.dtype)
        self.ids[slots] = ids.long()
        self.cats[slots] = cats.long()
        self.ptr = int((self.ptr + n) % self.size)
        self.count = min(self.size, self.count + n)

    def contents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The held rows, oldest first: ``(keys (M, d), ids (M,), cats (M,))`` with M = ``len(self)``."""
        if self.count < self.size:
            order = torch.arange(self.count)
        else:
            order = (self.ptr + torch.arange(self.size)) % self.size
        return self.keys[order], self.ids[order], self.cats[order]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the queue (for checkpoints)."""
        return {"size": self.size, "dim": self.dim, "keys": self.keys.clone(), "ids": self.ids.clone(),
                "cats": self.cats.clone(), "ptr": self.ptr, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (size and dim must match)."""
        if state["size"] != self.size or state["dim"] != self.dim:
            raise ValueError(f"queue shape mismatch: saved ({state['size']}, {state['dim']}), "
                             f"expected ({self.size}, {self.dim})")
        self.keys, self.ids, self.cats = state["keys"], state["ids"], state["cats"]
        self.ptr, self.count = int(state["ptr"]), int(state["count"])
