"""calibration/data.py: calibration sets from the synthetic camera, folders and recordings."""
import cv2
import numpy as np
import pytest

from tir.calibration.data import CalibrationDataError, FrameDataReader, calibration_set


def test_synthetic_is_deterministic_varied_and_normalised():
    a = calibration_set("synthetic", 6, (64, 48), seed=1)
    b = calibration_set("synthetic", 6, (64, 48), seed=1)
    assert len(a) == 6 and a[0].shape == (48, 64) and a[0].dtype == np.float32
    np.testing.assert_array_equal(a[3], b[3])
    assert 0.0 <= a[2].min() and a[2].max() <= 1.0
    assert not np.array_equal(a[0], a[1])  # different scenes / times
    held = calibration_set("synthetic", 2, (64, 48), seed=1, holdout=True)
    assert not np.array_equal(held[0], a[0])
    x, clean = held.pair(0)
    assert held.has_references and x.shape == clean.shape == (48, 64)
    with pytest.raises(IndexError):
        a[6]


def test_folder_of_16bit_pngs_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(9):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), rng.integers(7000, 9000, (24, 32), dtype=np.uint16))
    np.save(tmp_path / "rec.npy", rng.integers(7000, 9000, (11, 24, 32), dtype=np.uint16))
    calib = calibration_set(str(tmp_path), 500, (32, 24))
    held = calibration_set(str(tmp_path), 500, (32, 24), holdout=True)
    assert len(calib) + len(held) == 20 and len(held) == 2  # every 10th frame is held out
    frame = calib[0]
    assert frame.shape == (24, 32) and 0.0 <= frame.min() and frame.max() <= 1.0 and frame.std() > 0.1
    assert not held.has_references
    resized = calibration_set(str(tmp_path), 4, (16, 12))
    assert len(resized) == 4 and resized[3].shape == (12, 16)


def test_bad_sources_name_what_exists(tmp_path):
    with pytest.raises(CalibrationDataError, match="synthetic"):
        calibration_set("nowhere", 4, (32, 24))
    with pytest.raises(CalibrationDataError, match="no frames"):
        calibration_set(str(tmp_path), 4, (32, 24))


def test_reader_feeds_onnxruntime_shape():
    from onnxruntime.quantization import CalibrationDataReader

    reader = FrameDataReader(calibration_set("synthetic", 5, (32, 24)), batch_size=2)
    assert isinstance(reader, CalibrationDataReader) and len(reader) == 3
    shapes = [item["input"].shape for item in reader]
    assert shapes == [(2, 1, 24, 32), (2, 1, 24, 32), (1, 1, 24, 32)]
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["input"].shape == (2, 1, 24, 32)


def test_tir_recording_folder_raw_frames(tmp_path):
    from tir.edge.frame import Frame
    from tir.edge.outputs.recorder import Recorder, read_recording
    from tir.edge.uri import parse_uri

    rng = np.random.default_rng(1)
    rec = Recorder(parse_uri(f"file://{tmp_path / 'rec'}?what=raw&preview=0")).start()
    for k in range(12):
        rec.write(Frame(raw=rng.integers(7000, 9000, (24, 32), dtype=np.uint16), seq=k, t_capture=float(k)))
    rec.close()
    raw, _ = read_recording(tmp_path / "rec", "raw")
    calib = calibration_set(str(tmp_path), 500, (32, 24))
    held = calibration_set(str(tmp_path), 500, (32, 24), holdout=True)
    assert len(calib) == 11 and len(held) == 1  # only the indexed frames, no double counting
    from tir.calibration.data import normalise_counts

    np.testing.assert_array_equal(calib[0], normalise_counts(raw[0]))


@pytest.mark.parametrize("write", [
    lambda p: np.save(p, np.array([{"frame": 1}], dtype=object), allow_pickle=True),  # needs unpickling
    lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"garbage"),                  # damaged header
])
def test_unreadable_npy_in_a_folder_is_a_calibration_data_error(tmp_path, write):
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), rng.integers(7000, 9000, (24, 32), dtype=np.uint16))
    write(tmp_path / "bad.npy")
    with pytest.raises(CalibrationDataError, match=r"bad\.npy: not a readable \.npy array"):
        calibration_set(str(tmp_path), 4, (32, 24))


def _recording(folder, n=6, shape=(24, 32)):
    """A raw .u16 recording of ``n`` frames written by the recorder; returns the frames sent."""
    from tir.edge.frame import Frame
    from tir.edge.outputs.recorder import Recorder
    from tir.edge.uri import parse_uri

    rng = np.random.default_rng(3)
    sent = [rng.integers(7000, 9000, shape, dtype=np.uint16) for _ in range(n)]
    rec = Recorder(parse_uri(f"file://{folder}?what=raw&preview=0")).start()
    for k, raw in enumerate(sent):
        rec.write(Frame(raw=raw, seq=k, t_capture=float(k)))
    rec.close()
    return sent


def test_a_recording_rolled_into_segments_is_read_whole(tmp_path):
    """Session 18: at the largest file allowed (FAT32's 4 GiB) the recorder goes on in
    ``raw.<B>.u16`` (B the stream offset of its first byte); the calibration reader opened only
    ``raw.u16`` and failed with "ends inside frame" on every later frame."""
    from tir.calibration.data import _read_recorded, _recording_rows

    folder = tmp_path / "rec"
    sent = _recording(folder)
    stream = (folder / "raw.u16").read_bytes()
    cut = 4 * sent[0].nbytes  # four frames stay in raw.u16, the rest in the segment, as the recorder rolls
    (folder / "raw.u16").write_bytes(stream[:cut])
    (folder / f"raw.{cut}.u16").write_bytes(stream[cut:])
    rows = _recording_rows(folder)
    got = [_read_recorded(folder, row) for row in rows]
    assert len(got) == len(sent)
    for a, b in zip(got, sent):
        np.testing.assert_array_equal(a, b)


def test_a_recording_index_naming_an_image_outside_the_recording_is_refused(tmp_path):
    """Session 18: frames.csv's PNG names were read unchecked, so a tampered index naming
    ``../x.png`` read any image on the machine as a calibration frame."""
    from tir.calibration.data import _read_recorded

    folder = tmp_path / "rec"
    _recording(folder, n=1)
    cv2.imwrite(str(tmp_path / "x.png"), np.full((24, 32), 8000, np.uint16))
    row = {"seq": "0", "raw": "../x.png", "height": "24", "width": "32", "restored": ""}
    with pytest.raises(CalibrationDataError, match=r"not one the recorder writes"):
        _read_recorded(folder, row)
    row["raw"] = "-5"
    with pytest.raises(CalibrationDataError, match=r"not a byte offset"):
        _read_recorded(folder, row)
