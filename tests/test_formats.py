import numpy as np
import pytest

from tir.edge.camera.formats import (CAMERAS, FORMATS, as_uint16_image, camera_for, format_for,
                                     get_format)
from tir.edge.frame import FrameError


def counts(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, size=(h, w), dtype=np.uint16)


def test_usb_ids_from_the_camera_table():
    assert format_for(0x09CB, 0x4007).name == "boson"
    assert format_for("1e4e", "0100").name == "lepton"
    assert format_for("0BDA", "5830").name == "tc001"
    assert format_for(0x046D, 0x0825) is None  # a webcam
    assert camera_for(0x09CB, 0x4007).name == "FLIR Boson"
    assert {c.format for c in CAMERAS} <= set(FORMATS)


def test_get_format_lists_known_names():
    assert get_format("TC001") is FORMATS["tc001"]
    with pytest.raises(ValueError, match="y16, boson, lepton, tc001"):
        get_format("mjpeg")


def test_y16_boson_all_buffer_shapes_decode_to_the_same_frame():
    fmt = get_format("boson")
    assert fmt.fourcc == "Y16 " and fmt.to_kelvin(np.zeros((2, 2), np.uint16)) is None
    for w, h in ((320, 256), (640, 512)):
        image = counts(h, w)
        little_endian_bytes = image.astype("<u2").tobytes()
        buffers = [
            image,  # what a good OpenCV returns
            image.reshape(1, -1),  # flattened 1xN (opencv #27166)
            image.reshape(-1),
            np.frombuffer(little_endian_bytes, np.uint8).reshape(1, -1),  # raw bytes as a row
            np.frombuffer(little_endian_bytes, np.uint8).reshape(h, w, 2),
        ]
        for buffer in buffers:
            out = fmt.decode(buffer, capture_size=(w, h))
            assert out.dtype == np.uint16 and out.shape == (h, w)
            np.testing.assert_array_equal(out, image)


def test_y16_rejects_8bit_colour_frames():
    with pytest.raises(FrameError) as info:
        get_format("y16").decode(np.zeros((512, 640, 3), np.uint8), capture_size=(640, 512))
    assert info.value.kind == "shape" and "16-bit" in str(info.value)
    with pytest.raises(FrameError):
        get_format("y16").decode(np.zeros(100, np.uint16))  # 1-D without a known size


def test_byte_order_is_little_endian():
    raw = np.array([0x34, 0x12, 0xCD, 0xAB], np.uint8)  # two pixels: 0x1234, 0xABCD
    np.testing.assert_array_equal(as_uint16_image(raw, (2, 1)), [[0x1234, 0xABCD]])


def test_lepton_tlinear_with_and_without_telemetry_rows():
    fmt = get_format("lepton")
    scene_k = np.full((120, 160), 300.0)
    scene_k[10:20, 30:40] = 310.25
    image = np.round(scene_k * 100).astype(np.uint16)  # TLinear 0.01 K
    telemetry = np.arange(320, dtype=np.uint16).reshape(2, 160)
    with_footer = np.vstack([image, telemetry])
    plain, meta = fmt.unpack(image, capture_size=(160, 120))
    np.testing.assert_array_equal(plain, image)
    assert meta == {}
    for buffer in (with_footer, with_footer.reshape(1, -1)):
        out, meta = fmt.unpack(buffer, capture_size=(160, 122))
        np.testing.assert_array_equal(out, image)
        np.testing.assert_array_equal(meta["telemetry"], telemetry)
    kelvin = fmt.to_kelvin(out)
    assert kelvin[0, 0] == pytest.approx(300.0) and kelvin[15, 35] == pytest.approx(310.25)
    assert kelvin[15, 35] - 273.15 == pytest.approx(37.1, abs=1e-4)  # deg C = raw/100 - 273.15
    with pytest.raises(FrameError, match="telemetry"):
        fmt.decode(np.zeros((100, 160), np.uint16))


def test_tc001_lower_half_is_raw_in_64ths_of_a_kelvin():
    fmt = get_format("tc001")
    assert fmt.fourcc == "YUYV" and fmt.capture_size == (256, 384) and fmt.frame_size == (256, 192)
    raw = np.full((192, 256), 293 * 64 + 10, np.uint16)  # 293.15625 K
    raw[100, 50] = 373 * 64 + 10  # 373.15625 K = 100.00625 deg C
    raw[5, 7] = 253 * 64 + 11  # -19.98 deg C, one step (1/64 K) above the next level
    raw[6, 7] = 0xFF01  # hi and lo bytes both non-zero and different
    buffer = np.empty((384, 256, 2), np.uint8)
    buffer[:192] = 128  # vendor AGC image: a flat grey YUYV half
    buffer[192:, :, 0] = raw & 0xFF  # lo byte first
    buffer[192:, :, 1] = raw >> 8  # raw = lo + 256 * hi
    for candidate in (buffer, buffer.reshape(1, -1)):
        out = fmt.decode(candidate, capture_size=(256, 384))
        assert out.shape == (192, 256) and out.dtype == np.uint16
        np.testing.assert_array_equal(out, raw)
    kelvin = fmt.to_kelvin(out)
    assert kelvin.dtype == np.float32
    assert kelvin[100, 50] == 373.15625 and kelvin[0, 0] == 293.15625  # exact in float32
    assert kelvin[5, 7] == 253 + 11 / 64 and kelvin[6, 7] == 0xFF01 / 64
    assert kelvin[100, 50] - 273.15 == pytest.approx(100.00625, abs=1e-4)  # deg C = raw/64 - 273.15
    with pytest.raises(FrameError, match="YUYV"):
        fmt.decode(np.zeros((192, 256, 2), np.uint8))  # the image-only 256x192 mode
