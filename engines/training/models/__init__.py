"""The networks (torch): ECMRNet family, the PlainNet reference, the student. Their presets are
declared in :data:`tir.engines.models.MODELS` (torch-free, read by ``tir run``/``tir bench``)."""
