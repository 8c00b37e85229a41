"""Label-free discovery (engines/discover.py, tir discover): the tree, the known-task test,
grouping by proposals, and the whole step on a small collection of virtual-camera frames."""
import json
from pathlib import Path

import numpy as np
import pytest

from tir.engines import discover as D


def blobs(centres, n, noise, seed=0):
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for k, c in enumerate(centres):
        out.append(c + noise * rng.standard_normal((n, len(c))))
        labels += [k] * n
    return D._unit(np.concatenate(out)), np.asarray(labels)


def test_tree_separates_two_degradations_and_keeps_one_whole():
    d = 16
    a, b = np.eye(d)[0], np.eye(d)[1]
    x, labels = blobs([a, b], 30, 0.05)
    nodes = D.build_tree(x, min_size=5, progress=False)
    root = nodes[0]
    assert len(root["children"]) == 2 and root["bic_split"] > 0
    for child in root["children"]:
        members = np.asarray(nodes[child]["members"])
        assert len(set(labels[members])) == 1  # each half one blob
    one = D.build_tree(blobs([a], 60, 0.05)[0], min_size=5, progress=False)
    assert len(one) == 1 and one[0]["bic_split"] is not None and one[0]["bic_split"] <= 0
    assert one[0]["spread"] > 0 and one[0]["radius"] >= one[0]["spread"]


def test_tree_needs_two_frames():
    with pytest.raises(ValueError, match="at least 2"):
        D.build_tree(np.ones((1, 4)))


def test_known_test_uses_the_class_thresholds():
    book = np.eye(3)
    nodes = [{"centre": D._unit(np.array([1.0, 0.3, 0.0]))}, {"centre": D._unit(np.array([1.0, 1.0, 1.0]))}]
    D.known_test(nodes, book, ["noise", "blur", "clean"], [0.9, 0.9, 0.9], margin=0.05)
    assert nodes[0]["status"] == "known" and nodes[0]["nearest"] == "noise"
    assert nodes[1]["status"] == "new" and abs(nodes[1]["similarity"] - 3 ** -0.5) < 1e-3


def test_purity_counts_majority_labels():
    nodes = [{"members": [0, 1, 2, 3], "children": [1, 2]}, {"members": [0, 1], "children": []},
             {"members": [2, 3], "children": []}]
    assert D.purity(nodes, ["a", "a", "b", "a"]) == 0.75
    assert nodes[0]["labels"] == {"a": 3, "b": 1} and nodes[2]["purity"] == 0.5
    assert D.purity(nodes, [None] * 4) is None


def test_proposals_group_by_ops_and_parameters():
    vig = lambda s: [{"op": "vignetting", "strength": [s, s + 0.01], "gamma": [1.4, 1.5]}]  # noqa: E731
    jpeg = [{"op": "jpeg", "quality": [6, 10]}]
    props = [{"steps": vig(0.40)}, {"steps": jpeg}, {"steps": vig(0.42)}, {"steps": vig(0.8)}, {"steps": []}]
    assert sorted(map(sorted, D.group_proposals(props))) == [[0, 2], [1], [3], [4]]


def strict_copy(bundle, dst: Path, threshold: float = 0.995) -> Path:
    """The shipped bundle with every "unknown" threshold raised to ``threshold``, so the
    collection holds the test's unseen degradations whatever the shipped router makes of them
    (this file tests collect/discover/propose; the router's own unknown rate is measured in
    docs/open-world.md)."""
    import copy

    from tir.engines.bundle import copy_bundle, load_bundle, save_manifest

    if not dst.exists():
        copy_bundle(bundle, dst)
        manifest = copy.deepcopy(load_bundle(dst).manifest)
        manifest["router"]["thresholds"] = [threshold] * len(manifest["router"]["tasks"])
        manifest["router"]["threshold"] = threshold
        save_manifest(dst, manifest)
    return dst


def make_collection(folder: Path, degradations, seconds: int = 6):
    """A collection as tir run --collect writes it: virtual-camera frames through the
    Restorer (router on every 8th frame), unknown ones kept with their embeddings."""
    from tir.edge.outputs import open_output
    from tir.edge.pipeline import Pipeline
    from tir.edge.sources.base import open_source
    from tir.engines.bundle import default_bundle_path
    from tir.engines.restorer import Restorer

    bundle = strict_copy(default_bundle_path(), folder.parent / f"{folder.name}-bundle")
    for degradation in degradations:
        source = open_source(f"synthetic://?size=160x120&realtime=0&frames={30 * seconds}&degrade={degradation}"
                             "&degrade_period=2")
        model = Restorer(bundle, threads=1, every=4)
        Pipeline(source, model, [open_output(f"collect://{folder}?rate=1000")]).run()
        model.close()
    return bundle


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    from tir.engines.bundle import default_bundle_path

    if default_bundle_path() is None:
        pytest.skip("no shipped bundle to route with")
    folder = tmp_path_factory.mktemp("collect")
    spec = Path(__file__).resolve().parents[1] / "tools" / "openworld" / "vignetting_stripes.json"
    bundle = make_collection(folder, [str(spec), "jpeg"])
    return folder, bundle


def test_discover_separates_and_proposes(collection, tmp_path):
    folder, bundle = collection
    index = json.loads((folder / "index.json").read_text())
    assert index["counts"]["unknown"] >= 0.8 * index["counts"]["seen"]
    report = D.discover(folder, bundle, tmp_path / "rep", min_size=4, fit_frames=4, progress=False)
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["frames"] == report["frames"] == len(index["entries"])
    assert (tmp_path / "rep" / "tree.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "exemplars.png").stat().st_size > 1000
    groups = {next(iter(g["labels"])): g for g in report["groups"]}
    vs = next(g for name, g in groups.items() if name.endswith("vignetting_stripes.json"))
    assert vs["purity"] == 1.0 and groups["jpeg"]["purity"] == 1.0
    steps = {s["op"]: s for s in vs["proposal"]["steps"]}
    assert list(steps) == ["vignetting", "stripes"] and vs["proposal"]["fits"]
    assert abs(np.mean(steps["vignetting"]["strength"]) - 0.4) <= 0.1
    assert abs(np.mean(steps["stripes"]["offset_std"]) - 6.0) <= 1.5
    jpeg = groups["jpeg"]["proposal"]["steps"]
    assert [s["op"] for s in jpeg] == ["jpeg"] and 5 <= jpeg[0]["quality"][0] <= jpeg[0]["quality"][1] <= 15
    spec = json.loads((tmp_path / "rep" / vs["proposal"]["file"]).read_text())
    from tir.engines.degrade import DegradationSpec

    DegradationSpec.from_json(spec)  # tir learn --spec can read it


def test_a_proposal_that_does_not_fit_writes_no_spec(collection, tmp_path, monkeypatch):
    folder, bundle = collection
    monkeypatch.setattr(D, "MIN_FIT_RADIUS", -1.0)
    monkeypatch.setattr(D, "synthesize", lambda spec, clean, **kw: clean)  # "the ops" reproduce nothing
    report = D.discover(folder, bundle, tmp_path / "rep", min_size=4, fit_frames=2, progress=False, plots=False)
    p = report["proposals"][0]
    assert not p["fits"] and p["residual"] > 0 and "no composition of known ops fits" in p["reason"]
    doc = json.loads((tmp_path / "rep" / p["file"]).read_text())
    assert "steps" not in doc and doc["fit"]["fits"] is False and doc["closest_steps"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    from tir.tools.cli import main

    assert main(["discover", "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no index.json" in err[0] and "tir run --collect" in err[0]


def test_an_out_that_cannot_be_written_is_refused_first_and_a_full_disk_is_one_line(collection, tmp_path, capsys,
                                                                                  monkeypatch):
    # An --out under a file was a NotADirectoryError traceback after loading the bundle; a full
    # disk a traceback after the whole clustering, with a cut report.json left behind.
    import errno

    from tir.tools.cli import main

    folder, bundle = collection
    (tmp_path / "afile").write_text("x")
    assert main(["discover", "--from", str(folder), "--model", str(bundle), "--out", str(tmp_path / "afile" / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0] and "nothing was clustered" in err[0]
    with pytest.raises(SystemExit):
        main(["discover", "--from", str(folder), "--known-margin", "nan"])
    assert "argument --known-margin: nan: give a cosine margin >= 0 and <= 2" in capsys.readouterr().err

    from tir.edge.outputs import collect as collect_module

    def full(path, data):  # the report's temporary file is cut where the disk filled up
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(collect_module, "_write_new_file", full)
    assert main(["discover", "--from", str(folder), "--model", str(bundle), "--out", str(tmp_path / "rep"),
                 "--min-size", "4", "--fit-frames", "2"]) == 3
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tir discover")]
    assert len(err) == 1 and "not written (No space left on device)" in err[0]   # besides the progress bars
    assert not [p for p in (tmp_path / "rep").iterdir() if p.suffix in (".json", ".tmp")]


def test_a_missing_or_file_from_is_named_for_what_it_is(tmp_path, capsys):
    # tir discover --from /missing said "/missing has no index.json", as if the folder were there
    from tir.tools.cli import main

    (tmp_path / "unknown").mkdir()
    assert main(["discover", "--from", str(tmp_path / "unknwn")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tir discover: error: the collection folder {tmp_path / 'unknwn'} does not exist; "
                          f"did you mean {tmp_path / 'unknown'}?") and "index.json" not in err
    assert main(["discover", "--from", str(tmp_path / "nothing" / "here")]) == 2
    assert "does not exist (folder " in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["discover", "--from", str(tmp_path / "file")]) == 2
    assert f"{tmp_path / 'file'} is a file, not a collection folder" in capsys.readouterr().err
    assert main(["discover", "--from", str(tmp_path / "unknown")]) == 2   # a folder without an index
    assert "has no index.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "unknown"]   # nothing made
