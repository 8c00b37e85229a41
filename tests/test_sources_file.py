import logging

import cv2
import numpy as np
import pytest

from tir.edge.frame import check_frame
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
    cv2.imwrite(str(folder / "f002b.png"), np.zeros((60, 80), np.uint16))  # wrong shape
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
    assert any("(shape)" in r.getMessage() for r in caplog.records)


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
    with pytest.raises(SourceError) as info:
        open_source(f"file://{tmp_path}/clip_b.npy")
    message = str(info.value)
    assert "clip_b.npy" in message and "clip_a.npy" in message and "frames" in message
    with pytest.raises(SourceError, match="no images"):
        open_source(f"file://{tmp_path}/frames")


def test_end_of_stream_without_loop_and_fps_option(tmp_path, synthetic_frames):
    np.save(tmp_path / "s.npy", synthetic_frames[:2])
    source = open_source(f"file://{tmp_path}/s.npy?fps=50")
    assert source.fps == 50.0 and not source.live
    assert source.read() is not None and source.read() is not None
    with pytest.raises(EndOfStream, match="loop=1"):
        source.read()
