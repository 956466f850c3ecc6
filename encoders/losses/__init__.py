"""SCL losses, one per module, on plain tensors so they can be checked by hand."""

from encoders.losses.infonce import info_nce
from encoders.losses.triplet import triplet_margin

__all__ = ["info_nce", "triplet_margin"]
