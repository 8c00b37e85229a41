"""The presets of the networks (ECMRNet family, PlainNet reference); the networks themselves
(torch) are in tir.engines.training.models.

:data:`MODELS` is the one place presets are declared (the registry pattern of
tir.edge.registry): ``family:preset`` -> the family's config class (``"module:Class"``, imported
on first use, so listing presets never imports torch) with the preset's field values in
``config``. Meta: ``family``; ``build`` / ``export`` (``"module:function"``) for the reference
networks ``tir run``/``tir bench --model NAME`` build on the fly with seeded-random weights;
training presets have neither (``tir train --preset NAME``). Each model file's ``PRESETS`` is a
view of its family here (:func:`presets`).
"""
from __future__ import annotations

from typing import Any, Dict

from ...edge.registry import Registry

MODELS = Registry("model preset", ValueError, meta={"family": "", "config": {}, "build": None, "export": None})
MODELS.register("plainnet:bench", "tir.engines.training.models.plainnet:PlainNetConfig",
                help="PlainNet speed reference, 32 ch x 4 blocks (1.7 GMAC at 640x512), seeded-random weights",
                family="plainnet", config={"channels": 32, "blocks": 4},
                build="tir.engines.training.models.plainnet:build_plainnet",
                export="tir.engines.training.models.plainnet:export_plainnet_onnx")
MODELS.register("plainnet:tiny", "tir.engines.training.models.plainnet:PlainNetConfig",
                help="PlainNet for tests, 8 ch x 1 block, seeded-random weights",
                family="plainnet", config={"channels": 8, "blocks": 1},
                build="tir.engines.training.models.plainnet:build_plainnet",
                export="tir.engines.training.models.plainnet:export_plainnet_onnx")
MODELS.register("ecmrnet:paper", "tir.engines.training.models.ecmrnet:ECMRNetConfig",
                help="ECMRNet as published (grouped convs, GroupNorm; ecmrnet.md 1.1): a training preset",
                family="ecmrnet", config={"name": "paper", "family": "paper"})
MODELS.register("ecmrnet:edge", "tir.engines.training.models.ecmrnet:ECMRNetConfig",
                help="the shipped edge network (dense 3x3, ReLU, field head 32): a training preset",
                family="ecmrnet", config={"name": "edge", "field": 32})
MODELS.register("ecmrnet:tiny", "tir.engines.training.models.ecmrnet:ECMRNetConfig",
                help="a tiny edge network for tests: a training preset",
                family="ecmrnet", config={"name": "tiny", "width": 8, "low_width": 16, "blocks": (1, 1, 1),
                                          "stats_hidden": 8, "miner_rank": 2, "miner_hidden": 8})


def model_config(name: str) -> Any:
    """The config of preset ``family:preset`` (ValueError listing the presets)."""
    entry = MODELS.get(name)
    return entry.load()(**entry.config)


def presets(family: str) -> Dict[str, Any]:
    """``preset -> config`` of one family, in registration order (a model file's ``PRESETS``)."""
    return {e.name.split(":", 1)[1]: model_config(e.name) for e in MODELS if e.family == family}


def runnable() -> list:
    """Names of the presets ``tir run``/``tir bench`` can build on the fly (reference networks)."""
    return [e.name for e in MODELS if e.build]
