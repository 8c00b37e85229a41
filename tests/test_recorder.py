"""Recorder: bit-exact 16-bit round trip, preview video, drops, crash safety, bad paths."""
import os
import signal
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from waiting import wait_until

from tir.edge.frame import Frame, now
from tir.edge.outputs import OutputError, open_output
from tir.edge.outputs.recorder import INDEX_NAME, PREVIEW_NAME, read_recording

W, H = 48, 32


def make_frame(seq, with_restored=True):
    """Full 16-bit range noise (every bit matters for the round trip), seeded by seq."""
    rng = np.random.default_rng(seq)
    frame = Frame(raw=rng.integers(0, 65536, (H, W), dtype=np.uint16), seq=seq, t_capture=now())
    if with_restored:
        frame.restored = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    return frame


@pytest.mark.parametrize("fmt", ["u16", "png"])
def test_round_trip_is_bit_exact_and_preview_has_every_frame(tmp_path, fmt):
    sent = [make_frame(seq) for seq in range(12)]
    with open_output(f"file://{tmp_path}/rec?what=both&fps=10&format={fmt}") as rec:
        for frame in sent:
            rec.write(frame)
    assert rec.written == 12 and rec.dropped == 0 and rec.errors == 0
    assert rec.preview_frames == 12

    raw, index = read_recording(tmp_path / "rec", what="raw")
    restored, _ = read_recording(tmp_path / "rec", what="restored")
    assert raw.dtype == np.uint16 and raw.shape == (12, H, W)
    assert np.array_equal(raw, np.stack([f.raw for f in sent]))
    assert np.array_equal(restored, np.stack([f.restored for f in sent]))
    assert [int(row["seq"]) for row in index] == list(range(12))
    assert [float(row["t_capture"]) for row in index] == pytest.approx([f.t_capture for f in sent])

    video = cv2.VideoCapture(str(tmp_path / "rec" / PREVIEW_NAME))
    assert video.isOpened()
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    decoded = 0
    while True:
        ok, image = video.read()
        if not ok:
            break
        assert image.shape == (H, 2 * W, 3)
        decoded += 1
    assert decoded == 12


def test_without_a_model_the_raw_frame_is_kept_as_raw(tmp_path):
    with open_output(f"file://{tmp_path}/rec?preview=0") as rec:
        sent = [make_frame(seq, with_restored=False) for seq in range(3)]
        for frame in sent:
            rec.write(frame)
    frames, index = read_recording(tmp_path / "rec")
    assert np.array_equal(frames, np.stack([f.raw for f in sent]))
    assert all(row["restored"] == "" for row in index)
    assert not (tmp_path / "rec" / PREVIEW_NAME).exists()
    with pytest.raises(ValueError, match="no restored image"):
        read_recording(tmp_path / "rec", what="restored")


def test_a_slow_disk_drops_and_counts_instead_of_blocking(tmp_path):
    rec = open_output(f"file://{tmp_path}/rec?queue=1&compression=9").start()
    for seq in range(40):
        rec.write(make_frame(seq))
    rec.close()
    assert rec.written + rec.dropped == 40
    frames, index = read_recording(tmp_path / "rec")
    assert len(frames) == rec.written
    seqs = [int(row["seq"]) for row in index]
    assert seqs == sorted(seqs)
    for frame, seq in zip(frames, seqs):
        assert np.array_equal(frame, make_frame(seq).restored)


CHILD = textwrap.dedent("""
    import signal, sys, time
    # a shell starts background jobs with SIGINT ignored, and a child inherits that: Ctrl-C
    # would then do nothing here (the test hung whenever the suite itself ran with `&`)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    from test_recorder import make_frame
    from tir.edge.outputs import open_output
    with open_output({uri!r}) as rec:
        seq = 0
        while True:
            rec.write(make_frame(seq))
            seq += 1
            if rec.written >= 5 and seq % 5 == 0:
                print("ready", flush=True)
            time.sleep(0.002)
""")


def run_child_until_ready(uri):
    code = CHILD.format(tests=os.path.dirname(__file__), uri=uri)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


@pytest.mark.parametrize("fmt", ["u16", "png"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_a_recording_cut_short_reads_back_bit_exact(tmp_path, sig, fmt):
    child = run_child_until_ready(f"file://{tmp_path}/rec?what=both&format={fmt}")
    child.send_signal(sig)
    child.wait(timeout=30)
    raw, index = read_recording(tmp_path / "rec", what="raw")
    restored, _ = read_recording(tmp_path / "rec", what="restored")
    assert len(raw) >= 5 and len(raw) == len(restored) == len(index)
    for frame_raw, frame_restored, row in zip(raw, restored, index):
        expected = make_frame(int(row["seq"]))
        assert np.array_equal(frame_raw, expected.raw)
        assert np.array_equal(frame_restored, expected.restored)
    assert not list((tmp_path / "rec").glob("*/*.part")) or sig == signal.SIGKILL
    if sig == signal.SIGINT:
        # Ctrl-C runs close(): the preview video is finalised and holds every indexed frame.
        video = cv2.VideoCapture(str(tmp_path / "rec" / PREVIEW_NAME))
        in_preview = sum(row["preview"] == "1" for row in index)
        assert in_preview >= 1
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == in_preview


def test_unwritable_path_names_the_path(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the recording folder should go")
    with pytest.raises(OutputError, match="not-a-folder/rec"):
        open_output(f"file://{blocker}/rec").start()


def test_a_path_that_is_a_file_is_refused_as_not_a_folder(tmp_path):
    # was "cannot write a recording to /dev/full: File exists" (mkdir's EEXIST)
    target = tmp_path / "clip.avi"
    target.write_bytes(b"an existing file")
    for path in (target, "/dev/full"):
        with pytest.raises(OutputError, match=f"{path}: it exists and is not a folder"):
            open_output(f"file://{path}").start()
    assert target.read_bytes() == b"an existing file"


def test_an_existing_recording_is_not_overwritten_by_accident(tmp_path):
    with open_output(f"file://{tmp_path}/rec?preview=0") as rec:
        rec.write(make_frame(0))
    with pytest.raises(OutputError, match="already holds a recording"):
        open_output(f"file://{tmp_path}/rec").start()
    with open_output(f"file://{tmp_path}/rec?preview=0&overwrite=1") as rec:
        rec.write(make_frame(7))
    frames, index = read_recording(tmp_path / "rec")
    assert [row["seq"] for row in index] == ["7"] and (tmp_path / "rec" / INDEX_NAME).exists()
    assert (tmp_path / "rec" / "restored.u16").stat().st_size == H * W * 2


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(OutputError, match=r"option what must be one of restored, raw, both \(got 'all'\)"):
        open_output(f"file://{tmp_path}/rec?what=all")
    with pytest.raises(FileNotFoundError, match="no frames.csv"):
        read_recording(tmp_path)


def test_a_half_written_last_frame_is_ignored(tmp_path):
    with open_output(f"file://{tmp_path}/rec?preview=0") as rec:
        sent = [make_frame(seq) for seq in range(3)]
        for frame in sent:
            rec.write(frame)
    # What a kill during the fourth frame leaves: part of its bytes, part of its index line.
    with open(tmp_path / "rec" / "restored.u16", "ab") as stream:
        stream.write(b"\x01\x02" * 100)
    with open(tmp_path / "rec" / INDEX_NAME, "a") as index:
        index.write("3,12.5,")
    frames, index = read_recording(tmp_path / "rec")
    assert np.array_equal(frames, np.stack([f.restored for f in sent]))


def _disk_full_after(monkeypatch, good_writes):
    """Make the recorder's writes fail with ENOSPC after ``good_writes`` successful ones."""
    import errno

    from tir.edge.outputs import recorder as recorder_module

    real = recorder_module._write_all
    calls = {"n": 0}

    def write_all(stream, data):
        calls["n"] += 1
        if calls["n"] > good_writes:
            # a partial write first, as a filling disk does, then the error
            stream.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(stream, data)

    monkeypatch.setattr(recorder_module, "_write_all", write_all)


@pytest.mark.faults
def test_a_full_disk_stops_the_recorder_and_keeps_what_was_written(tmp_path, monkeypatch):
    # the header line, then 3 frames x (raw, restored, index line), then half of frame 3's raw
    _disk_full_after(monkeypatch, 1 + 3 * 3)
    rec = open_output(f"file://{tmp_path}/rec?preview=0").start()
    sent = [make_frame(seq) for seq in range(8)]
    for frame in sent:
        rec.write(frame)
    rec.close()
    assert rec.written == 3
    assert rec.failure is not None and "ENOSPC" in rec.failure and "frame 3" in rec.failure
    assert "frames kept, readable: 3" in rec.failure
    assert rec.failure.endswith("free space on that disk or record to another one")
    assert rec.lost == 5 and rec.written + rec.lost + rec.dropped == 8
    assert rec.stats()["failure"] == rec.failure
    # the half-written frame was cut off: the streams hold exactly the indexed frames
    assert (tmp_path / "rec" / "raw.u16").stat().st_size == 3 * H * W * 2
    assert (tmp_path / "rec" / "restored.u16").stat().st_size == 3 * H * W * 2
    raw, index = read_recording(tmp_path / "rec", what="raw")
    restored, _ = read_recording(tmp_path / "rec", what="restored")
    assert [int(r["seq"]) for r in index] == [0, 1, 2]
    assert np.array_equal(raw, np.stack([f.raw for f in sent[:3]]))
    assert np.array_equal(restored, np.stack([f.restored for f in sent[:3]]))


@pytest.mark.faults
def test_a_full_disk_cut_inside_the_index_line_keeps_the_index_valid(tmp_path, monkeypatch):
    _disk_full_after(monkeypatch, 1 + 2 * 3 + 2)  # frame 2's raw and restored written, its index line cut
    with open_output(f"file://{tmp_path}/rec?preview=0") as rec:
        for seq in range(4):
            rec.write(make_frame(seq))
    assert rec.written == 2 and "frame 2" in rec.failure
    text = (tmp_path / "rec" / INDEX_NAME).read_text()
    assert text.count("\n") == 3 and text.endswith("\n")  # header + 2 complete lines, nothing half
    raw, index = read_recording(tmp_path / "rec", what="raw")
    assert len(raw) == 2 and (tmp_path / "rec" / "raw.u16").stat().st_size == 2 * H * W * 2


@pytest.mark.faults
def test_a_full_disk_reaches_stats_status_line_and_exit_code(tmp_path, monkeypatch, capsys):
    from tir.tools.cli import main

    _disk_full_after(monkeypatch, 1 + 2 * 2)  # raw only (no model): 2 frames, then the disk is full
    code = main(["run", "--source", "synthetic://?size=160x120&realtime=0", "--frames", "30",
                 "--model", "plainnet:tiny", "--backend", "torch",
                 "--output", f"file://{tmp_path}/rec?preview=0&what=raw"])
    out, err = capsys.readouterr()
    assert code == 3, err
    assert "FAILED: recording to" in out and "No space left on device" in out
    assert "frames kept, readable: 2" in err
    frames, index = read_recording(tmp_path / "rec", what="raw")
    assert len(frames) == 2


@pytest.mark.faults
def test_a_failed_recorder_shows_in_the_pipeline_snapshot(tmp_path, monkeypatch):
    from tir.edge.pipeline import Pipeline
    from tir.edge.sources import open_source

    _disk_full_after(monkeypatch, 1)
    rec = open_output(f"file://{tmp_path}/rec?preview=0")
    source = open_source("synthetic://?size=160x120&realtime=0&frames=5")
    snap = Pipeline(source, None, [rec], frames=5).run()
    assert snap["errors"]["output"] == 1
    assert "No space left on device" in snap["last_error"]
    assert list(snap["output_failures"]) == [rec.uri.text]
    assert snap["recording"]["written"] == 0 and snap["recording"]["lost"] == 5


def _png_write_fails(monkeypatch, when):
    """Make the recorder's PNG writes fail with ENOSPC where ``when(n, seq)`` is true (n: the
    1-based count of PNG writes so far, seq: the frame's), as a full disk or folder answers."""
    import errno

    from tir.edge.outputs.recorder import Recorder

    real = Recorder._write_png
    calls = {"n": 0}

    def write_png(self, kind, seq, counts):
        calls["n"] += 1
        if when(calls["n"], seq):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, kind, seq, counts)

    monkeypatch.setattr(Recorder, "_write_png", write_png)


@pytest.mark.faults
def test_a_full_disk_in_png_format_removes_the_failed_frames_files(tmp_path, monkeypatch):
    # the 6th PNG, frame 2's restored one: its raw PNG is already in place
    _png_write_fails(monkeypatch, lambda n, seq: n == 6)
    with open_output(f"file://{tmp_path}/rec?format=png&preview=0") as rec:
        for seq in range(5):
            rec.write(make_frame(seq))
    assert rec.written == 2 and "frame 2" in rec.failure and rec.lost == 3
    assert sorted(p.name for p in (tmp_path / "rec" / "raw" / "00000").iterdir()) == ["000000000.png", "000000001.png"]
    assert not list((tmp_path / "rec").glob("*/*.part"))
    raw, index = read_recording(tmp_path / "rec", what="raw")
    assert len(index) == 2 and np.array_equal(raw[1], make_frame(1).raw)


def _decoded_frames(path) -> int:
    video = cv2.VideoCapture(str(path))
    decoded = 0
    while video.read()[0]:
        decoded += 1
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == decoded
    return decoded


def test_preview_near_the_file_size_limit_is_closed_playable_and_goes_on_in_a_new_file(tmp_path, monkeypatch):
    """Under ulimit -f (or FAT32's 4 GiB) OpenCV's VideoWriter failed silently: preview_frames and
    the index went on counting frames that a cut, unfinalised preview.avi did not hold (187
    counted, 26 decodable in a 200 KB run). Then (session 17) the preview was closed before the
    limit and stopped there; now (session 18) it goes on in ``preview.<P>.avi``, each file closed
    playable before the limit, said and counted in ``segments``."""
    from tir.edge.outputs import recorder

    monkeypatch.setattr(recorder, "file_size_limit", lambda folder: recorder.PREVIEW_HEADROOM + 16 * 5)
    sent = [make_frame(seq) for seq in range(12)]
    with open_output(f"file://{tmp_path}/rec?fps=10") as rec:
        for frame in sent:
            rec.write(frame)
    assert rec.written == 12 and rec.preview_frames == 12 and rec.errors == 0 and rec.segments == 1
    raw, index = read_recording(tmp_path / "rec", what="raw")
    assert np.array_equal(raw, np.stack([f.raw for f in sent]))
    assert [int(row["preview"]) for row in index] == [1] * 12
    assert sorted(p.name for p in (tmp_path / "rec").glob("preview*")) == ["preview.6.avi", PREVIEW_NAME]
    assert _decoded_frames(tmp_path / "rec" / PREVIEW_NAME) == 6
    assert _decoded_frames(tmp_path / "rec" / "preview.6.avi") == 6


def test_a_preview_no_file_can_hold_stops_and_the_frames_go_on(tmp_path, monkeypatch):
    """Where not one preview frame fits below the limit, the preview stops (no endless new files)
    and says so; the 16-bit frames go on being recorded."""
    from tir.edge.outputs import recorder

    monkeypatch.setattr(recorder, "file_size_limit", lambda folder: 1)
    sent = [make_frame(seq) for seq in range(4)]
    with open_output(f"file://{tmp_path}/rec?fps=10") as rec:
        for frame in sent:
            rec.write(frame)
    assert rec.written == 4 and rec.preview_frames == 1 and rec.errors == 1 and rec.segments == 0
    assert rec.last_error.startswith(f"{tmp_path / 'rec' / PREVIEW_NAME} stopped after 1 frames at ")
    assert "the 16-bit frames go on being recorded" in rec.last_error
    assert len(read_recording(tmp_path / "rec", what="raw")[1]) == 4


_RECORD_UNDER_ULIMIT = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, sys.argv[3])
    from test_recorder import make_frame
    from tir.edge.outputs import open_output
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
    with open_output(f"file://{sys.argv[1]}?preview=0") as rec:
        for seq in range(int(sys.argv[4])):
            rec.write(make_frame(seq))
    print(rec.written, rec.segments, rec.lost, rec.failure)
""")


@pytest.mark.faults
def test_a_stream_file_at_the_largest_file_allowed_rolls_to_a_new_segment_and_loses_nothing(tmp_path):
    """Session 18: FAT32 (a USB stick) ends a file at 4 GiB; a write past it fails with EFBIG, and
    the recording stopped there (about 3.6 min of 640x512 raw + restored at 30 fps), ``tir run``
    exiting 3. Now the frame is cut off that file and written to a new one (``raw.<B>.u16``, B its
    offset in the stream), said in a warning and counted in ``segments``; read_recording and a
    replay read every frame bit-exact. Here ``ulimit -f`` (RLIMIT_FSIZE) stands for FAT32: the
    write crossing it is cut short, then refused with EFBIG, as on a real limit."""
    frame_bytes = H * W * 2
    limit = 5 * frame_bytes + 1000  # five frames fit, the sixth is cut at 1000 bytes
    result = subprocess.run([sys.executable, "-c", _RECORD_UNDER_ULIMIT, str(tmp_path / "rec"), str(limit),
                             os.path.dirname(__file__), "23"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    written, segments, lost, failure = result.stdout.split(maxsplit=3)
    assert (written, segments, lost, failure.strip()) == ("23", "8", "0", "None")  # five frames a file: four new files a stream
    assert "raw.u16 reached the largest file allowed there at 15360 bytes" in result.stderr
    assert "the recording goes on in raw.15360.u16" in result.stderr
    folder = tmp_path / "rec"
    assert sorted(p.name for p in folder.glob("raw*.u16")) == [
        "raw.15360.u16", "raw.30720.u16", "raw.46080.u16", "raw.61440.u16", "raw.u16"]
    assert all(p.stat().st_size <= limit for p in folder.glob("*.u16"))
    sent = [make_frame(seq) for seq in range(23)]
    raw, index = read_recording(folder, what="raw")
    restored, _ = read_recording(folder, what="restored")
    assert np.array_equal(raw, np.stack([f.raw for f in sent]))
    assert np.array_equal(restored, np.stack([f.restored for f in sent]))
    assert [int(row["raw"]) for row in index] == [i * frame_bytes for i in range(23)]  # offsets in the stream

    from tir.edge.sources import open_source

    for uri, kind in ((f"file://{folder}?rate=max", "raw"), (f"file://{folder}/restored.30720.u16?rate=max",
                                                             "restored")):
        source = open_source(uri)
        replayed = [source.read().raw for _ in range(23)]
        source.close()
        assert np.array_equal(np.stack(replayed), np.stack([getattr(f, kind) for f in sent]))
        assert source.stats()["corrupt"] == 0


@pytest.mark.faults
def test_a_frame_larger_than_the_largest_file_allowed_still_fails_the_recording(tmp_path):
    """A new, empty segment that cannot hold one frame is no place to go on: the recorder stops as
    on a full disk (EFBIG named), no loop of new files."""
    result = subprocess.run([sys.executable, "-c", _RECORD_UNDER_ULIMIT, str(tmp_path / "rec"), str(H * W),
                             os.path.dirname(__file__), "3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    written, segments, lost, failure = result.stdout.split(maxsplit=3)
    assert (written, segments, lost) == ("0", "0", "3") and "EFBIG" in failure
    assert sorted(p.name for p in (tmp_path / "rec").glob("*.u16")) == ["raw.u16"]


def test_file_size_limit_reads_ulimit(tmp_path):
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (123456, resource.RLIM_INFINITY)); "
            "from tir.edge.outputs.recorder import file_size_limit; print(file_size_limit(sys.argv[1]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "123456"


@pytest.mark.faults
def test_a_full_disk_ends_tir_run_at_once_with_exit_3(tmp_path, monkeypatch, capsys, caplog):
    # Before: the recorder stopped, but the run streamed on to its limit (or forever without
    # one) and exited 3 only then; now the run ends at the failure.
    import json

    from tir.tools.cli import main

    _disk_full_after(monkeypatch, 1 + 2 * 2)
    code = main(["run", "--source", "synthetic://?size=160x120&realtime=0", "--frames", "400", "--quiet",
                 "--model", "plainnet:tiny", "--backend", "torch",
                 "--output", f"file://{tmp_path}/rec?preview=0&what=raw"])
    out, err = capsys.readouterr()
    assert code == 3, err
    assert "output stopped for good, ending the run: recording to" in caplog.text
    info = json.loads((tmp_path / "rec" / "recording.json").read_text())
    assert info["stats"]["frames"] < 400 - 50  # stopped at the failure, not at the limit
    assert info["stats"]["output_failures"] and "frames kept, readable: 2" in err
    assert len(read_recording(tmp_path / "rec", what="raw")[0]) == 2


@pytest.mark.faults
def test_a_pipeline_asked_to_stop_on_an_output_failure_is_done_when_it_fails(tmp_path, monkeypatch):
    from tir.edge.pipeline import Pipeline
    from tir.edge.sources import open_source

    _disk_full_after(monkeypatch, 1)
    rec = open_output(f"file://{tmp_path}/rec?preview=0")
    source = open_source("synthetic://?size=160x120&realtime=0")  # endless
    pipeline = Pipeline(source, None, [rec], stop_on_output_failure=True).start()
    try:
        assert pipeline.wait(60.0)  # done by the failure, not by a limit (there is none)
    finally:
        pipeline.stop()
    assert pipeline.output_failed[0] == rec.uri.text and "No space left" in pipeline.output_failed[1]
    assert pipeline.snapshot()["output_failures"] == {rec.uri.text: rec.failure}


@pytest.mark.faults
@pytest.mark.parametrize("name", ["raw.u16", "frames.csv", "recording.json", "preview.avi", "raw"])
def test_a_recording_folder_with_a_link_among_its_names_is_refused(tmp_path, name):
    """Session 18: ``--record /tmp/rec`` into a folder made first by someone else, holding
    ``raw.u16`` as a symbolic link to another file: the recording was appended to that file
    (1.9 MB into a 12-byte text file); ``raw/000000000.png.part`` (format=png) as a link: the file
    it named was overwritten with a PNG. A link among the names the recorder writes is refused at
    start, naming it; nothing is written through it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("victim")
    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / name).symlink_to(victim)
    with pytest.raises(OutputError, match=rf"{name} is a symbolic link \(to {victim}\): a recording writes its "
                                          "files only inside"):
        open_output(f"file://{folder}?format={'png' if name == 'raw' else 'u16'}").start()
    assert victim.read_text() == "victim"


@pytest.mark.faults
def test_a_png_frame_whose_temporary_name_is_a_link_is_written_as_a_file_of_its_own(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("victim")
    folder = tmp_path / "rec"
    (folder / "raw" / "00000").mkdir(parents=True)
    (folder / "raw" / "00000" / "000000000.png.part").symlink_to(victim)   # a leftover name, or made after start
    with open_output(f"file://{folder}?format=png&preview=0&what=raw") as rec:
        rec.write(make_frame(0, with_restored=False))
    assert victim.read_text() == "victim" and rec.written == 1
    raw, _ = read_recording(folder, what="raw")
    assert np.array_equal(raw[0], make_frame(0).raw)


def test_png_frames_go_into_sub_folders_of_10000_and_every_reader_follows_them(tmp_path, monkeypatch):
    # FAT32 holds at most 65,534 entries in a folder (a long name takes 2-3): one folder of PNGs
    # ended a format=png recording with ENOSPC after about 21,000 frames (session 18). Frames now go
    # into sub-folders of PNG_FOLDER_FRAMES (10 here), read back by replay, read_recording and the
    # calibration reader.
    from tir.calibration.data import _read_recorded, _recording_rows
    from tir.edge.outputs import recorder as recorder_module
    from tir.edge.sources.base import open_source

    monkeypatch.setattr(recorder_module, "PNG_FOLDER_FRAMES", 10)
    folder = tmp_path / "rec"
    seqs = list(range(0, 25)) + [37]
    with open_output(f"file://{folder}?format=png&preview=0") as rec:
        for seq in seqs:
            rec.write(make_frame(seq))
    assert rec.written == len(seqs) and rec.failure is None
    for kind in ("raw", "restored"):
        held = {p.name: len(list(p.iterdir())) for p in (folder / kind).iterdir()}
        assert held == {"00000": 10, "00001": 10, "00002": 5, "00003": 1}   # no loose PNG in raw/ itself
    raw, index = read_recording(folder, what="raw")
    restored, _ = read_recording(folder, what="restored")
    assert [int(r["seq"]) for r in index] == seqs
    for k, seq in enumerate(seqs):
        assert np.array_equal(raw[k], make_frame(seq).raw) and np.array_equal(restored[k], make_frame(seq).restored)
    rows = _recording_rows(folder)
    assert np.array_equal(_read_recorded(folder, rows[-1]), make_frame(37).raw)
    for uri in (f"file://{folder}?rate=max", f"file://{folder}/raw?rate=max"):   # replay, also of the stream's folder
        with open_source(uri) as source:
            got = [source.read() for _ in seqs]
        assert all(np.array_equal(f.raw, make_frame(s).raw) for f, s in zip(got, seqs))
    # an index naming a sub-folder that is not a number, or one level too deep, is refused
    from tir.edge.outputs.recorder import frame_place

    row = dict(index[0])
    for bad in ("raw/../0.png", "raw/00000/00/0.png", "raw/x/000000000.png", "restored/00000/000000000.png"):
        with pytest.raises(ValueError):
            frame_place(folder, {**row, "raw": bad}, "raw")
    assert frame_place(folder, {**row, "raw": "raw/000000000.png"}, "raw")[0] == folder / "raw" / "000000000.png"


def test_overwrite_removes_a_png_recordings_sub_folders(tmp_path):
    folder = tmp_path / "rec"
    with open_output(f"file://{folder}?format=png&preview=0") as rec:
        rec.write(make_frame(0))
    (folder / "raw" / "notes").mkdir()   # not the recorder's: kept
    with open_output(f"file://{folder}?format=png&preview=0&overwrite=1") as rec:
        rec.write(make_frame(5))
    raw, index = read_recording(folder, what="raw")
    assert [r["seq"] for r in index] == ["5"] and not (folder / "raw" / "00000" / "000000000.png").exists()
    assert (folder / "raw" / "notes").is_dir()


@pytest.mark.faults
def test_enospc_on_a_disk_with_room_says_the_folder_may_be_full(tmp_path, monkeypatch):
    from tir.edge.outputs import recorder as recorder_module

    class Room:
        f_bavail, f_frsize = 1 << 20, 4096   # 4 GiB free

    monkeypatch.setattr(recorder_module.os, "statvfs", lambda path: Room())
    _png_write_fails(monkeypatch, lambda n, seq: seq == 2)   # vfat's answer when a folder has no free entry left
    with open_output(f"file://{tmp_path}/rec?format=png&preview=0") as rec:
        for seq in range(4):
            rec.write(make_frame(seq))
    assert rec.written == 2 and "65,534" in rec.failure and "4096 MiB free" in rec.failure
    raw, index = read_recording(tmp_path / "rec", what="raw")
    assert len(index) == 2 and np.array_equal(raw[1], make_frame(1).raw)


@pytest.mark.faults
def test_a_png_sub_folder_replaced_by_a_link_stops_the_recording_and_writes_nothing_through_it(tmp_path, monkeypatch):
    from tir.edge.outputs import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "PNG_FOLDER_FRAMES", 2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = tmp_path / "rec"
    with open_output(f"file://{folder}?format=png&preview=0&what=raw") as rec:
        rec.write(make_frame(0, with_restored=False))
        assert wait_until(lambda: rec.written == 1, limit_s=10.0)
        (folder / "raw" / "00001").symlink_to(elsewhere)   # the next sub-folder, made by someone else
        for seq in (1, 2, 3):
            rec.write(make_frame(seq, with_restored=False))
    assert list(elsewhere.iterdir()) == [] and rec.written == 2 and "not a folder the recorder made" in rec.failure
    raw, index = read_recording(folder, what="raw")
    assert [r["seq"] for r in index] == ["0", "1"]

