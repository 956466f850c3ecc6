"""The synthetic marketplace: items with hidden latents, users, behaviors, impressions and queries.

See DESIGN.md, "The synthetic marketplace". Entry point: :func:`generate_dataset`.
"""

from mmads.datagen.generate import GenerationSummary, generate_dataset

__all__ = ["GenerationSummary", "generate_dataset"]
