"""engines/cache.py: engine keys, plan + sidecar storage, refusal with the rebuild command."""
import json

import pytest

from tir.engines.cache import (EngineCache, EngineCacheError, EngineKey, build_command, default_cache_dir,
                               jetpack_major, parse_l4t_release, profile_for_sizes)

PLATFORM = {"trt_version": "8.5.2.2", "gpu_name": "Orin", "compute_capability": "8.7", "l4t_release": "35.4.1"}


def _key(**changes):
    base = dict(onnx_sha256="ab" * 32, precision="int8-qdq", profile=profile_for_sizes([(640, 512)], multiple=4),
                calib_sha256="cd" * 32, flags=("fp16",), **PLATFORM)
    base.update(changes)
    return EngineKey(**base)


def test_default_dir_and_env_override(monkeypatch, tmp_path):
    monkeypatch.delenv("TIR_ENGINE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert str(default_cache_dir()).endswith(".cache/tir-edge/engines")
    monkeypatch.setenv("TIR_ENGINE_CACHE", str(tmp_path / "plans"))
    assert default_cache_dir() == tmp_path / "plans"
    assert EngineCache().root == tmp_path / "plans"


def test_key_digest_depends_on_every_field():
    base = _key()
    assert base.digest() == _key().digest()
    for change in (dict(onnx_sha256="00" * 32), dict(trt_version="10.3.0"), dict(gpu_name="Xavier"),
                   dict(compute_capability="7.2"), dict(l4t_release="36.4.0"), dict(precision="fp16"),
                   dict(profile=profile_for_sizes([(320, 256)])), dict(calib_sha256=None), dict(flags=())):
        assert _key(**change).digest() != base.digest(), change
    assert EngineKey.from_dict(json.loads(json.dumps(base.to_dict()))) == base


def test_store_lookup_and_sidecar(tmp_path):
    cache = EngineCache(tmp_path)
    key = _key()
    cmd = build_command("bundles/edge", "int8", [(640, 512)], route="noise")
    path = cache.store(key, b"PLAN", "noise", {"rebuild_command": cmd})
    assert path.name.startswith("noise-int8-qdq-") and path.suffix == ".plan"
    side = json.loads(cache.sidecar(path).read_text())
    assert side["key"]["gpu_name"] == "Orin" and side["rebuild_command"] == cmd
    entry = cache.lookup(key, "noise")
    assert entry is not None and entry.plan == path and entry.key == key
    assert cache.lookup(_key(precision="fp16"), "noise") is None
    assert [e.plan for e in cache.entries()] == [path]


def test_mismatched_platform_is_refused_with_rebuild_command(tmp_path):
    cache = EngineCache(tmp_path)
    cmd = build_command("/opt/bundle", "int8", [(640, 512)], route="noise")
    entry = cache.read_entry(cache.store(_key(), b"PLAN", "noise", {"rebuild_command": cmd}))
    cache.check_platform(entry, PLATFORM)  # same machine: fine
    other = dict(PLATFORM, trt_version="10.3.0", l4t_release="36.4.0")
    with pytest.raises(EngineCacheError) as err:
        cache.check_platform(entry, other)
    msg = str(err.value)
    assert "trt_version: plan built for '8.5.2.2', this machine has '10.3.0'" in msg
    assert "l4t_release" in msg and "gpu_name" not in msg
    assert msg.endswith("tir build --bundle /opt/bundle --precision int8 --size 640x512 --route noise")
    with pytest.raises(EngineCacheError, match="onnx_sha256"):
        cache.check_key(entry, _key(onnx_sha256="ff" * 32))


def test_tampered_or_orphan_plans(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(_key(), b"PLAN", "noise")
    path.write_bytes(b"OTHER")
    with pytest.raises(EngineCacheError, match="tampered or corrupt, sha256 is"):
        cache.read_entry(path)
    orphan = tmp_path / "x.plan"
    orphan.write_bytes(b"P")
    with pytest.raises(EngineCacheError, match="no sidecar"):
        cache.read_entry(orphan)
    with pytest.raises(EngineCacheError, match="tir build"):
        cache.read_entry(tmp_path / "missing.plan")


def test_l4t_parsing_and_profiles():
    line = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1"
    assert parse_l4t_release(line) == "35.4.1"
    assert parse_l4t_release("garbage") is None
    assert jetpack_major("35.4.1") == 5 and jetpack_major("36.4.0") == 6 and jetpack_major(None) is None
    (name, lo, opt, hi), = profile_for_sizes([(640, 512), (320, 250)], multiple=4)
    assert name == "input" and opt == (1, 1, 512, 640) and lo == (1, 1, 252, 320) and hi == (1, 1, 512, 640)


def test_resolve_plan_for_a_route_onnx(tmp_path):
    from tir.engines.cache import resolve_plan, sha256_file

    route = tmp_path / "route-noise.onnx"
    route.write_bytes(b"fp32 onnx")
    qdq = tmp_path / "noise.int8-trt.onnx"
    qdq.write_bytes(b"qdq onnx")
    cache = EngineCache(tmp_path / "plans")
    with pytest.raises(EngineCacheError, match="tir build --bundle .* --precision fp16 --size 640x512 --route noise"):
        resolve_plan(route, cache=cache, platform=PLATFORM)
    fp16 = cache.store(_key(onnx_sha256=sha256_file(route), precision="fp16"), b"A", "noise")
    int8 = cache.store(_key(onnx_sha256=sha256_file(qdq), precision="int8-qdq"), b"B", "noise",
                       {"source_onnx_sha256": sha256_file(route)})
    assert resolve_plan(route, cache=cache, platform=PLATFORM).plan == int8  # INT8 preferred
    assert resolve_plan(route, precision="fp16", cache=cache, platform=PLATFORM).plan == fp16
    with pytest.raises(EngineCacheError, match="no TensorRT plan"):
        resolve_plan(route, cache=cache, platform=dict(PLATFORM, gpu_name="Xavier"))


def test_plan_integrity_is_refused_with_the_reason_not_skipped(tmp_path):
    """A tampered plan, or a sidecar without plan_sha256, is an error naming why (issue 10 item 14)."""
    import json

    from tir.engines.cache import resolve_plan, sha256_file

    route = tmp_path / "route-noise.onnx"
    route.write_bytes(b"fp32 onnx")
    cache = EngineCache(tmp_path / "plans")
    plan = cache.store(_key(onnx_sha256=sha256_file(route), precision="fp16"), b"GOOD", "noise",
                       {"rebuild_command": "tir build --bundle B --precision fp16 --route noise"})
    assert resolve_plan(route, cache=cache, platform=PLATFORM).plan == plan
    plan.write_bytes(b"EVIL")
    with pytest.raises(EngineCacheError) as err:
        resolve_plan(route, cache=cache, platform=PLATFORM)
    msg = str(err.value)
    assert msg.startswith(f"refusing TensorRT plan {plan}: tampered or corrupt, sha256 is "
                          f"{sha256_file(plan)[:12]}")
    assert "no TensorRT plan" not in msg and "tir build --bundle B --precision fp16 --route noise" in msg
    assert cache.entries() == [] and [r[0] for r in cache.scan()[1]] == [plan]

    plan.write_bytes(b"GOOD")
    side = cache.sidecar(plan)
    doc = json.loads(side.read_text())
    del doc["plan_sha256"]
    side.write_text(json.dumps(doc))
    with pytest.raises(EngineCacheError, match="has no valid plan_sha256, so its integrity cannot be checked"):
        resolve_plan(route, cache=cache, platform=PLATFORM)
    with pytest.raises(EngineCacheError, match="no valid plan_sha256"):
        cache.lookup(_key(onnx_sha256=sha256_file(route), precision="fp16"), "noise")
    doc["plan_sha256"] = 12
    side.write_text(json.dumps(doc))
    with pytest.raises(EngineCacheError, match="no valid plan_sha256"):
        cache.read_entry(plan)

    # a plan of another route that fails its check does not block this one
    other = tmp_path / "route-blur.onnx"
    other.write_bytes(b"blur onnx")
    good = cache.store(_key(onnx_sha256=sha256_file(other), precision="fp16"), b"B", "blur")
    assert resolve_plan(other, cache=cache, platform=PLATFORM).plan == good
    # an orphan plan named for this route (no sidecar) is refused, not skipped
    side.unlink()
    with pytest.raises(EngineCacheError, match="has no sidecar"):
        resolve_plan(route, cache=cache, platform=PLATFORM)
