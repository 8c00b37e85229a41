"""Open-world model: expansion, freezing, bit-identical earlier routes, compound mining, export."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from tir.engines.training.continual import CLEAN, OpenWorldModel, RouteModule, parameter_snapshot

torch.set_num_threads(1)   # the test machine is shared; one thread avoids oversubscription


def _train(model, task, steps=3, seed=0):
    torch.manual_seed(seed)
    model.freeze_except(task)
    params = model.trainable_parameters(task)
    opt = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(steps):
        x = torch.rand(2, 1, 16, 16)
        loss = (model.route_forward(x, task) - x.flip(-1)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.freeze_except(None)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return OpenWorldModel("tiny")


def test_new_route_starts_as_identity(model):
    model.add_task("contrast")
    x = torch.rand(1, 1, 16, 24)
    assert torch.allclose(model.route_forward(x, "contrast"), x, atol=1e-6)


def test_earlier_route_bit_identical_after_later_training(model):
    x = torch.rand(2, 1, 16, 24)
    model.add_task("contrast")
    _train(model, "contrast")
    before = model.route_forward(x, "contrast").detach().clone()
    frozen = parameter_snapshot([model.stem, model.recon, model.branches["contrast"],
                                 model.branches[CLEAN]])
    model.add_task("blur")
    _train(model, "blur", seed=1)
    model.add_task("CB", parts=("contrast", "blur"))
    _train(model, "CB", seed=2)
    assert torch.equal(model.route_forward(x, "contrast"), before)
    after = parameter_snapshot([model.stem, model.recon, model.branches["contrast"], model.branches[CLEAN]])
    assert all(torch.equal(a, b) for a, b in zip(frozen, after))
    # the later task really changed its own route
    assert not torch.equal(model.route_forward(x, "blur"), x)


def test_optimiser_sees_only_the_new_task(model):
    model.add_task("contrast")
    model.add_task("blur")
    ids = {id(p) for p in model.trainable_parameters("blur")}
    others = [p for name, mod in [("stem", model.stem), ("recon", model.recon),
                                  ("contrast", model.branches["contrast"])] for p in mod.parameters()]
    assert ids and not ids & {id(p) for p in others}
    model.freeze_except("blur")
    assert all(not p.requires_grad for p in others)
    assert all(p.requires_grad for p in model.trainable_parameters("blur"))


def test_compound_route_uses_part_features_without_training_them(model):
    for t in ("contrast", "blur"):
        model.add_task(t)
        _train(model, t)
    model.add_task("CB", parts=("contrast", "blur"))
    calls = {"contrast": 0, "blur": 0}
    hooks = [model.branches[t].register_forward_hook(
        lambda m, i, o, t=t: calls.__setitem__(t, calls[t] + 1)) for t in calls]
    model.freeze_except("CB")
    model.zero_grad(set_to_none=True)
    x = torch.rand(2, 1, 16, 16)
    model.route_forward(x, "CB").mean().backward()
    for h in hooks:
        h.remove()
    assert calls == {"contrast": 1, "blur": 1}            # each part branch runs once
    for t in ("contrast", "blur"):
        assert all(p.grad is None for p in model.branches[t].parameters())
    assert all(p.grad is None for p in model.stem.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.miners["CB"].parameters())
    # the output depends on the frozen part features
    _train(model, "CB")
    with torch.no_grad():
        out = model.route_forward(x, "CB")
        model.branches["blur"].out.weight.add_(0.5)
        assert not torch.equal(model.route_forward(x, "CB"), out)


def test_expansion_errors(model):
    with pytest.raises(ValueError, match="contrast"):
        model.add_task("CB", parts=("contrast", "blur"))
    model.add_task("contrast")
    with pytest.raises(ValueError, match="already"):
        model.add_task("contrast")
    with pytest.raises(KeyError, match="contrast"):
        model.route_forward(torch.rand(1, 1, 8, 8), "noise")
    with pytest.raises(ValueError, match="multiple of 8"):
        model.route_forward(torch.rand(1, 1, 12, 8), "contrast")


def test_architecture_round_trip(model):
    model.add_task("contrast")
    model.add_task("blur")
    model.add_task("CB", parts=("contrast", "blur"))
    _train(model, "CB")
    clone = OpenWorldModel.from_architecture(model.architecture())
    clone.load_state_dict(model.state_dict())
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(clone.route_forward(x, "CB"), model.route_forward(x, "CB"))


def test_compound_route_exports_to_onnx(tmp_path, model):
    from tir.engines.training.export import export_onnx

    for t in ("contrast", "blur"):
        model.add_task(t)
        _train(model, t)
    model.add_task("CB", parts=("contrast", "blur"))
    _train(model, "CB")
    path = tmp_path / "CB.onnx"
    export_onnx(RouteModule(model, "CB"), path, input_shape=(1, 1, 32, 32))
    x = np.random.default_rng(0).random((1, 1, 24, 40), dtype=np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    want = model.route_forward(torch.from_numpy(x), "CB").detach().numpy()
    assert np.abs(got - want).max() < 1e-4


def test_checkpoint_round_trip_after_pruning_a_compound(model):
    from tir.engines.training.pruning import prune_block

    for t in ("contrast", "blur"):
        model.add_task(t)
    model.add_task("CB", parts=("contrast", "blur"))
    _train(model, "CB")
    prune_block(model.miners["CB"].refine, [0, 1, 2, 3])
    prune_block(model.branches["CB"].res_blocks()[0], [4, 5, 6, 7])
    ckpt = {"architecture": model.architecture(), "state_dict": model.state_dict()}
    clone = OpenWorldModel.from_checkpoint(ckpt)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(clone.route_forward(x, "CB"), model.route_forward(x, "CB"))
    # checkpoints written before miner widths were recorded still load
    for task in ckpt["architecture"]["tasks"]:
        task.pop("miner_mid")
    old = OpenWorldModel.from_checkpoint(ckpt)
    assert old.miners["CB"].refine.mid == 4
