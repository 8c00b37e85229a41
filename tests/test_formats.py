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
    assert all(e.load() is FORMATS[e.name] and e.load().name == e.name for e in CAMERAS)  # one descriptor each
    assert camera_for(0x09CB, 0x4007).protocol == "boson" and camera_for("1e4e", "0100").protocol is None


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
    assert meta == {"layout": "lepton 3.x", "kelvin_per_count": 0.01}
    for buffer in (with_footer, with_footer.reshape(1, -1)):
        out, meta = fmt.unpack(buffer, capture_size=(160, 122))
        np.testing.assert_array_equal(out, image)
        np.testing.assert_array_equal(meta["telemetry"], telemetry)
        assert meta["layout"] == "lepton 3.x + telemetry"
    kelvin = fmt.to_kelvin(out)
    assert kelvin[0, 0] == pytest.approx(300.0) and kelvin[15, 35] == pytest.approx(310.25)
    assert kelvin[15, 35] - 273.15 == pytest.approx(37.1, abs=1e-4)  # deg C = raw/100 - 273.15
    with pytest.raises(FrameError, match="160x122"):  # flattened, of no size anyone reported
        fmt.decode(np.zeros(100 * 160, np.uint16))


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


def lepton_telemetry(words_per_row, rows, frame_counter=123456, fpa_k100=30815):
    """Telemetry rows with row A filled as the Lepton datasheet lays it out (32-bit values
    least significant word first)."""
    t = np.zeros(words_per_row * rows, np.uint16)
    t[0] = 14  # revision
    t[1], t[2] = 5000 & 0xFFFF, 5000 >> 16  # time counter, ms
    t[20], t[21] = frame_counter & 0xFFFF, frame_counter >> 16
    t[22] = 29999  # frame mean
    t[24] = fpa_k100  # FPA temperature K x 100
    t[29] = 30790  # FPA temperature at the last FFC
    t[30], t[31] = 70000 & 0xFFFF, 70000 >> 16
    return t.reshape(rows, words_per_row)


@pytest.mark.parametrize("position", ["bottom", "top"])
def test_lepton_2x_80x60_and_80x63_with_3_telemetry_rows(position):
    fmt = get_format("lepton") if position == "bottom" else get_format("lepton").with_telemetry("top")
    image = np.full((60, 80), 29815, np.uint16)
    image[30, 40] = 31015  # 310.15 K = 37.00 deg C
    telemetry = lepton_telemetry(80, 3)
    capture = np.vstack([image, telemetry] if position == "bottom" else [telemetry, image])
    plain, meta = fmt.unpack(image, capture_size=(80, 60))
    assert plain.shape == (60, 80) and meta["layout"] == "lepton 2.x" and meta["kelvin_per_count"] == 0.01
    assert fmt.to_kelvin(plain)[30, 40] - np.float32(273.15) == pytest.approx(37.00, abs=1e-3)
    # proper 2-D, flattened 1xN with the reported size, raw bytes: all the same frame
    buffers = [capture, capture.reshape(1, -1),
               np.frombuffer(capture.astype("<u2").tobytes(), np.uint8).reshape(1, -1)]
    for buffer in buffers:
        out, meta = fmt.unpack(buffer, capture_size=(80, 63))
        np.testing.assert_array_equal(out, image)
        np.testing.assert_array_equal(meta["telemetry"], telemetry)
        assert meta["layout"] == "lepton 2.x + telemetry"
        assert meta["telemetry_fields"] == {
            "revision": 14, "time_counter_ms": 5000, "frame_counter": 123456, "frame_mean": 29999,
            "fpa_temp_k": 308.15, "fpa_temp_last_ffc_k": 307.9, "time_counter_last_ffc_ms": 70000}
    # a flattened buffer with a wrong (or no) reported size: the word count picks the layout
    out, meta = fmt.unpack(capture.reshape(-1), capture_size=(160, 120))
    np.testing.assert_array_equal(out, image)
    with pytest.raises(ValueError, match="telemetry=top"):
        get_format("lepton").with_telemetry("middle")


def test_lepton_3x_telemetry_header_rows_are_dropped_from_the_top():
    fmt = get_format("lepton").with_telemetry("top")
    image = np.random.default_rng(3).integers(27000, 32000, (120, 160), dtype=np.uint16)
    telemetry = lepton_telemetry(160, 2, frame_counter=7)
    out, meta = fmt.unpack(np.vstack([telemetry, image]), capture_size=(160, 122))
    np.testing.assert_array_equal(out, image)
    assert meta["telemetry_fields"]["frame_counter"] == 7 and meta["telemetry_fields"]["fpa_temp_k"] == 308.15


@pytest.mark.parametrize("name, capture, frame, scale", [
    ("boson", (320, 256), (256, 320), None),
    ("boson", (640, 512), (512, 640), None),
    ("boson", (1024, 768), (768, 1024), None),  # not in the table: generic, whole frame
    ("lepton", (160, 120), (120, 160), 0.01),
    ("lepton", (80, 60), (60, 80), 0.01),
    ("lepton", (120, 90), (90, 120), 0.01),  # unknown Lepton size: generic, family scale
    ("y16", (384, 288), (288, 384), None),
    ("y16", (80, 63), (63, 80), None),  # generic Y16 knows no telemetry
])
def test_y16_geometry_comes_from_the_device_for_every_size(name, capture, frame, scale):
    fmt = get_format(name)
    w, h = capture
    image = counts(h, w, seed=w)
    for buffer in (image, image.reshape(1, -1)):
        out, meta = fmt.unpack(buffer, capture_size=capture)
        assert out.shape == frame and meta["kelvin_per_count"] == scale
        np.testing.assert_array_equal(out, image[:frame[0]])


def test_infiray_stacked_halves_for_other_sizes_and_refused_modes():
    fmt = get_format("tc001")
    raw = counts(288, 384, seed=5)  # a 384x288 module: capture 384x576
    yuyv = np.zeros((576, 384, 2), np.uint8)
    yuyv[288:] = raw.astype("<u2").view(np.uint8).reshape(288, 384, 2)
    for buffer in (yuyv, yuyv.reshape(1, -1)):
        out, meta = fmt.unpack(buffer, capture_size=(384, 576))
        np.testing.assert_array_equal(out, raw)
        assert meta["kelvin_per_count"] == 1 / 64 and "stacked" in meta["layout"]
    with pytest.raises(FrameError, match="not the stacked image"):
        fmt.decode(np.zeros((300, 256, 2), np.uint8))
    with pytest.raises(FrameError, match="size=256x384"):
        fmt.decode(np.zeros((192, 256, 2), np.uint8).reshape(1, -1), capture_size=(256, 192))
