"""Inference backends: ONNX Runtime (CPU/CUDA), torch, TensorRT (lazy import)."""
