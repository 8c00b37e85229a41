"""engines/resampling.py: a frame that is an enlargement (a digital zoom) told from the camera's own
sampling, from a blur after the enlargement and from a block codec's 8×8 traces (K22)."""
import cv2
import numpy as np
import pytest

from tir.engines.resampling import FACTORS, MIN_SIDE, difference_profile, enlargement, periodic_z, spectral_period


def sensor(h, w, seed, noise=3.0):
    """A sensor's 8-bit frame (grey levels, float64): warm discs on a gradient, a smooth texture
    (σ 2 px), and the sensor's own white noise of ``noise`` grey levels, rounded."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x = 70.0 + 50.0 * yy / h
    for cx, cy, r in zip(rng.uniform(0, w, 12), rng.uniform(0, h, 12), rng.uniform(2, 12, 12)):
        x[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(120, 230)
    x += 4.0 * cv2.GaussianBlur(rng.normal(0, 1, (h, w)), (0, 0), 2.0)
    return np.clip(np.rint(x + rng.normal(0, noise, (h, w))), 0, 255)


def zoomed(frame, k, interpolation=cv2.INTER_LINEAR):
    """The centre 1/k of ``frame`` enlarged back to its size (a camera's digital zoom), rounded."""
    h, w = frame.shape
    ch, cw = h // k, w // k
    crop = frame[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    return np.rint(cv2.resize(crop, (w, h), interpolation=interpolation))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_zoomed_frame_is_an_enlargement_and_the_cameras_own_is_not(seed):
    f = sensor(512, 640, seed)
    assert enlargement(f) is None and enlargement(f / 255.0) is None
    for k in (2, 4):
        z = zoomed(f, k)
        assert enlargement(z) == k and enlargement((z / 255.0).astype(np.float32)) == k
    assert enlargement(zoomed(f, 3)) == 3
    assert enlargement(zoomed(f, 2, cv2.INTER_NEAREST)) == 2


def test_a_blur_after_the_enlargement_erases_its_traces():
    f = sensor(512, 640, 3)
    z = zoomed(f, 2)
    assert enlargement(z) == 2
    for sigma in (1.5, 2.0):     # half a sensor pixel and more: the traces are gone (σ 1 px weakens them)
        assert enlargement(np.rint(cv2.GaussianBlur(z, (0, 0), sigma))) is None
    assert enlargement(np.rint(cv2.GaussianBlur(zoomed(f, 4), (0, 0), 3.0))) is None


def test_block_codec_traces_and_one_axis_patterns_are_not_an_enlargement():
    f = sensor(512, 640, 4)
    ok, buf = cv2.imencode(".jpg", f.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 75])
    jpeg = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float64)
    for axis in (0, 1):                        # the 8×8 blocks are periodic at 4 too ...
        assert periodic_z(difference_profile(jpeg, axis), 4) > 8.0
    assert enlargement(jpeg) is None           # ... but their fold at 8 does not repeat
    even_odd = f.copy()
    even_odd[:, 1::2] += 3.0                   # even/odd column amplifiers: period 2 across the columns only
    assert enlargement(even_odd) is None
    lines = f.copy()
    lines[1::2] = lines[0::2]                  # line doubling (one video field): the rows only
    assert enlargement(lines) is None


def test_what_cannot_be_measured():
    assert enlargement(np.zeros((512, 640))) is None                       # constant
    small = zoomed(sensor(MIN_SIDE - 1, 160, 5), 2)
    assert enlargement(small) is None                                      # under MIN_SIDE
    assert FACTORS == tuple(sorted(FACTORS))
    with pytest.raises(ValueError, match="2-D"):
        enlargement(np.zeros((2, 64, 64)))
    with pytest.raises(ValueError, match="2-D frame and axis"):
        difference_profile(np.zeros((64, 64)), 2)


def enlarged(frame, k, size=(640, 512)):
    """A sensor frame shown ``k`` times larger (a grabber's or viewer's scaler, bilinear), the centred
    ``size`` (width, height) of it, rounded: the window the blur gate measures."""
    h, w = frame.shape
    big = cv2.resize(frame, (int(round(w * k)), int(round(h * k))), interpolation=cv2.INTER_LINEAR)
    bh, bw = big.shape
    top, left = (bh - size[1]) // 2, (bw - size[0]) // 2
    return np.rint(big[top:top + size[1], left:left + size[0]])


@pytest.mark.parametrize("seed", [0, 1])
def test_non_integer_enlargements_are_found_and_the_native_frame_is_not(seed):
    f = sensor(480, 640, 10 + seed, noise=0.6)            # a 640×480 camera, 8-bit, its own noise
    assert enlargement(f) is None and spectral_period(f) is None
    p = enlargement(enlarged(f, 2.25))                    # 640 → 1440: a 1080p grabber's 4:3 picture
    assert p is not None and p == pytest.approx(2.25, abs=0.05)
    assert enlargement(enlarged(f, 1.5)) is not None      # 640 → 960
    assert enlargement(enlarged(f, 2.0)) == 2             # the integer fold still names 2
    assert enlargement((enlarged(f, 2.25) / 255.0).astype(np.float32)) is not None


def test_a_blur_after_a_non_integer_enlargement_erases_its_line():
    z = enlarged(sensor(480, 640, 12, noise=0.6), 2.25)
    assert spectral_period(z) is not None
    assert spectral_period(np.rint(cv2.GaussianBlur(z, (0, 0), 1.5))) is None
    assert enlargement(np.rint(cv2.GaussianBlur(z, (0, 0), 1.5))) is None


def test_a_block_codec_and_one_axis_lines_are_not_a_non_integer_enlargement():
    f = sensor(512, 640, 13)
    ok, buf = cv2.imencode(".jpg", f.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert spectral_period(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float64)) is None
    wide = np.rint(cv2.resize(sensor(512, 284, 14, noise=0.6), (640, 512), interpolation=cv2.INTER_LINEAR))
    assert spectral_period(wide) is None                  # 2.25× across the columns only (anamorphic)


def test_a_long_period_pattern_kept_through_a_blur_is_not_taken_for_no_blur():
    """A 20× nearest-neighbour camera (a 32×24 array shown at 640×480, as mlx90640_nn): its blocks'
    steps keep harmonics above MIN_FREQUENCY through a σ 1 px blur; the pattern's own line, at 1/20,
    is stronger, so the blurred frame is not called an enlargement that no blur came after."""
    for seed in (1, 3):
        rng = np.random.default_rng(seed)
        tiny = cv2.resize(sensor(480, 640, seed), (32, 24), interpolation=cv2.INTER_AREA)
        big = cv2.resize(tiny + rng.normal(0, 2.0, tiny.shape), (640, 480), interpolation=cv2.INTER_NEAREST)
        big = np.rint(big + rng.normal(0, 0.5, big.shape))
        assert spectral_period(np.rint(cv2.GaussianBlur(big, (0, 0), 1.0))) is None
