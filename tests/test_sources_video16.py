"""16-bit video replay (issue 10 item 16): real files written here by OpenCV's own FFmpeg writer
or by hand (Y4M), read back through ``file://`` with their stored uint16 counts."""
import cv2
import numpy as np
import pytest

from tir.edge.sources import SourceError, open_source
from tir.edge.sources.file import EndOfStream, _VideoReader

# the issue's 3x3 example: values across the whole 16-bit range, both bytes non-zero
EXAMPLE = np.array([[4660, 39612, 40000], [1000, 16383, 16384], [65535, 0, 300]], np.uint16)


def frames_16bit(n=3, tile=(4, 4)):
    """n frames of the example tiled to 12x12 (codecs dislike 3x3), each one count apart."""
    base = np.tile(EXAMPLE, tile)
    return [np.where(base < 65535, base + i, base).astype(np.uint16) for i in range(n)]


def read_all(source):
    out = []
    while True:
        try:
            frame = source.read(timeout=1.0)
        except EndOfStream:
            return out
        if frame is not None:
            out.append(frame)


def write_y4m(path, frames, colorspace="mono16"):
    """YUV4MPEG2 by hand: a text header line, then per frame 'FRAME\\n' and the raw plane
    (format: https://wiki.multimedia.cx/index.php/YUV4MPEG2; ``Cmono16`` is FFmpeg's 16-bit
    grey, little-endian samples, ``Cmono`` 8-bit grey)."""
    h, w = frames[0].shape
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C{colorspace}\n".encode("ascii"))
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(frame.astype("<u2").tobytes() if frame.dtype == np.uint16 else frame.tobytes())


def write_opencv_16bit(path, fourcc, frames):
    h, w = frames[0].shape
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), 10.0, (w, h),
                             [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0])
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write 16-bit {fourcc!r} to {path.suffix}")
    for frame in frames:
        writer.write(frame)
    writer.release()


def assert_keeps_counts(path, frames, mode):
    assert _VideoReader(str(path)).mode == mode
    source = open_source(f"file://{path}?rate=max")
    got = read_all(source)
    assert len(got) == len(frames)
    for frame, expected in zip(got, frames):
        assert frame.raw.dtype == np.uint16
        np.testing.assert_array_equal(frame.raw, expected)
        assert frame.meta["bits"] == 16 and frame.meta["source_bits"] == 16


def test_y4m_mono16_keeps_the_issue_example_exactly(tmp_path):
    path = tmp_path / "clip.y4m"
    frames = [EXAMPLE, EXAMPLE[::-1].copy()]
    write_y4m(path, frames)
    assert_keeps_counts(path, frames, "gray16")
    first = open_source(f"file://{path}").read()
    assert first.raw.tolist() == [[4660, 39612, 40000], [1000, 16383, 16384], [65535, 0, 300]]


@pytest.mark.parametrize("suffix", [".mkv", ".avi", ".nut"])
def test_ffv1_gray16_keeps_counts(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    frames = frames_16bit()
    write_opencv_16bit(path, "FFV1", frames)
    assert_keeps_counts(path, frames, "gray16")


@pytest.mark.parametrize("suffix", [".mkv", ".mov"])
def test_png_coded_gray16be_video_keeps_counts(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    frames = frames_16bit()
    write_opencv_16bit(path, "png ", frames)
    assert_keeps_counts(path, frames, "png16")


def test_raw_gray16be_video_keeps_counts(tmp_path):
    path = tmp_path / "clip.mov"
    frames = frames_16bit()
    # the writer copies our (little-endian) buffer into a stream labelled gray16be ('b16g'),
    # so hand it the byte-swapped frames: the file then stores our values big-endian
    write_opencv_16bit(path, "b16g", [f.byteswap() for f in frames])
    assert_keeps_counts(path, frames, "raw16be")


def test_rewind_and_loop_keep_16_bits(tmp_path):
    path = tmp_path / "clip.mkv"
    frames = frames_16bit(2)
    write_opencv_16bit(path, "FFV1", frames)
    source = open_source(f"file://{path}?rate=max&loop=1")
    got = [source.read() for _ in range(5)]
    for i, frame in enumerate(got):
        np.testing.assert_array_equal(frame.raw, frames[i % 2])
    assert source.stats()["loops"] == 2


def test_8bit_video_stays_8bit(tmp_path):
    path = tmp_path / "grey.y4m"
    grey = (np.arange(144, dtype=np.uint8).reshape(12, 12) + 50)
    write_y4m(path, [grey], "mono")
    assert _VideoReader(str(path)).mode == "8bit"
    frame = open_source(f"file://{path}").read()
    np.testing.assert_array_equal(frame.raw, grey.astype(np.uint16) << 6)
    assert frame.meta["source_bits"] == 8 and frame.meta["bits"] == 14


def test_16bit_video_that_opencv_would_cut_to_8_bits_fails_clearly(tmp_path, monkeypatch):
    path = tmp_path / "clip.y4m"
    write_y4m(path, [EXAMPLE])
    real = cv2.VideoCapture

    class EightBitCapture:  # an OpenCV that ignores CONVERT_RGB=0 (as some backends do)
        def __init__(self, *args):
            self.cap = real(args[0])

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", EightBitCapture)
    with pytest.raises(SourceError, match="would lose its counts.*ffmpeg -i IN -pix_fmt gray16le"):
        open_source(f"file://{path}")
