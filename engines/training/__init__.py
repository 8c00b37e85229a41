"""Training: everything that needs torch or the training data sets (train, router training,
pruning, export, distillation, losses, the open-world model, baselines, MAC counts, data sets,
evaluation). It may import the runtime (tir.engines, tir.edge) and the degradation catalogue
(tir.engines.degrade); the runtime never imports it (tests/test_layers.py, docs/architecture.md).
"""
