"""One degradation catalogue (issue 12 item 5): compound specs compose their parts, the task
lists derive from the specs, every op has a checked parameter dataclass, and the outputs stay
bit-identical to the JSON steps the shipped bundle and the eval numbers were made with."""
import dataclasses
import json

import numpy as np
import pytest

from tir.engines import degrade as D

# The compound specs' steps as the JSON files held them before they were composed from their
# parts (copied from engines/specs/*.json at 7f2fb70): the composed specs must give these steps
# and exactly the same frames.
FROZEN_STEPS = {
    'CB': [
        {'op': 'contrast', 'contrast': [-0.8, -0.4], 'brightness': [0.1, 0.2], 'pivot': 'zero'},
        {'op': 'blur', 'kernel': [7, 17], 'sigma': [1.0, 2.0]},
    ],
    'CN': [
        {'op': 'contrast', 'contrast': [-0.8, -0.4], 'brightness': [0.1, 0.2], 'pivot': 'zero'},
        {'op': 'nonuniformity', 'delta': [15, 55], 'inverted_p': 0.5},
        {'op': 'stripes', 'gain_std': [0.03, 0.07], 'offset_std': [0.0, 3.0], 'column_p': 0.5},
        {'op': 'gaussian_noise', 'sigma': [5.0, 15.0]},
    ],
    'BN': [
        {'op': 'blur', 'kernel': [7, 17], 'sigma': [1.0, 2.0]},
        {'op': 'nonuniformity', 'delta': [15, 55], 'inverted_p': 0.5},
        {'op': 'stripes', 'gain_std': [0.03, 0.07], 'offset_std': [0.0, 3.0], 'column_p': 0.5},
        {'op': 'gaussian_noise', 'sigma': [5.0, 15.0]},
    ],
    'CBN': [
        {'op': 'contrast', 'contrast': [-0.8, -0.4], 'brightness': [0.1, 0.2], 'pivot': 'zero'},
        {'op': 'blur', 'kernel': [7, 17], 'sigma': [1.0, 2.0]},
        {'op': 'nonuniformity', 'delta': [15, 55], 'inverted_p': 0.5},
        {'op': 'stripes', 'gain_std': [0.03, 0.07], 'offset_std': [0.0, 3.0], 'column_p': 0.5},
        {'op': 'gaussian_noise', 'sigma': [5.0, 15.0]},
    ],
    'BN_sensor': [
        {'op': 'blur', 'kernel': [7, 17], 'sigma': [1.0, 2.0]},
        {'op': 'nonuniformity', 'delta': [15, 55], 'inverted_p': 0.5},
        {'op': 'sensor_fpn'},
        {'op': 'gaussian_noise', 'sigma': [0.5, 3.0]},
        {'op': 'pixel_dropout', 'dead_p': 0.0005, 'hot_p': 0.0002},
    ],
    'CN_sensor': [
        {'op': 'contrast', 'contrast': [-0.8, -0.4], 'brightness': [0.1, 0.2], 'pivot': 'zero'},
        {'op': 'nonuniformity', 'delta': [15, 55], 'inverted_p': 0.5},
        {'op': 'sensor_fpn'},
        {'op': 'gaussian_noise', 'sigma': [0.5, 3.0]},
        {'op': 'pixel_dropout', 'dead_p': 0.0005, 'hot_p': 0.0002},
    ],
    'CBN_sensor': [
        {'op': 'contrast', 'contrast': [-0.8, -0.4], 'brightness': [0.1, 0.2], 'pivot': 'zero'},
        {'op': 'blur', 'kernel': [7, 17], 'sigma': [1.0, 2.0]},
        {'op': 'nonuniformity', 'delta': [15, 55], 'inverted_p': 0.5},
        {'op': 'sensor_fpn'},
        {'op': 'gaussian_noise', 'sigma': [0.5, 3.0]},
        {'op': 'pixel_dropout', 'dead_p': 0.0005, 'hot_p': 0.0002},
    ],
}


def _scene(n=3, h=40, w=56, seed=11):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 0.5, w, dtype=np.float32)
    return np.clip(rng.random((n, h, w), dtype=np.float32) * 0.5 + ramp, 0.0, 1.0)


@pytest.mark.parametrize("name", list(FROZEN_STEPS))
def test_composed_compound_specs_give_the_same_frames_as_the_old_json_steps(name):
    composed = D.load_spec(name)
    assert composed.steps == FROZEN_STEPS[name]
    old = D.DegradationSpec(name=name, steps=[dict(s) for s in FROZEN_STEPS[name]])
    clean = _scene()
    for seed in (0, 1, 5):
        new_frames = D.degrade(clean, composed, seed)
        old_frames = D.degrade(clean, old, seed)
        assert new_frames.dtype == np.float32
        np.testing.assert_array_equal(new_frames.view(np.uint32), old_frames.view(np.uint32))
    np.testing.assert_array_equal(D.make_eval_set(clean, composed, seed=3), D.make_eval_set(clean, old, seed=3))


def test_task_lists_derive_from_the_specs():
    assert D.TASKS == ("contrast", "blur", "noise", "CB", "CN", "BN", "CBN")
    assert D.SINGLE_TASKS == ("contrast", "blur", "noise")
    assert D.COMPOUND_PARTS == {"CB": ("contrast", "blur"), "CN": ("contrast", "noise"), "BN": ("blur", "noise"),
                                "CBN": ("contrast", "blur", "noise")}
    for task, parts in D.COMPOUND_PARTS.items():
        spec = D.load_spec(task)
        assert spec.parts == parts and spec.task_order == D.TASKS.index(task) + 1
        assert spec.steps == [s for p in parts for s in D.load_spec(p).steps]
    assert D.load_spec("CBN_sensor").parts == ("contrast", "blur", "noise_sensor")
    assert D.load_spec("jpeg").task_order is None and "jpeg" not in D.TASKS
    from tir.engines.router import SENSOR_VARIANTS

    # the camera's AGC after the sensor noise: contrast-free classes only (it undoes a contrast loss)
    assert SENSOR_VARIANTS == {"noise": ["noise", "noise_sensor", "noise_sensor_agc"], "CN": ["CN", "CN_sensor"],
                               "BN": ["BN", "BN_sensor", "BN_sensor_agc"], "CBN": ["CBN", "CBN_sensor"]}


def test_the_shipped_bundle_specs_are_the_catalogue_and_old_manifests_still_load():
    from tir.engines.bundle import default_bundle_path

    bundle = default_bundle_path()
    if bundle is None:
        pytest.skip("no bundle installed")
    manifest = json.loads((bundle / "manifest.json").read_text())
    stored = {t["name"]: t["spec"] for t in manifest["tasks"] if t.get("spec")}
    assert set(D.TASKS) <= set(stored)
    for name, spec_json in stored.items():
        assert "parts" not in spec_json  # written before specs named their parts
        spec = D.DegradationSpec.from_json(spec_json)
        if name in D.list_specs():
            assert spec.steps == D.load_spec(name).steps, name


def test_to_json_is_self_contained_and_round_trips():
    spec = D.load_spec("CN")
    data = json.loads(spec.to_json())
    assert data["parts"] == ["contrast", "noise"] and data["task_order"] == 5 and data["steps"] == spec.steps
    again = D.DegradationSpec.from_json(data)
    assert again == spec
    clean = _scene(n=1)
    np.testing.assert_array_equal(D.degrade(clean, again, 4), D.degrade(clean, spec, 4))


def test_user_specs_compose_parts_by_name_or_path_and_cycles_are_refused(tmp_path):
    part = tmp_path / "shade.json"
    part.write_text(json.dumps({"name": "shade", "steps": [{"op": "vignetting", "strength": [0.1, 0.2]}]}))
    combo = tmp_path / "combo.json"
    combo.write_text(json.dumps({"name": "combo", "parts": ["blur", str(part)]}))
    spec = D.load_spec(combo)
    assert [s["op"] for s in spec.steps] == ["blur", "vignetting"] and spec.task_order is None
    loop = tmp_path / "loop.json"
    loop.write_text(json.dumps({"name": "loop", "parts": ["noise", str(loop)]}))
    with pytest.raises(D.DegradationError, match="parts form a cycle"):
        D.load_spec(loop)
    with pytest.raises(D.DegradationError, match="no degradation 'fog'"):
        D.DegradationSpec.from_json({"name": "x", "parts": ["fog"]})
    with pytest.raises(D.DegradationError, match="'parts' must be a list"):
        D.DegradationSpec.from_json({"name": "x", "parts": "blur"})


@pytest.mark.parametrize("step, message", [
    ({"op": "blur", "sigma": "big"}, r"spec 'bad' step 0 \(blur\): option sigma must be \[lo, hi\] numbers"),
    ({"op": "blur", "sigma": [2.0, 1.0]}, r"step 0 \(blur\): option sigma must be .*hi < lo"),
    ({"op": "gaussian_noise", "sigma": [-1, 3]}, r"\(gaussian_noise\): option sigma must lie within \[0, inf\]"),
    ({"op": "stripes", "column_p": 1.5}, r"\(stripes\): option column_p must be a probability in \[0, 1\]"),
    ({"op": "contrast", "pivot": "median"}, r"\(contrast\): option pivot must be one of zero, mean"),
    ({"op": "jpeg", "quality": [5, 150]}, r"\(jpeg\): option quality must lie within \[0, 100\]"),
    ({"op": "blur", "p": 2}, r"step 0 \(blur\): p must be a probability"),
    ({"op": "blur", "sigmaa": [1, 2]}, r"step 0 \(blur\): unknown keys \['sigmaa'\]; allowed: \['kernel', 'p', 'sigma'\]"),
    ({"op": "fog"}, r"step 0: unknown op 'fog'; known ops: contrast, blur"),
])
def test_bad_op_parameters_name_the_spec_step_op_and_parameter(step, message):
    with pytest.raises(D.DegradationError, match=message):
        D.DegradationSpec(name="bad", steps=[step])


def test_every_op_has_a_parameter_dataclass_whose_defaults_are_accepted():
    assert set(D.OPS.names()) == set(D.OP_KEYS)
    for entry in D.OPS:
        params = entry.option_type
        assert dataclasses.is_dataclass(params) and entry.help
        assert {o.name for o in entry.option_list()} == D.OP_KEYS[entry.name]
        spec = D.DegradationSpec(name="defaults", steps=[{"op": entry.name}])
        out = D.degrade(_scene(n=1)[0], spec, 0)
        assert out.shape == (40, 56) and 0.0 <= out.min() and out.max() <= 1.0


@dataclasses.dataclass(frozen=True)
class InvertParams:
    amount: tuple = D.range_option((1.0, 1.0), "blend towards the negative", 0.0, 1.0)


def test_add_a_degradation_op_in_one_place_and_use_it_end_to_end(tmp_path):
    """docs/architecture.md, "add a degradation op": one function + its parameter dataclass."""

    @D.register_op("toy_invert", InvertParams, help="blend each frame towards its negative (a test op)")
    def toy_invert(x, params, rng):
        a = D._uniform(rng, params.amount, x.shape[0])[:, None, None]
        return x * (1 - a) + (1 - x) * a

    try:
        path = tmp_path / "toy.json"
        path.write_text(json.dumps({"name": "toy", "parts": ["contrast"],
                                    "description": "toy"}))
        spec_file = tmp_path / "inv.json"
        spec_file.write_text(json.dumps({"name": "inv", "steps": [{"op": "toy_invert", "amount": [1, 1]}]}))
        combo = D.DegradationSpec.from_json({"name": "toy+inv", "parts": [str(path), str(spec_file)]})
        clean = _scene(n=1)[0]
        expected = 1.0 - D.degrade(clean, "contrast", np.random.default_rng(2))
        np.testing.assert_allclose(D.degrade(clean, combo, np.random.default_rng(2)), expected, atol=1e-6)
        with pytest.raises(D.DegradationError, match=r"\(toy_invert\): option amount must lie within \[0, 1\]"):
            D.DegradationSpec(name="x", steps=[{"op": "toy_invert", "amount": 3}])
        from tir.edge.sources.base import open_source

        src = open_source(f"synthetic://?size=160x120&realtime=0&frames=1&degrade={spec_file}")
        frame = src.read()
        assert frame.meta["degradation"] == str(spec_file) and "degrade_range" in frame.meta
        src.close()
    finally:
        D.OPS.unregister("toy_invert")
