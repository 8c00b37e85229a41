"""Models, pruning, training, export, inference backends and the engine cache."""
