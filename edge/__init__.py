"""Runtime: sources, camera control, pipeline, AGC, outputs."""
