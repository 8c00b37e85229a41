"""Session 17: JSON files a user or another program hands to tir (a bundle's manifest.json, a
collection's index.json, a degradation spec, the version a watched bundle carries) nested more
deeply than Python's parser recurses ("[[[[…]]]]": a damaged or hostile file) raised a
RecursionError, which no reader caught: a traceback in tir run --model, tir discover, tir learn
and synthetic://?degrade=FILE. Such text is malformed JSON like any other, refused with the
reader's own one-line reason."""
import json
import shutil

import pytest

from tir.edge.jsontext import loads

DEEP = '{"a": ' + "[" * 200000 + "]" * 200000 + "}"


def test_loads_refuses_too_deep_nesting_as_malformed_json():
    with pytest.raises(json.JSONDecodeError, match="nested more deeply"):
        loads(DEEP)
    with pytest.raises(ValueError):
        loads(DEEP.encode())
    assert loads('{"a": [[1]]}') == {"a": [[1]]}


def test_a_deeply_nested_bundle_manifest_is_refused_with_the_reason(tmp_path):
    from tir.engines.bundle import BundleError, default_bundle_path, load_bundle
    from tir.engines.hotswap import manifest_state

    bundle = tmp_path / "b"
    shutil.copytree(default_bundle_path(), bundle)
    (bundle / "manifest.json").write_text(DEEP)
    with pytest.raises(BundleError, match="manifest.json is not valid JSON: nested more deeply"):
        load_bundle(bundle)
    assert manifest_state(bundle)[1] is None   # the watcher reads no version, and raises nothing


def test_a_deeply_nested_collection_index_and_spec_are_refused_with_the_reason(tmp_path):
    from tir.edge.outputs.collect import read_index
    from tir.engines.degrade import DegradationError, load_spec

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "index.json").write_text(DEEP)
    with pytest.raises(ValueError, match="not a readable collection index .*nested more deeply"):
        read_index(tmp_path / "c")
    (tmp_path / "spec.json").write_text(DEEP)
    with pytest.raises(DegradationError, match="not valid JSON .*nested more deeply"):
        load_spec(str(tmp_path / "spec.json"))
