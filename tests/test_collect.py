"""The open-world collector (collect://, tir run --collect): ring limits, index, lossless counts,
pipeline wiring, the page's thumbnails."""
import http.client
import json
import time

import cv2
import numpy as np
import pytest

from tir.edge.frame import Frame
from tir.edge.outputs import OutputError, open_output
from tir.edge.outputs.collect import Collector, load_frame, read_index
from tir.edge.pipeline.stats import CollectStats, StatsSnapshot
from tir.edge.uri import parse_uri


def unknown_frame(seq, unknown=True, value=None, shape=(24, 32)):
    raw = np.full(shape, 1000 + seq if value is None else value, np.uint16)
    raw[0, 0] = 7  # not flat: the PNG must keep every count
    verdict = {"task": "unknown" if unknown else "noise", "nearest": "noise", "similarity": 0.1,
               "confidence": 0.4, "unknown": unknown, "embedding": np.arange(4, dtype=np.float32) * seq}
    return Frame(raw=raw, seq=seq, t_capture=0.0, meta={"router": verdict, "bits": 14, "degradation": "vs",
                                                     "degrade_range": [900.0, 3000.0]})


def collector(tmp_path, **options):
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return open_output(f"collect://{tmp_path}/c" + (f"?{query}" if query else "")).start()


def test_only_unknown_verdicts_are_kept_with_counts_and_embedding(tmp_path):
    col = collector(tmp_path, rate=1000)
    col.write(unknown_frame(1))
    col.write(unknown_frame(2, unknown=False))
    col.write(Frame(raw=np.zeros((4, 4), np.uint16), seq=3, t_capture=0.0, meta={}))  # router did not run
    col.close()
    index = read_index(tmp_path / "c")
    assert [e["seq"] for e in index["entries"]] == [1]
    assert index["counts"]["seen"] == 2 and index["counts"]["unknown"] == 1 and index["counts"]["kept"] == 1
    entry = index["entries"][0]
    assert entry["embedding"] == [0.0, 1.0, 2.0, 3.0]
    assert entry["label"] == "vs" and entry["op_range"] == [900.0, 3000.0] and entry["nearest"] == "noise"
    np.testing.assert_array_equal(load_frame(tmp_path / "c", entry), unknown_frame(1).raw)


def test_ring_drops_oldest_beyond_max_frames_and_files_go(tmp_path):
    col = collector(tmp_path, rate=1000, max_frames=3)
    for seq in range(1, 6):
        col.write(unknown_frame(seq))
        time.sleep(0.01)
    col.close()
    index = read_index(tmp_path / "c")
    assert [e["seq"] for e in index["entries"]] == [3, 4, 5]
    assert index["counts"]["evicted"] == 2
    assert sorted(p.name for p in (tmp_path / "c" / "frames").iterdir()) == [
        f"{e['id']:08d}.png" for e in index["entries"]]


def test_ring_respects_max_mb(tmp_path):
    rng = np.random.default_rng(0)
    col = collector(tmp_path, rate=1000, max_mb=0.05)  # ~50 kB: a noisy 128x160 PNG is ~40 kB
    for seq in range(4):
        f = unknown_frame(seq, shape=(128, 160))
        f.raw[:] = rng.integers(0, 16384, f.raw.shape)
        col.write(f)
        time.sleep(0.01)
    col.close()
    index = read_index(tmp_path / "c")
    assert sum(e["bytes"] for e in index["entries"]) <= 50_000
    assert len(index["entries"]) >= 1 and index["counts"]["evicted"] == 4 - len(index["entries"])


def test_rate_limit_counts_what_it_refuses(tmp_path):
    col = collector(tmp_path, rate=0.5)  # one frame per 2 s
    for seq in range(5):
        col.write(unknown_frame(seq))
    col.close()
    index = read_index(tmp_path / "c")
    assert index["counts"]["kept"] == 1 and index["counts"]["rate_limited"] == 4
    assert index["counts"]["unknown"] == 5


def test_a_second_run_continues_the_index(tmp_path):
    for seq in (1, 2):
        col = collector(tmp_path, rate=1000)
        col.write(unknown_frame(seq))
        col.close()
    index = read_index(tmp_path / "c")
    assert [e["id"] for e in index["entries"]] == [0, 1]
    assert index["counts"]["kept"] == 2


def test_bad_options_and_foreign_index_are_one_clear_error(tmp_path):
    with pytest.raises(OutputError, match="rate"):
        open_output(f"collect://{tmp_path}/c?rate=0")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "index.json").write_text('{"something": "else"}')
    with pytest.raises(OutputError, match="not a tir collection index"):
        open_output(f"collect://{tmp_path}/d").start()


@pytest.mark.parametrize("entry", [
    {"id": 0, "file": "../victim.txt", "bytes": 10}, {"id": 0, "file": "/tmp/victim.txt"},
    {"id": 0, "file": "frames/../../victim.txt"}, {"id": "x", "file": "frames/00000000.png"},
    {"id": 0, "file": "frames/00000000.png", "bytes": -1}, "frames/00000000.png",
])
def test_a_tampered_index_entry_is_refused_before_eviction_deletes_its_file(tmp_path, entry):
    """An index whose entry named "../victim.txt" made the ring delete that file on its first
    eviction (and tir discover read it); an entry the collector did not write is refused."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "c"
    (folder / "frames").mkdir(parents=True)
    (folder / "index.json").write_text(json.dumps({"format": 1, "entries": [entry], "counts": {}, "next_id": 1}))
    with pytest.raises(ValueError, match="index.json: entry"):
        read_index(folder)
    with pytest.raises(OutputError, match="not an index this collector wrote"):
        collector(tmp_path, rate=1000, max_frames=1)
    if isinstance(entry, dict):
        with pytest.raises(ValueError, match="entry"):
            load_frame(folder, entry)
    assert victim.read_text() == "precious"


def test_stats_and_thumbnails(tmp_path):
    col = collector(tmp_path, rate=1000)
    col.write(unknown_frame(1))
    col.close()
    stats = col.collect_stats()
    assert stats["frames"] == 1 and stats["thumbs"] == [0] and stats["kept"] == 1
    thumb = cv2.imdecode(np.frombuffer(col.thumbnail(0), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert thumb.shape == (24, 32)
    assert col.thumbnail(99) is None


class FakeRestorer:
    """Restorer-like: routes every 2nd frame, calls frames with odd seq parity unknown."""

    name = "fake"
    route = "passthrough"

    def __init__(self):
        self.decisions = 0
        self.frames = 0
        self.last_decision = None

    def infer(self, batch, meta=None):
        if self.frames % 2 == 0:
            self.decisions += 1
            unknown = (self.frames // 2) % 2 == 0
            self.last_decision = {"task": "unknown" if unknown else "clean", "nearest": "clean",
                                  "similarity": 0.2, "confidence": 0.9, "unknown": unknown,
                                  "embedding": np.ones(3, np.float32)}
        self.frames += 1
        return batch.copy()


def test_pipeline_hands_router_verdicts_to_the_collector(tmp_path):
    from tir.edge.pipeline import Pipeline
    from tir.edge.sources.base import open_source

    source = open_source("synthetic://?size=160x120&realtime=0&frames=16&degrade=jpeg")
    col = open_output(f"collect://{tmp_path}/c?rate=1000")
    snap = Pipeline(source, FakeRestorer(), [col], display="auto").run()
    index = read_index(tmp_path / "c")
    # router ran on frames 0, 2, ..., 14 (8 verdicts), unknown on 0, 4, 8, 12
    assert index["counts"]["seen"] == 8 and index["counts"]["unknown"] == 4
    assert [e["seq"] for e in index["entries"]] == [0, 4, 8, 12]
    assert snap["collect"]["frames"] == 4 and snap["collect"]["stats_error"] is None  # the schema has every key
    assert all(e["label"] == "jpeg" and len(e["op_range"]) == 2 for e in index["entries"])


def test_restorer_exposes_verdict_with_embedding():
    from tir.engines.bundle import default_bundle_path
    from tir.engines.restorer import Restorer

    path = default_bundle_path()
    if path is None:
        pytest.skip("no shipped bundle")
    r = Restorer(path, every=1, threads=1)
    # random 8×8-pixel cells: a frame with structure (per-pixel white noise holds no scene and is
    # not routed, engines/restorer.py scene_free)
    x = np.random.default_rng(0).random((1, 1, 16, 20), dtype=np.float32).repeat(8, 2).repeat(8, 3)
    r.infer(x)
    d = r.last_decision
    assert r.decisions == 1 and d["embedding"].shape == (len(r.router_info["codebook"][0]),)
    assert abs(float(np.linalg.norm(d["embedding"])) - 1.0) < 1e-3
    assert d["task"] == r.status()["decision"]


def test_page_serves_collected_thumbnails(tmp_path):
    col = collector(tmp_path, rate=1000)
    col.write(unknown_frame(1))
    col.close()
    http_out = open_output("http://127.0.0.1:0").start()
    try:
        http_out.collector = col
        http_out.attach(lambda: StatsSnapshot(collect=CollectStats(**col.collect_stats())))
        conn = http.client.HTTPConnection("127.0.0.1", http_out.port, timeout=5)
        conn.request("GET", "/collect/0.jpg")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "image/jpeg"
        assert resp.read()[:2] == b"\xff\xd8"
        conn.request("GET", "/collect/5.jpg")
        resp = conn.getresponse()
        assert resp.status == 404 and b"last thumbnails" in resp.read()
        conn.request("GET", "/stats.json")
        assert json.loads(conn.getresponse().read())["collect"]["thumbs"] == [0]
        conn.close()
    finally:
        http_out.close()


@pytest.mark.faults
def test_a_full_disk_while_collecting_is_said_on_the_status_line_and_leaves_no_cut_file(tmp_path, monkeypatch):
    """Session 17: ``tir run --collect DIR`` on a full disk counted ``write_errors`` in index.json
    only: the status line went on saying ``collected 1 (unknown 3)``, the page showed no error, and
    every failed write left a cut PNG in frames/ that no index entry names (never evicted)."""
    import errno

    from tir.edge.outputs import collect as collect_module
    from tir.tools.run import status_line

    col = collector(tmp_path, rate=1000)
    col.write(unknown_frame(1))
    time.sleep(0.2)
    real = collect_module._write_new_file

    def full(path, data):
        if path.suffix != ".png":
            return real(path, data)
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])  # what fitted before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(collect_module, "_write_new_file", full)
    for seq in (2, 3):
        col.write(unknown_frame(seq))
        time.sleep(0.2)
    monkeypatch.setattr(collect_module, "_write_new_file", real)
    stats = col.collect_stats()
    col.close()
    assert stats["write_errors"] == 2 and stats["frames"] == 1
    assert "No space left on device" in stats["last_error"]
    assert "collect write errors 2 (last: " in status_line({"collect": stats, "connected": True})
    assert "No space left on device" in CollectStats(**stats).last_error
    index = read_index(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c" / "frames").iterdir()) == [
        f"{e['id']:08d}.png" for e in index["entries"]]


@pytest.mark.parametrize("embedding", [[float("nan"), 0.5], [float("inf"), 0.5], ["a", 0.5], [[1.0], 0.5], [True, 0.5],
                                       "0.5,0.5", {"x": 1}])
def test_an_index_entry_with_an_embedding_that_is_not_finite_numbers_is_refused(tmp_path, embedding):
    """Session 17: one entry of index.json whose embedding held a NaN (a damaged or hand-edited
    index) went into tir discover's clustering: exit 0, the whole tree's spread, radius and
    similarity NaN, and a report.json with bare NaN (not JSON); text gave "could not convert
    string to float: 'a'" naming no file. An embedding is null or a list of finite numbers."""
    folder = tmp_path / "c"
    (folder / "frames").mkdir(parents=True)
    good = {"id": 0, "file": "frames/00000000.png", "bytes": 10, "embedding": [0.6, 0.8]}
    bad = {"id": 1, "file": "frames/00000001.png", "bytes": 10, "embedding": embedding}
    (folder / "index.json").write_text(json.dumps({"format": 1, "entries": [good, bad], "counts": {}, "next_id": 2}))
    with pytest.raises(ValueError, match=r"index.json: entry frames/00000001.png: embedding must be null or a list "
                                         r"of finite numbers"):
        read_index(folder)
    (folder / "index.json").write_text(json.dumps({"format": 1, "entries": [good, dict(bad, embedding=None)],
                                                   "counts": {}, "next_id": 2}))
    assert len(read_index(folder)["entries"]) == 2


@pytest.mark.faults
def test_a_collection_folder_with_links_is_refused_and_no_write_follows_a_link(tmp_path):
    """Session 18: a collect folder made first by someone else (``--collect /tmp/unknown``) with
    ``frames`` or ``.index.json.tmp`` a symbolic link had the collector write through it: the
    index's temporary file (``write_text``) overwrote the file it names. A link among the names the
    collector writes is refused at start; a frame's file or the index's temporary file that turns
    into a link later is refused, not followed."""
    victim = tmp_path / "victim.txt"
    victim.write_text("victim")
    for name in ("frames", "index.json", ".index.json.tmp"):
        folder = tmp_path / f"c-{name.strip('.')}"
        folder.mkdir()
        (folder / name).symlink_to(victim)
        with pytest.raises(OutputError, match=rf"{name} is a symbolic link \(to {victim}\): the collection writes "
                                              "its files only inside"):
            open_output(f"collect://{folder}?rate=1000").start()
    col = collector(tmp_path, rate=1000)
    (tmp_path / "c" / "frames" / "00000000.png").symlink_to(victim)   # the next frame's name, made after start
    col.write(unknown_frame(1))
    col.close()
    assert victim.read_text() == "victim"
    index = read_index(tmp_path / "c")
    assert [e["seq"] for e in index["entries"]] == [1]   # its own file, in place of the link
    assert not (tmp_path / "c" / "frames" / "00000000.png").is_symlink()
