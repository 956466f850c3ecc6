"""The synthetic marketplace: items with hidden latents, users, behaviors, impressions and queries.

What it models: docs/architecture.md, "The synthetic marketplace"; the files it writes: docs/data.md.
Entry point: :func:`generate_dataset`.
"""

from mmads.datagen.generate import GenerationSummary, generate_dataset, generation_params

__all__ = ["GenerationSummary", "generate_dataset", "generation_params"]
