"""The main job's stages, grouped by the part they drive (each a function ``(RunContext) -> dict``)."""
