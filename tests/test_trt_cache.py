"""calibration/trt_cache.py: TensorRT calibration cache text format and ORT conversion."""
import numpy as np
import pytest

from tir.calibration.trt_cache import (CalibrationCacheError, TrtCalibrationCache, convert_ort_cache,
                                       from_ort_tensors, hex_to_scale, read_ort_calibration_cache, scale_to_hex,
                                       trt_version_tag)


def test_known_hex_values():
    # values from NVIDIA's sampleINT8 cache quoted in tensorrt_int8.md §1.2
    assert hex_to_scale("3c008912") == pytest.approx(0.0078452, rel=1e-4)
    assert hex_to_scale("4000889d") == pytest.approx(2.00834, rel=1e-5)
    assert scale_to_hex(hex_to_scale("3c008912")) == "3c008912"


def test_version_tags():
    assert trt_version_tag("8.5.2") == 8502
    assert trt_version_tag("8.5.2.2") == 8502
    assert trt_version_tag("10.3.0") == 100300
    assert trt_version_tag("7.0.0") == 7000


def test_round_trip(tmp_path):
    amax = {"input": 1.0, "/body/conv1/Conv_output_0": 3.25, "output": 0.5}
    cache = TrtCalibrationCache.from_amax(amax, "10.3.0")
    path = cache.write(tmp_path / "calib.cache")
    text = open(path).read().splitlines()
    assert text[0] == "TRT-100300-EntropyCalibration2"
    assert text[1].startswith("input: ") and len(text[1].split(": ")[1]) == 8
    back = TrtCalibrationCache.read(path)
    assert back.version_tag == 100300 and back.algorithm == "EntropyCalibration2"
    assert list(back.scales) == list(amax)
    for name, value in amax.items():
        assert back.amax[name] == pytest.approx(value, rel=1e-6)
        assert back.scales[name] == pytest.approx(value / 127.0, rel=1e-6)


def test_reads_native_sample():
    data = b"TRT-7000-EntropyCalibration2\ndata: 3c008912\nconv1: 3c88edfc\n"
    cache = TrtCalibrationCache.from_bytes(data)
    assert cache.version_tag == 7000 and set(cache.scales) == {"data", "conv1"}
    assert cache.amax["data"] == pytest.approx(0.996, abs=1e-3)


def test_rejects_bad_files(tmp_path):
    with pytest.raises(CalibrationCacheError, match="TRT-<version>-<Algorithm>"):
        TrtCalibrationCache.from_bytes(b"input 1.0\n")
    with pytest.raises(CalibrationCacheError, match=":3: expected"):
        TrtCalibrationCache.from_bytes(b"TRT-8502-EntropyCalibration2\na: 3c008912\nb: 1.5e-3\n")
    with pytest.raises(CalibrationCacheError, match="run `tir calibrate`"):
        TrtCalibrationCache.read(tmp_path / "missing.cache")
    with pytest.raises(CalibrationCacheError, match="finite"):
        TrtCalibrationCache.from_amax({"x": float("nan")})


def test_convert_from_ort_cache(tmp_path):
    ort = tmp_path / "calibration.cache"
    ort.write_text("input 1.0\n/conv/Conv_output_0 2.5\n")
    cache = convert_ort_cache(ort, tmp_path / "trt.cache", version="8.5.2")
    assert cache.header == "TRT-8502-EntropyCalibration2"
    assert TrtCalibrationCache.read(tmp_path / "trt.cache").amax["/conv/Conv_output_0"] == pytest.approx(2.5)


def test_from_ort_tensors_takes_abs_max():
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    td = TensorsData(CalibrationMethod.MinMax, {
        "a": TensorData(lowest=np.float32(-3.0), highest=np.float32(1.0)),
        "b": TensorData(lowest=np.float32(0.0), highest=np.float32(2.0)),
    })
    assert from_ort_tensors(td) == {"a": 3.0, "b": 2.0}


@pytest.mark.parametrize("value", ["7fc00000", "ffffffff", "7f800000", "bf800000", "80000000", ""])
def test_a_tampered_scale_is_refused_as_from_amax_refuses_it(value):
    """NaN, infinite and negative bit patterns (and an empty value, read as 0) parsed as scales, so
    a damaged or tampered cache gave TensorRT a meaningless dynamic range; from_amax already
    refused those amax values when writing."""
    data = f"TRT-8502-EntropyCalibration2\ninput: 3c008912\nconv1: {value}\n".encode()
    with pytest.raises(CalibrationCacheError, match=":3: "):
        TrtCalibrationCache.from_bytes(data, "cache")


@pytest.mark.parametrize("content", [b"input 0.5\nconv1 nan\n", b"input 0.5\nconv1 inf\n", b"input \xff\xfe 0.5\n"])
def test_an_ort_table_with_a_non_finite_range_or_not_text_is_refused(tmp_path, content):
    path = tmp_path / "calibration.cache"
    path.write_bytes(content)
    with pytest.raises(CalibrationCacheError):
        read_ort_calibration_cache(path)
