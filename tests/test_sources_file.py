import contextlib
import logging
import os
import time

import cv2
import numpy as np
import pytest

from tir.edge.frame import FrameError, check_frame
from tir.edge.sources import SourceError, open_source
from tir.edge.sources.file import EndOfStream


def read_all(source, limit=100):
    frames = []
    while len(frames) < limit:
        try:
            frame = source.read(timeout=1.0)
        except EndOfStream:
            break
        if frame is not None:
            frames.append(frame)
    return frames


def test_folder_of_16bit_png_keeps_counts_and_drops_corrupt(tmp_path, synthetic_frames, caplog):
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, image in enumerate(synthetic_frames):
        assert cv2.imwrite(str(folder / f"f{i:03d}.png"), image)
    (folder / "f001b.png").write_bytes(b"not a png at all")  # corrupt, sorts between f001 and f002
    (folder / "f001c.png").write_bytes(b"also broken")
    cv2.imwrite(str(folder / "f002b.png"), np.zeros((60, 80), np.uint16))  # another size: skipped, kind "size"
    (folder / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        source = open_source(f"file://{folder}?rate=max")
        frames = read_all(source)
    assert len(frames) == 4
    for frame, expected in zip(frames, synthetic_frames):
        np.testing.assert_array_equal(frame.raw, expected)
        assert frame.meta["bits"] == 14 and frame.meta["source_bits"] == 16
    assert source.stats()["corrupt"] == 3
    assert source.size == (160, 120)
    corrupt_logs = [r for r in caplog.records if "(corrupt)" in r.getMessage()]
    assert len(corrupt_logs) == 1, "each kind of drop is logged once"
    assert any("(size)" in r.getMessage() and "replay one size per folder" in r.getMessage() for r in caplog.records)


def test_8bit_images_are_scaled_to_14_bits(tmp_path):
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "b.png"), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    frames = read_all(open_source(f"file://{tmp_path}?rate=max"))
    assert len(frames) == 2
    for frame in frames:
        np.testing.assert_array_equal(frame.raw, image.astype(np.uint16) << 6)
        assert frame.meta["bits"] == 14 and frame.meta["source_bits"] == 8


def test_multipage_tiff_and_loop(tmp_path, synthetic_frames):
    path = str(tmp_path / "stack.tiff")
    assert cv2.imwritemulti(path, list(synthetic_frames[:3]))
    source = open_source(f"file://{path}?rate=max&loop=1")
    frames = read_all(source, limit=7)
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.raw, synthetic_frames[i % 3])
    assert [f.seq for f in frames] == list(range(7))
    assert source.stats()["loops"] == 2


def test_npy_stack_of_16bit_counts_with_bits_override(tmp_path, synthetic_frames):
    path = tmp_path / "stack.npy"
    np.save(path, synthetic_frames)
    frames = read_all(open_source(f"{path}", rate="max", bits=16))
    assert len(frames) == len(synthetic_frames)
    np.testing.assert_array_equal(np.stack([f.raw for f in frames]), synthetic_frames)
    assert frames[0].meta["bits"] == 16
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(SourceError, match="expected uint16 or uint8"):
        open_source(str(tmp_path / "bad.npy"))


def test_video_file_8bit_to_counts_at_native_fps(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i + 20, np.uint8))
    writer.release()
    source = open_source(f"file://{path}")
    assert source.fps == pytest.approx(12.0)
    frames = read_all(source)
    assert len(frames) == 5
    for i, frame in enumerate(frames):
        check_frame(frame.raw, (48, 64))
        assert abs(int(np.median(frame.raw)) - ((40 * i + 20) << 6)) <= 3 << 6  # MJPG is lossy
        assert frame.meta["source_bits"] == 8


def test_missing_path_names_what_exists(tmp_path):
    (tmp_path / "clip_a.npy").write_bytes(b"")
    (tmp_path / "frames").mkdir()
    for i in range(25):
        (tmp_path / f"unrelated_{i:02d}.txt").write_text("x")
    with pytest.raises(SourceError) as info:
        open_source(f"file://{tmp_path}/clip_b.npy")
    message = str(info.value)
    # only the close name is suggested, not the folder's 26 unrelated entries (issue 10 item 20)
    assert "clip_b.npy" in message and f"did you mean {tmp_path}/clip_a.npy?" in message
    assert "unrelated" not in message and "frames" not in message
    with pytest.raises(SourceError) as info:
        open_source(f"file://{tmp_path}/zzzz.mp4")
    assert str(info.value).endswith(f"({tmp_path} exists, with 27 entries, none named like it)")
    with pytest.raises(SourceError, match="no images"):
        open_source(f"file://{tmp_path}/frames")


def test_a_link_to_nothing_is_named_as_a_link_not_suggested_as_itself(tmp_path):
    """--source loop.png (a link to itself) said 'no such file or folder: loop.png; did you mean
    loop.png, ...?': the link is in its folder's listing, so it was suggested as its own fix."""
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    (tmp_path / "loop2.png").write_bytes(b"")
    with pytest.raises(SourceError) as info:
        open_source(str(tmp_path / "loop.png"))
    message = str(info.value)
    assert message.startswith(f"{tmp_path}/loop.png is a symbolic link that leads to no file (")
    assert f"did you mean {tmp_path}/loop.png" not in message and f"{tmp_path}/loop.png," not in message
    with pytest.raises(SourceError) as info:
        open_source(f"file://{tmp_path}/dangling.png")
    assert str(info.value).startswith(f"{tmp_path}/dangling.png is a symbolic link that leads to no file "
                                      f"(its target {tmp_path}/gone.png: No such file or directory)")


def test_end_of_stream_without_loop_and_fps_option(tmp_path, synthetic_frames):
    np.save(tmp_path / "s.npy", synthetic_frames[:2])
    source = open_source(f"file://{tmp_path}/s.npy?fps=50")
    assert source.fps == 50.0 and not source.live
    assert source.read() is not None and source.read() is not None
    with pytest.raises(EndOfStream, match="loop=1"):
        source.read()


# ---- issue 10: loss and return, one counter set, log flood, recordings as sources ----------

def write_pngs(folder, frames, names=None):
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(frames):
        assert cv2.imwrite(str(folder / (names[i] if names else f"f{i:03d}.png")), image)


@pytest.mark.faults
def test_a_damaged_png_is_refused_before_libpng_and_counted_by_the_pipeline(tmp_path, synthetic_frames, capfd):
    from tir.edge.pipeline import Pipeline
    from tir.tools.run import status_line

    folder = tmp_path / "seq"
    write_pngs(folder, synthetic_frames)
    data = bytearray((folder / "f001.png").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the image data
    (folder / "f001b.png").write_bytes(bytes(data))
    (folder / "f002b.png").write_bytes(bytes(data[: len(data) // 3]))  # cut short
    snap = Pipeline(open_source(f"file://{folder}?rate=max"), None, []).run()
    assert snap["frames"] == 4
    assert snap["corrupt"] == {"corrupt": 2} and snap["corrupt_total"] == 2
    assert snap["source"]["corrupt"] == 2
    assert "corrupt 2" in status_line(snap)
    err = capfd.readouterr().err
    assert "libpng" not in err and "imread_" not in err


def test_png_problem_names_the_damage(tmp_path, synthetic_frames):
    from tir.edge.sources.file import png_problem

    ok, png = cv2.imencode(".png", synthetic_frames[0])
    data = png.tobytes()
    assert png_problem(data) is None
    flipped = bytearray(data)
    flipped[60] ^= 1
    assert "CRC mismatch" in png_problem(bytes(flipped))
    assert png_problem(data[:-12]) == "cut before the IEND chunk"
    assert png_problem(b"GIF89a") == "no PNG signature"


def file_source(uri):
    from tir.edge.sources.file import FileSource
    from tir.edge.uri import parse_uri

    return FileSource(parse_uri(uri), backoff_initial=0.01, backoff_max=0.02)


@pytest.mark.faults
def test_a_lost_folder_is_no_signal_and_replay_resumes_when_it_returns(tmp_path, synthetic_frames, caplog):
    folder, away = tmp_path / "seq", tmp_path / "away"
    write_pngs(folder, synthetic_frames)
    source = file_source(f"file://{folder}?loop=1&rate=max&retries=100000")
    assert [source.read().seq for _ in range(3)] == [0, 1, 2]
    folder.rename(away)
    with caplog.at_level(logging.WARNING):
        results = [source.read(timeout=0.01) for _ in range(200)]
    assert results[-1] is None  # lost: no frame, and no EndOfStream
    stats = source.stats()
    assert stats["connected"] is False and "no such file or folder" in stats["last_error"]
    lost_lines = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(lost_lines) == 1, "retries every few ms must not log a line each"
    assert not any("missing" in r.getMessage() for r in caplog.records)
    away.rename(folder)
    frame = None
    for _ in range(200):
        frame = source.read(timeout=0.01)
        if frame is not None:
            break
    assert frame is not None
    np.testing.assert_array_equal(frame.raw, synthetic_frames[0])  # from its first frame again
    stats = source.stats()
    assert stats["connected"] is True and stats["reconnects"] == 1


@contextlib.contextmanager
def _pipeline_losing_its_folder(tmp_path, frames, retries: int, shown: int):
    """A pipeline replaying a folder of ``frames`` (``retries=``) whose folder is deleted once it
    has shown ``shown`` frames; yields (pipeline, folder) inside the running pipeline."""
    import shutil

    from tir.edge.pipeline import Pipeline

    folder = tmp_path / "seq"
    write_pngs(folder, frames)
    pipeline = Pipeline(file_source(f"file://{folder}?loop=1&fps=50&retries={retries}"), None, [], read_timeout=0.05)
    with pipeline:
        deadline = time.monotonic() + 10
        while pipeline.snapshot()["frames"] < shown and time.monotonic() < deadline:
            time.sleep(0.02)
        shutil.rmtree(folder)
        yield pipeline, folder


@pytest.mark.faults
def test_a_lost_source_shows_no_signal_in_the_pipeline(tmp_path, synthetic_frames):
    with _pipeline_losing_its_folder(tmp_path, synthetic_frames, retries=100000, shown=3) as (pipeline, folder):
        time.sleep(0.6)
        snap = pipeline.snapshot()
        assert snap["connected"] is False and snap["ended"] is None and pipeline.running
        assert snap["source"]["connected"] is False
        # the frames come back at once (a rename), so the source cannot reconnect to a half-written
        # folder and lose it again
        write_pngs(tmp_path / "staging", synthetic_frames)
        (tmp_path / "staging").rename(folder)
        before = snap["frames"]
        deadline = time.monotonic() + 30  # the retry back-off reaches 5 s; a loaded CI machine is slow
        while pipeline.snapshot()["frames"] <= before + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        snap = pipeline.snapshot()
    assert snap["frames"] > before + 2 and snap["source"]["reconnects"] == 1


@pytest.mark.faults
def test_a_lost_folder_that_does_not_return_ends_the_replay_after_its_retries(tmp_path, synthetic_frames):
    """A replay folder deleted during the run was retried for ever (tir run --frames 20 never
    ended): after retries= reopenings the source raises SourceError naming the folder."""
    folder = tmp_path / "seq"
    write_pngs(folder, synthetic_frames)
    source = file_source(f"file://{folder}?loop=1&rate=max&retries=3")
    assert source.read().seq == 0
    import shutil

    shutil.rmtree(folder)
    with pytest.raises(SourceError) as caught:
        for _ in range(2000):   # 3 retries 0.01-0.02 s apart: well within this
            source.read(timeout=0.01)
    assert str(folder) in str(caught.value) and "not back after 3 retries" in str(caught.value)
    assert "retries=N" in str(caught.value)
    write_pngs(tmp_path / "other", synthetic_frames)
    gone = file_source(f"file://{tmp_path / 'other'}?loop=1&rate=max&retries=0")
    gone.read()
    shutil.rmtree(tmp_path / "other")
    with pytest.raises(SourceError, match="not back after 0 retries"):   # retries=0: at the loss
        for _ in range(100):
            gone.read(timeout=0.01)


@pytest.mark.faults
def test_a_lost_folder_that_does_not_return_stops_the_pipeline_with_an_error(tmp_path, synthetic_frames):
    with _pipeline_losing_its_folder(tmp_path, synthetic_frames, retries=3, shown=2) as (pipeline, folder):
        deadline = time.monotonic() + 20
        while pipeline.running and pipeline.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        error = pipeline.error
    assert isinstance(error, SourceError) and str(folder) in str(error)
    assert "not back after 3 retries" in pipeline.snapshot()["ended"]


def test_drops_of_one_kind_are_logged_at_most_once_per_interval():
    from tir.edge.logs import RateLimiter

    t = [0.0]
    limiter = RateLimiter(interval_s=10.0, clock=lambda: t[0])
    assert limiter.admit("corrupt") == 0
    assert limiter.admit("corrupt") is None and limiter.admit("corrupt") is None
    assert limiter.admit("missing") == 0  # another kind has its own budget
    t[0] = 10.5
    assert limiter.admit("corrupt") == 2  # the next line says how many were held back


def test_the_cli_log_handler_limits_repeated_lines(caplog):
    from tir.edge.logs import RateLimitFilter

    t = [0.0]
    limit = RateLimitFilter(interval_s=5.0, clock=lambda: t[0])
    records = [logging.LogRecord("tir.x", logging.WARNING, __file__, 1, "file %s failed", (i,), None)
               for i in range(50)]
    passed = [r for r in records if limit.filter(r)]
    assert len(passed) == 1
    t[0] = 6.0
    late = logging.LogRecord("tir.x", logging.WARNING, __file__, 1, "file %s failed", (99,), None)
    assert limit.filter(late) and late.getMessage() == "file 99 failed [49 more like this in the last 5 s, not shown]"


def record(folder, frames, dt=0.05, what="both", fmt="u16"):
    from tir.edge.frame import Frame
    from tir.edge.outputs import open_output

    with open_output(f"file://{folder}?what={what}&format={fmt}&preview=0") as rec:
        for i, image in enumerate(frames):
            frame = Frame(raw=image, seq=100 + i, t_capture=1000.0 + i * dt)
            frame.restored = (image // 2).astype(np.uint16)
            rec.write(frame)


@pytest.mark.parametrize("fmt", ["u16", "png"])
def test_a_recording_is_a_source_raw_by_default_with_its_timing(tmp_path, synthetic_frames, fmt):
    rec = tmp_path / "rec"
    record(rec, synthetic_frames, fmt=fmt)
    source = open_source(f"file://{rec}?rate=max")
    frames = read_all(source)
    assert len(frames) == 4
    for frame, expected in zip(frames, synthetic_frames):
        np.testing.assert_array_equal(frame.raw, expected)
    assert [f.meta["recorded_seq"] for f in frames] == [100, 101, 102, 103]
    assert frames[2].meta["t_recorded"] == pytest.approx(1000.1)
    assert source.fps == pytest.approx(20.0)  # from the recorded timestamps
    assert source.reader.step_s() is None  # after the last frame
    restored = read_all(open_source(f"file://{rec}?rate=max&stream=restored"))
    np.testing.assert_array_equal(restored[1].raw, synthetic_frames[1] // 2)


def test_a_recording_stream_file_opens_and_a_missing_stream_is_explained(tmp_path, synthetic_frames):
    rec = tmp_path / "rec"
    record(rec, synthetic_frames[:2], what="raw")
    frames = read_all(open_source(f"file://{rec}/raw.u16?rate=max"))
    np.testing.assert_array_equal(frames[1].raw, synthetic_frames[1])
    with pytest.raises(SourceError, match=r"no restored frames; use \?stream=raw"):
        open_source(f"file://{rec}?stream=restored")


def test_a_recording_replays_at_its_recorded_pace(tmp_path, synthetic_frames):
    rec = tmp_path / "rec"
    record(rec, synthetic_frames[:3], dt=0.25)
    source = open_source(f"file://{rec}")
    source.read()
    assert source.reader.step_s() == pytest.approx(0.25)
    assert source.read(timeout=0.05) is None  # the next frame is due 0.25 s later, not 1/30 s


def _edit_index_row(rec, seq, **fields):
    import csv

    path = rec / "frames.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["seq"] == str(seq):
            row.update(fields)
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)


@pytest.mark.parametrize("fmt,fields", [
    ("u16", {"width": "abc"}), ("u16", {"height": "-32"}), ("u16", {"raw": "abc"}), ("u16", {"raw": "-5"}),
    ("u16", {"width": "100000"}), ("png", {"raw": "../outside/000000101.png"}), ("png", {"raw": "/etc/x.png"}),
])
def test_a_tampered_recording_index_line_drops_that_frame_with_the_reason(tmp_path, synthetic_frames, fmt, fields):
    """Text where the index holds a size or an offset stopped the whole run ("stage read failed:
    ValueError"); a PNG name with '..' read an image outside the recording. Now that frame is
    dropped and counted as corrupt, with the reason, and the others replay."""
    rec = tmp_path / "rec"
    record(rec, synthetic_frames, fmt=fmt)
    outside = tmp_path / "outside"
    outside.mkdir()
    cv2.imwrite(str(outside / "000000101.png"), np.full_like(synthetic_frames[1], 7))
    _edit_index_row(rec, 101, **fields)
    source = open_source(f"file://{rec}?rate=max")
    frames = read_all(source)
    assert [f.meta["recorded_seq"] for f in frames] == [100, 102, 103]
    assert source.stats()["corrupt_kinds"] == {"corrupt": 1}
    from tir.edge.outputs.recorder import read_recording
    with pytest.raises(ValueError, match="frame 101 in"):
        read_recording(rec, what="raw")


def test_a_damaged_capture_time_in_a_recording_replays_the_frame_unpaced(tmp_path, synthetic_frames):
    """A capture time that is not a number refused the whole recording at open ("could not
    convert string to float"); now that frame has no recorded timing and the rest replays."""
    rec = tmp_path / "rec"
    record(rec, synthetic_frames)
    _edit_index_row(rec, 101, t_capture="abc")
    _edit_index_row(rec, 102, t_capture="nan")
    source = open_source(f"file://{rec}?rate=max")
    frames = read_all(source)
    assert [f.meta["recorded_seq"] for f in frames] == [100, 101, 102, 103]
    assert frames[1].meta["t_recorded"] is None and frames[3].meta["t_recorded"] == pytest.approx(1000.15)
    source = open_source(f"file://{rec}")
    source.read()
    assert source.reader.step_s() is None  # no timing between frame 100 and the damaged 101


def test_the_cli_handler_keys_source_drops_by_kind():
    """A source's drop lines of two kinds share one template; the CLI's filter must pass both."""
    from tir.edge.logs import RateLimiter, RateLimitFilter

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    handler.addFilter(RateLimitFilter())
    logger = logging.getLogger("tir.test.kinds")
    logger.addHandler(handler)
    try:
        limiter = RateLimiter()
        for kind in ("corrupt", "shape", "corrupt", "shape"):
            limiter.log(logger, logging.WARNING, kind, "dropping frame (%s): %s", kind, "x")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["dropping frame (corrupt): x", "dropping frame (shape): x"]


def test_a_frame_of_another_size_is_skipped_with_a_clear_reason(tmp_path, caplog):
    from tir.edge.sources.base import open_source

    cv2.imwrite(str(tmp_path / "a.png"), np.full((12, 16), 1000, np.uint16))
    cv2.imwrite(str(tmp_path / "b.png"), np.full((24, 32), 1000, np.uint16))
    cv2.imwrite(str(tmp_path / "c.png"), np.full((12, 16), 2000, np.uint16))
    source = open_source(f"file://{tmp_path}/?rate=max")
    with caplog.at_level(logging.WARNING):
        frames = [source.read(), source.read()]
    assert [f.raw.shape for f in frames] == [(12, 16), (12, 16)] and frames[1].raw[0, 0] == 2000
    assert source.stats()["corrupt_kinds"] == {"size": 1}
    assert "replay one size per folder" in caplog.text and "32x24 frame in a 16x12 replay" in caplog.text
    source.close()


@pytest.mark.parametrize("first_bits", [16, 8])
def test_a_frame_of_another_bit_depth_is_skipped_with_a_clear_reason(tmp_path, caplog, first_bits):
    # the first frame fixes the map (8-bit: fixed full scale 0..16320; 16-bit: robust percentiles
    # of counts): an 8-bit JPEG/PNG among 16-bit PNGs (or the reverse) would be normalised wrongly
    deep = np.full((12, 16), 30000, np.uint16)
    shallow = np.full((12, 16), 200, np.uint8)
    first, other = (deep, shallow) if first_bits == 16 else (shallow, deep)
    cv2.imwrite(str(tmp_path / "a.png"), first)
    cv2.imwrite(str(tmp_path / "b.png"), other)
    cv2.imwrite(str(tmp_path / "c.png"), first)
    source = open_source(f"file://{tmp_path}/?rate=max")
    with caplog.at_level(logging.WARNING):
        frames = read_all(source)
    assert len(frames) == 2 and all(f.meta["source_bits"] == first_bits for f in frames)
    assert source.stats()["corrupt_kinds"] == {"depth": 1} and source.stats()["corrupt"] == 1
    other_bits = 24 - first_bits
    article = {8: "an 8-bit", 16: "a 16-bit"}
    # the file named, and "a 16-bit frame", not "an 16-bit" (session 22's break-test)
    assert f"b.png: {article[other_bits]} frame in {article[first_bits]} replay is skipped" in caplog.text
    source.close()


def test_a_fifo_or_device_is_refused_at_once_instead_of_blocking(tmp_path):
    # OpenCV's open of a FIFO blocked tir run for good (SIGTERM could not stop it)
    fifo = tmp_path / "frames.fifo"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/null"):
        with pytest.raises(SourceError, match="is not a regular file or folder"):
            open_source(f"file://{path}")


def _within(seconds, call):
    """``call()``'s result, or AssertionError when it has not returned within ``seconds`` (it
    blocked: the thread is left behind, a daemon)."""
    import threading

    out = {}

    def run():
        try:
            out["value"] = call()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def _unblock(fifo):
    """Give a reader blocked on ``fifo`` its end of file (a writer that opens and closes)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass   # no reader waiting: nothing to unblock


def test_a_fifo_named_like_a_frame_in_a_folder_is_skipped_and_counted_not_read(tmp_path, caplog):
    """A FIFO named b.png among a folder's frames blocked the replay for good (np.fromfile
    waited for a writer): it is skipped with kind not_file, the other frames play."""
    frame = np.full((12, 16), 3000, np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), frame)
    os.mkfifo(tmp_path / "b.png")
    cv2.imwrite(str(tmp_path / "c.png"), frame)
    try:
        source = open_source(f"file://{tmp_path}/?rate=max")
        with caplog.at_level(logging.WARNING):
            frames = _within(10, lambda: read_all(source))
    finally:
        _unblock(tmp_path / "b.png")
    assert len(frames) == 2
    assert source.stats()["corrupt_kinds"] == {"not_file": 1}
    assert "b.png: a FIFO (named pipe), not a regular file; skipped" in caplog.text
    source.close()


def test_every_frame_reader_refuses_a_fifo_without_blocking(tmp_path):
    """The kind, not the one reader: tir run's image read, the cv2.imread stand-in (recorder
    read-back, collect, degradation specs, calibration) and tir eval's set reader."""
    from tir.edge.sources.file import imread_unchanged, read_image
    from tir.engines.training.datasets import DatasetError, read_counts

    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    try:
        with pytest.raises(FrameError, match="a FIFO") as caught:
            _within(10, lambda: read_image(str(fifo)))
        assert caught.value.kind == "not_file"
        assert _within(10, lambda: imread_unchanged(fifo)) is None
        with pytest.raises(DatasetError, match="a FIFO"):
            _within(10, lambda: read_counts(fifo, 16))
    finally:
        _unblock(fifo)


def test_a_false_colour_frame_is_skipped_grey_in_colour_is_read(tmp_path, caplog):
    """A palette rendering (its brightness is not the scene's temperature order) is dropped with
    kind 'colour' and a reason; grey stored in three channels is read as grey."""
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (12, 1))
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(ramp, cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(tmp_path / "b.png"), cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO))
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(ramp, cv2.COLOR_GRAY2BGR))
    source = open_source(f"file://{tmp_path}/?rate=max")
    with caplog.at_level(logging.WARNING):
        frames = read_all(source)
    assert len(frames) == 2 and np.array_equal(frames[0].raw, ramp.astype(np.uint16) << 6)
    assert source.stats()["corrupt_kinds"] == {"colour": 1}
    assert "b.png: a false-colour frame" in caplog.text
    source.close()


def test_a_frame_larger_than_any_camera_is_dropped_as_size_before_it_is_decoded(tmp_path, synthetic_frames,
                                                                                monkeypatch):
    """A 16-bit PNG of 20000x20000 zeros is a file under 1 MB that decoded to 800 MB and was then
    restored at full size; a side above the capture limit (8192 px) is dropped as 'size', a PNG
    from its header alone (sides of 9000 px with a tiny area here, so a regression stays cheap)."""
    from tir.edge.sources import file as file_source

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(synthetic_frames[:2]):
        cv2.imwrite(str(folder / f"f{i}.png"), image)
    cv2.imwrite(str(folder / "f0b.png"), np.zeros((2, 9000), np.uint16))      # sorts between f0 and f1
    cv2.imwrite(str(folder / "f0c.tiff"), np.zeros((9000, 1), np.uint16))     # measured after decoding
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(file_source.cv2, "imdecode", lambda data, flags: decoded.append(len(data)) or real(data, flags))
    source = open_source(f"file://{folder}?rate=max")
    frames = read_all(source)
    assert len(frames) == 2 and source.stats()["corrupt_kinds"] == {"size": 2}
    assert len(decoded) == 3  # f0, the TIFF, f1: the wide PNG was refused from its header
    np.save(tmp_path / "wide.npy", np.zeros((2, 1, 9000), np.uint16))
    with pytest.raises(SourceError, match=r"wide.npy: no readable frame in it \(2 unreadable\)"):
        open_source(f"file://{tmp_path / 'wide.npy'}?rate=max")


@pytest.mark.faults
def test_a_damaged_tiff_in_a_looped_folder_prints_nothing_from_libtiff(tmp_path, synthetic_frames, capfd):
    """Session 17: a cut or bit-flipped 16-bit TIFF in a ``loop=1`` folder printed libtiff's two or
    three ``[ERROR] TIFF_Error`` lines at every pass (160 lines in 8 s), past the rate-limited drop
    line; the decode is silent, the frame dropped and counted as corrupt."""
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, image in enumerate(synthetic_frames):
        assert cv2.imwrite(str(folder / f"f{i:03d}.tiff"), image)
    data = (folder / "f001.tiff").read_bytes()
    (folder / "f001b.tiff").write_bytes(data[: len(data) // 2])  # cut short: the directory is gone
    flipped = bytearray(data)
    for k in range(200, len(data) // 2, 997):
        flipped[k] ^= 0xFF  # damaged strip data
    (folder / "f002b.tiff").write_bytes(bytes(flipped))
    capfd.readouterr()
    source = file_source(f"file://{folder}?rate=max&loop=1")
    frames = [source.read() for _ in range(12)]
    assert all(f is not None for f in frames)
    assert source.stats()["corrupt"] == 6 and source.stats()["corrupt_kinds"] == {"corrupt": 6}
    err = capfd.readouterr().err
    assert "TIFF" not in err and "imdecode" not in err, err


def _jpeg_with_garbage_in_its_scan(image: np.ndarray) -> bytes:
    """``image`` as a JPEG with 32 bytes pushed into the middle of its entropy-coded scan (what a
    flipped or inserted run of bytes on an SD card does): libjpeg loses step and warns."""
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    middle = (start + len(data) - 2) // 2
    return data[:middle] + bytes(range(1, 33)) + data[middle:]


@pytest.mark.faults
def test_a_damaged_jpeg_in_a_looped_folder_is_counted_not_printed_by_libjpeg(tmp_path, synthetic_frames, capfd):
    """Session 18: libjpeg prints its own warnings with fprintf(stderr) (``Corrupt JPEG data: 3
    extraneous bytes before marker 0xd9``), past OpenCV's log level: a looped folder holding one
    damaged JPEG printed it at every pass (90 lines in 6 s of ``tir run``) while the frame, decoded
    with guessed blocks, went on as a good one (``corrupt`` 0). Now the warning makes it a corrupt
    frame, dropped and counted, nothing on stderr; a cut JPEG likewise; a good JPEG decodes to the
    same bytes as ``cv2.imdecode``."""
    from tir.edge.sources.file import read_image

    folder = tmp_path / "seq"
    folder.mkdir()
    images = [(frame >> 6).astype(np.uint8) for frame in synthetic_frames]
    for i, image in enumerate(images[:3]):
        assert cv2.imwrite(str(folder / f"f{i:03d}.jpg"), image)
    (folder / "f001b.jpg").write_bytes(_jpeg_with_garbage_in_its_scan(images[3]))
    good = (folder / "f000.jpg").read_bytes()
    (folder / "f002b.jpg").write_bytes(good[: len(good) * 2 // 3])  # cut short: no EOI
    capfd.readouterr()
    with pytest.raises(FrameError, match=r"f001b\.jpg: damaged JPEG \(libjpeg: Corrupt JPEG data: ") as refused:
        read_image(str(folder / "f001b.jpg"))
    assert refused.value.kind == "corrupt"
    decoded = []
    for i in range(3):
        path = str(folder / f"f{i:03d}.jpg")
        expected = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        decoded.append(read_image(path))
        assert decoded[i].dtype == expected.dtype and decoded[i].tobytes() == expected.tobytes()
    source = file_source(f"file://{folder}?rate=max&loop=1")
    frames = [source.read() for _ in range(9)]  # three passes; the third ends before its f002b
    assert all(f is not None for f in frames)
    assert source.stats()["corrupt"] == 5 and source.stats()["corrupt_kinds"] == {"corrupt": 5}
    assert [f.raw.tobytes() for f in frames[:3]] == [(im.astype(np.uint16) << 6).tobytes() for im in decoded]
    err = capfd.readouterr().err
    assert "JPEG" not in err and "extraneous" not in err, err


@pytest.mark.faults
def test_a_damaged_mjpeg_video_in_a_loop_is_counted_not_printed_by_ffmpeg(tmp_path, synthetic_frames, capfd):
    """Session 18: FFmpeg prints its decoder's errors itself (``[mjpeg @ 0x…] mjpeg_decode_dc: bad
    vlc``, ``error count: …``): a looped MJPEG AVI with three damaged frames printed 48 lines in 5 s
    of ``tir run`` and its concealed frames went on as good ones (``corrupt`` 0). Now each such
    frame is dropped and counted, nothing on stderr; the intact video reads as before."""
    images = [(frame >> 6).astype(np.uint8) for frame in synthetic_frames]
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120), False)
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write MJPEG AVI")
    for i in range(8):
        writer.write(images[i % 4])
    writer.release()
    data = bytearray(path.read_bytes())
    scans = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xda"]
    assert len(scans) == 8
    for start in scans[2:4]:  # frames 2 and 3: their entropy-coded data scrambled
        for k in range(start + 60, start + 90):
            data[k] ^= 0x5A
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    intact = cv2.VideoCapture(str(path))
    expected = [intact.read()[1] for _ in range(8)]
    intact.release()
    capfd.readouterr()
    source = file_source(f"file://{path}?rate=max&loop=1")
    frames = [source.read() for _ in range(8)]
    assert source.stats()["corrupt"] == 0
    assert [f.raw.tobytes() for f in frames] == [file_source_counts(image) for image in expected]
    source.close()
    source = file_source(f"file://{damaged}?rate=max&loop=1")
    frames = [source.read() for _ in range(12)]  # two passes: 6 + 6 frames
    source.close()
    assert all(f is not None for f in frames)
    assert source.stats()["corrupt"] == 4 and source.stats()["corrupt_kinds"] == {"corrupt": 4}
    err = capfd.readouterr().err
    assert "mjpeg" not in err and "@ 0x" not in err, err


def file_source_counts(image: np.ndarray) -> bytes:
    """The counts the file source makes of an 8-bit BGR video frame: grey, << 6."""
    from tir.edge.sources.file import to_counts

    return to_counts(image, "frame").tobytes()


def test_native_stderr_capture_keeps_what_it_claims_and_passes_the_rest_on(capfd):
    """:func:`native_stderr_captured`: lines written to descriptor 2 inside the block that the claim
    accepts are returned, the others reach stderr after the block, and descriptor 2 is back
    afterwards, also when the block raises."""
    from tir.edge.logs import native_stderr_captured

    capfd.readouterr()
    with native_stderr_captured(lambda line: line.startswith("Corrupt JPEG")) as said:
        os.write(2, b"Corrupt JPEG data: 6 extraneous bytes before marker 0xd9\n")
        os.write(2, b"someone else's line\n")
    assert said == ["Corrupt JPEG data: 6 extraneous bytes before marker 0xd9"]
    with pytest.raises(RuntimeError):
        with native_stderr_captured(lambda line: True) as said:
            os.write(2, b"taken\n")
            raise RuntimeError("decode failed")
    assert said == ["taken"]
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "someone else's line\nafter\n"


@pytest.mark.faults
def test_an_image_whose_header_opencv_refuses_is_dropped_not_the_end_of_the_run(tmp_path, synthetic_frames):
    """Session 17: a BMP whose header claims a width of 2**30 px (one flipped header field) made
    cv2.imdecode raise cv2.error instead of returning None; it escaped the file source and ended
    ``tir run`` with "stage read failed", exit 1, after the frames before it. It is a damaged
    frame like any other: dropped, counted as corrupt, the replay goes on."""
    import struct

    from tir.edge.pipeline import Pipeline
    from tir.edge.sources.file import read_image

    folder = tmp_path / "seq"
    folder.mkdir()
    for i, image in enumerate(synthetic_frames):
        data = bytearray(cv2.imencode(".bmp", (image >> 6).astype(np.uint8))[1].tobytes())
        if i == 2:
            data[18:22] = struct.pack("<i", 2 ** 30)   # BITMAPINFOHEADER biWidth
        (folder / f"f{i:03d}.bmp").write_bytes(bytes(data))
    with pytest.raises(FrameError, match=r"f002\.bmp: cannot be decoded \(OpenCV: .*\)") as refused:
        read_image(str(folder / "f002.bmp"))
    assert refused.value.kind == "corrupt"
    snap = Pipeline(open_source(f"file://{folder}?rate=max"), None, []).run()
    assert snap["frames"] == 3 and snap["corrupt"] == {"corrupt": 1}
    assert snap["errors"] == {} and snap["ended"] == "end of stream"
