"""Emulated "new cameras" from the test splits: how the product behaves on a camera none of the
data sets covers (issue 9, "checked from outside": run ``tir eval --data OUT/<camera>`` on each).

Usage: python3 tools/scripts/emulate_cameras.py OUT [--root DATA_ROOT] [--only NAME[,NAME]] [--round 1-3|4|5|6|7|8|9]

Each camera is a folder ``OUT/<name>/`` of 12 frames of one size, built from the **test** split
of a registered set (frames only used to measure, never to tune), read from the data root
(``--root``, ``$TIR_DATA_ROOT`` or ``../shared/data``; the frames are never copied into the
repository). Each differs from every set in one way real cameras differ (:data:`CAMERAS`):

- ``agc_plateau``: FLIR T1030sc raw counts (``flir_raw16_mixed``), plateau histogram
  equalisation to 8 bits, the global AGC of FLIR Boson/Lepton (histogram bins clipped at a
  plateau, cumulative histogram as the tone map); 640×512 crops of the 1024×768 frames;
- ``agc_clahe``: the same counts through CLAHE (8×8 tiles, clip 2.0, OpenCV) to 8 bits;
- ``tone_log``: RoadScene 8-bit frames through a log tone curve ``255·log1p(k·g)/log1p(k)``,
  k = 20 (a camera whose AGC lifts the cold end);
- ``black_hot``: RoadScene frames inverted (255 − g), a camera set to "black hot" polarity;
- ``tiny_80x60``: HIT-UAV frames area-averaged to 80×60 (a 80×60 Lepton 2-class sensor);
- ``soft_2x``: Lepton 3.5 frames (160×120) upscaled 2× bicubic to 320×240 (soft optics /
  an upscaling video path);
- ``shading``: M3SVD frames with strong low-frequency shading, a cos⁴-like vignette (corners at
  55 % of the centre) times a left-to-right ramp (−12 %), as a warm housing gives;
- ``netd_noise``: RoadScene frames with white noise σ = 3.5 grey levels in the *clean* frames
  (an NETD-limited sensor), drawn per frame;
- ``column_fpn``: HIT-UAV frames with one fixed residual column pattern (σ = 1.5 grey levels
  per column, the same for every frame: a cheap camera after a poor NUC);
- ``raw16_lowgain`` / ``raw16_highgain``: T1030sc raw counts remapped linearly so that the
  frame's 1st-99th percentiles span 300 / 20000 counts (a low-gain scene, a high-gain mode),
  kept 16-bit (Y16 PNG), 640×512 crops;
- ``pal_384x288``: M3SVD frames area-averaged to 384×288 (a 384×288 core);
- ``halo``: RoadScene frames with a hot-spot halo: the glow of the hottest 2 % of the frame
  (Gaussian, σ = 25 px) added so that its peak is +40 grey levels (stray light around hot
  objects, lamps and the sun);
- ``false_colour``: HIT-UAV frames through a rainbow palette (OpenCV's TURBO colour map), saved
  as colour PNG: a camera that delivers only its false-colour video (many USB thermal cameras'
  default). The palette's luminance is not monotone in temperature;
- ``osd_overlay``: M3SVD frames with a burnt-in OSD (white text with a black outline at the top
  left, a reticle in the centre) and a 24-px grey-scale bar with tick labels at the right edge.

Round 2 (session 11), each again one way real cameras differ:

- ``row_fpn``: HIT-UAV frames with one fixed residual *row* pattern (σ = 1.5 grey levels per
  row, the same for every frame: horizontal stripes, a readout whose row offsets drift after NUC);
- ``stuck_pixels``: RoadScene frames with the camera's own defects: 0.05 % of the pixels stuck
  (half hot at 255, half dead at 0) and one dead column reading 0, the same for every frame (a
  core whose bad-pixel map is out of date);
- ``mjpeg_q50``: RoadScene frames through JPEG at quality 50 (OpenCV/libjpeg, 4:2:0 is moot for
  grey): a UVC camera or encoder delivering MJPEG at a low bit rate, 8×8 blocking and ringing;
- ``saturated``: RoadScene frames through a linear AGC whose top tail is the 90th percentile
  (``255·g/p90``, clipped): 10 % or more of every frame at 255, as sun, a hot engine or a
  fire clip a camera set to a narrow (high-gain) range;
- ``letterbox``: M3SVD 640×480 frames padded into a 640×512 frame with 16 black rows at the top and
  the bottom (a capture path that centres a 4:3 sensor image in a 640×512 buffer);
- ``portrait``: RoadScene frames rotated 90° clockwise to 512×640 (a camera mounted on its side);
- ``seek_206x156``: HIT-UAV frames area-averaged to 206×156 (the Seek Thermal Compact's odd
  sensor size: neither dimension a multiple of 8);
- ``pal_interlaced``: M3SVD frames as an analog PAL capture card gives them: resized to 720×576
  (non-square pixels), the odd field shifted 1 px to the right of the even one (motion/jitter
  between the two fields: combing on every edge) and a horizontal low-pass (Gaussian σ = 0.8 px
  along the rows: the analog video bandwidth);
- ``y16_fog``: T1030sc raw counts remapped so that the frame's 1st-99th percentiles span 40
  counts at a base of 28000 (a flat scene, fog or sea, on a 16-bit core with a large offset:
  the span is under the normaliser's 64-count ``min_span``); 640×512 crops, kept 16-bit;
- ``alc_flicker``: M3SVD frames whose AGC jumps from frame to frame: each frame's grey levels
  scaled about mid-grey by a gain drawn in 0.8-1.2 and shifted by a level drawn in ±20 grey
  levels (seeded per frame; an ALC that hunts, or a level jump after an FFC).

Round 3 (session 12): cameras built the way a camera pipeline makes them, not one change of a
test frame. The test frame is the scene, taken as linear radiance (grey levels); it goes through
:func:`camera`: optics and resolution (area resample to the sensor size), 14-bit counts
(:data:`COUNTS_BASE` + :data:`COUNTS_PER_GREY` per grey level, saturating at
:data:`COUNTS_MAX`), the sensor's own temporal white noise drawn per frame at the sensor's pixel
scale (its σ set so that the frame's linear min-max AGC would show it at ``noise_grey`` grey
levels: an NETD relative to the scene's span), the camera's processing on the counts, and its
AGC recomputed per frame on the final size (linear min-max, or plateau histogram
equalisation), to 8 bits:

- ``lepton25_80x60``: HIT-UAV (tiny_80x60's frames) at 80×60, noise 1.0 grey level, linear AGC
  (a Lepton 2.5: its own per-pixel noise, its AGC re-stretches every frame);
- ``lepton35_160x120``: M3SVD at 160×120, noise 0.35, plateau AGC (a Lepton 3.5's HEQ; its gain on
  the night scenes' dense dark bins shows the noise at ~1.5-2 grey levels);
- ``boson_dde_320x256`` / ``boson_dde_640x512``: HIT-UAV at 320×256 / RoadScene at 640×512,
  noise 0.6, Boson-like DDE (:func:`dde_agc`: the plateau AGC of a Gaussian base layer, σ 1.5 px,
  plus the detail layer at 3× the linear AGC's gain: sharpened, its noise boosted with it);
- ``temporal_nr_640x480``: M3SVD, a recursive temporal noise filter (:func:`temporal_filter`:
  8 sensor frames at noise 2.0, y += 0.25·(x − y)); the odd frames pan 1 px per sensor frame
  (smeared along the motion), the even ones are still; linear AGC;
- ``tc001_256x192``: RoadScene's 4:3 centre (640×480) at 256×192, noise 1.5, the vendor's
  smoothing (Gaussian σ 0.8 px), linear AGC (TOPDON TC001 / InfiRay P2 Pro class);
- ``y16_indoor_160x120``: Lepton 3.5 indoor frames as Y16 counts of a 14-bit core
  (:func:`y16_low_span`): the frame's 1st-99th percentiles span 200-400 counts from a base of
  8000-8600 (so within 8000-9000), white noise σ 2-6 counts, all drawn per frame; no AGC, 16-bit;
- ``hot_spot_640x480``: M3SVD with a small saturating hot object (:func:`hot_object`: an ellipse
  of 0.5-2 % of the pixels far above the scene, optics σ 0.7 px, clipped at the counts' top),
  noise 0.35 (~1.5-2 after the HEQ), plateau AGC: the object at 255, the rest of the scene kept
  visible;
- ``upside_down_640x512``: RoadScene, noise 1.0, linear AGC, the image turned 180° (a camera
  mounted upside down);
- ``vignette_agc_640x424``: Anti-UAV sky frames (near-uniform scenes) with strong vignetting, the
  radiance times cos⁴ of the off-axis angle (corners at 0.6), noise 1.0, linear AGC: the AGC
  stretches the vignette over most of the 8 bits.

Round 4 (session 15, ``--round 4``, table :data:`ROUND4`; the default builds rounds 1-3 as
before), again camera pipelines, each from a product's documented behaviour. Where a fact is
not in /work/shared/reference/thermal_io.md it is marked [U] (general product knowledge, to be
checked against the vendor's datasheet):

- ``mlx90640_nn_640x480``: a Melexis MLX90640 thermopile array, 32×24 pixels [U], noise 1.5,
  linear AGC, shown 20× by nearest neighbour at 640×480 as maker viewers enlarge it: flat
  20-px blocks with hard edges;
- ``lepton_nn_640x480``: a Lepton 2.5 (80×60, edge/camera/formats.py), noise 1.0, linear AGC, shown
  8× by nearest neighbour;
- ``p2pro_bilinear_1024x768``: the TOPDON TC001 / InfiRay P2 Pro's 256×192 image (thermal_io.md
  §3.2) with tc001_256x192's smoothing, shown 4× bilinear at 1024×768 (a viewer's window);
- ``usm_mild_640x512`` / ``usm_strong_640x512``: a camera that sharpens its 8-bit video, the
  unsharp mask ``g + a·(g − G₁∗g)`` at a = 0.7 / 2.0 (the detail-enhancement family of Boson's
  DDE parameters, thermal_io.md §4.1; the plain mask and amounts are ours);
- ``tlinear_banded_160x120``: a Lepton 3.5 in TLinear mode at 0.1 K resolution (the resolution
  flag 0, thermal_io.md §3.2) through GetThermal's per-frame min/max AGC (§3.3): a 3-6 K indoor
  scene is 30-60 count levels, so the 8-bit image is banded (tens of grey levels);
- ``y16_telemetry_160x122``: a Lepton 3.5 on PureThermal with telemetry on, Y16 TLinear 0.01 K,
  2 telemetry rows under the image (160×122; flirpy strips ``image[:-2]``, §3.2; the row-A
  fields of the Lepton datasheet as edge/camera/formats.py reads them), as a recording of the
  raw stream holds them;
- ``dead_columns_320x256``: a 320×256 core with failed column read-outs (the read-out is
  column-parallel, one amplifier per column, thermal_io.md §5): five columns dead (one adjacent
  pair) and one stuck at the 14-bit top, the same in every frame, plateau AGC;
- ``y16_msb_640x512``: a 14-bit core's counts stored MSB-aligned in 16-bit PNGs (``<< 2``: a
  recorder that left-aligns Mono14 [U]), a narrow scene (30-60 counts of span at 7000-8000,
  noise 1.5 counts): every value a multiple of 4;
- ``hd_1280x1024``: a 1280×1024 camera [U for the products]: T1030sc counts (960×768 crops)
  resized bicubic to 1280×1024, plateau AGC;
- ``dup_9hz_640x512``: an export-limited core (under 9 Hz [U]) in a 27-30 Hz video stream:
  every sensor frame delivered 3 times, byte-identical (HIT-UAV, noise 1.0, linear AGC);
- ``vignette_wide_160x120``: a wide-FOV lens's cos⁴ fall-off, corners at 0.3 of the centre (a
  shutter behind the lens does not flatten it [U]), Lepton 3.5 scenes, noise 0.35, linear AGC;
- ``ironbow_grey_640x512``: a camera's ironbow ("Iron") palette video turned back to grey by a
  user (BT.601 luma, OpenCV's ``COLOR_BGR2GRAY``): a monotone but bent tone curve.

Round 5 (``--round 5``, table :data:`ROUND5`), camera pipelines again, of kinds rounds 1-4 do
not cover; [U] as in round 4:

- ``ffc_shutter_160x120``: a Lepton 3.5 on PureThermal through GetThermal's per-frame min/max AGC
  (thermal_io.md §3.3) whose stream keeps running while the shutter is closed for an FFC
  (thermal_io.md §5: the flag is a uniform scene; whether a given Boson/Lepton firmware freezes the
  video or shows the flag is [U]): frames 5 and 6 (:data:`FFC_SHUTTER`) are the flag, its white
  noise stretched by the min/max AGC over the full 8 bits;
- ``fpn_drift_640x512``: a column-parallel read-out (thermal_io.md §5) whose column offsets drift
  with the FPA temperature between FFCs: each column's offset grows linearly from 0 to σ 2.5 grey
  levels over frames 0-7, the FFC before frame 8 resets them, and they grow again (HIT-UAV,
  noise 0.6, linear AGC);
- ``pan_blur_640x512``: a UAV gimbal or vehicle camera panning: a 1-D box smear of 5-15 px
  within ±20° of the rows on the scene, per frame (HIT-UAV, noise 0.6, linear AGC);
- ``manual_agc_narrow_640x512``: a Tau2/Quark in manual AGC (gain and level fixed, FLIR app note
  102-PS242-100-01, thermal_io.md §4.1) set for a wider scene: the frame's 1st-99th percentiles
  in 8-20 grey levels around 90-160 (posterised, 8-bit, RoadScene);
- ``usb_tear_640x512``: a UVC capture whose buffers desync (thermal_io.md §3.1 item 4; that the
  frame tears rather than repeats is [U]): the rows below a tear row (30-70 % of the height) from
  the previous exposure, the camera having panned 4-12 px (RoadScene);
- ``optris_382x288``: an Optris PI 400/450-class camera [U]: 382×288, 16-bit values = (T[°C] +
  100) × 10, 0.1 K per count, so a 15-40 °C scene uses 1150-1400 (12-bit values; M3SVD scenes);
- ``ici_offset_640x512``: an ICI 8640-class 640×512 core's raw counts [U]: a 48000-54000 offset,
  1500-4000 counts of span and a hot object clipped at the 16-bit top (T1030sc scenes);
- ``agc_pump_640x512``: a linear AGC that pumps: a hot object (1-3 % of the pixels) enters in the
  odd frames at a level that drops the scene's gain by 20-40 % (the per-frame AGC of GetThermal /
  BosonUSB, thermal_io.md §3.3, §4.2 "a single hot pixel dominates"; RoadScene, noise 0.6);
- ``lens_drops_640x512``: rain drops or dirt on the lens window, the same in every frame: water is
  nearly opaque at 8-14 µm [U], so each of 8-14 out-of-focus drops shows its own temperature (the
  scene's median) at 50-85 % opacity (RoadScene, noise 0.6, linear AGC).

Round 6 (``--round 6``, table :data:`ROUND6`), camera pipelines of kinds rounds 1-5 do not cover;
[U] as in round 4:

- ``ntsc_field_720x480``: a Tau 2's analog NTSC video (its VIDEO_MODE command, thermal_io.md §2)
  through a USB grabber that keeps one field and doubles its lines [U]: BT.601's 704 active samples
  in a 720-sample line (8 black samples either side), every line shown twice (M3SVD, noise 0.6,
  linear AGC);
- ``studio_range_720x576``: a PAL grabber whose BT.601 limited-range luma (black 16, white 235) is
  kept as it comes, not expanded to 0-255 [U that a given capture program leaves it] (RoadScene);
- ``boson_tlinear_low_640x512``: a radiometric Boson in TLinear, low gain, Y16 = K × 50 (thermal_io.md
  §1.6, a third-party design note): 8-20 K scenes at 285-300 K and a 350-450 K hot object;
- ``dde_max_640x512``: DDE at its top setting (Tau 2.7's index −20..100, thermal_io.md §4.1 item 9;
  the filter's 6-px scale and the 6× gain are ours): wide halos at every edge, the noise boosted;
- ``mirror_640x512`` / ``vflip_640x512``: a Tau 2 set to orientation "revert" / "invert" (its
  ORIENTATION command 0x11, thermal_io.md §2; which name flips which way is [U]): left-right mirrored,
  top-bottom flipped (upside_down_640x512 is both);
- ``status_bits_640x512``: a 14-bit core whose 16-bit words carry status above the counts [U]: bit 14
  the frame's parity, bit 15 an "FFC desired" flag (thermal_io.md §5) on frames 4-8, so the stored
  frame jumps by 16384 or 32768 counts from frame to frame;
- ``vospi_loss_160x120``: a Lepton 3.5 read over VoSPI (a packet is half a line [U]) by a host that
  loses 1-4 packets a frame and keeps the half line above in their place;
- ``warmup_320x256``: a Boson 320's Y16 counts in the minutes after power-up (thermal_io.md §5): the
  level rising, per-pixel offsets growing until the FFC that the FPA's temperature change triggers
  (§1.6), the housing's radiation a growing dome the FFC does not remove [U];
- ``row_flicker_640x512``: horizontal stripes (row offsets, thermal_io.md §5) drawn anew every frame
  [U: that a core's row offsets change from frame to frame] (HIT-UAV, noise 0.6, linear AGC);
- ``sky_target_640x512``: UAV tracking against a clear sky through a per-frame min/max AGC
  (thermal_io.md §3.3, §4.2): a drone of ~100 px far hotter than the sky takes the top of the
  8 bits, the sky's 1st-99th percentiles are squeezed into about a quarter of them (Anti-UAV scenes,
  noise 1.0).

Round 8 (``--round 8``, table :data:`ROUND8`), camera pipelines of kinds rounds 1-7 do not cover;
[U] as in round 4:

- ``lepton25_y16_80x60``: a radiometric Lepton 2.5 in TLinear at 0.01 K (thermal_io.md §3.2, Y16 =
  kelvin × 100): 80×60 Y16, 3-10 K scenes at 288-300 K, NETD 0.05 K [U];
- ``tc001_stacked_256x384``: a TOPDON TC001 / InfiRay P2 Pro's whole 256×384 YUYV capture (thermal_io.md
  §3.2: the AGC image on top, the raw 1/64 K words below) recorded by a generic program with the RGB
  conversion on [U], turned to grey: the image half as tc001_256x192, the raw words' low byte below;
- ``hikmicro_sr_640x512``: a 320×256 core with DDE shown through a "super resolution" mode [U: bicubic
  2× and an unsharp mask of 1.0; the vendor does not publish it];
- ``hd12_y16_1280x1024``: a 1280×1024 core with a 12-bit Y16 output [U]: span 600-1800 counts at
  800-1400, noise σ 2 counts;
- ``mains_bands_640x512``: 50 Hz interference in a 60 Hz camera [U]: a row sinusoid of 2.5 grey levels,
  170-row period, rolling 2π·50/60 a frame;
- ``barrel_wide_160x120``: a 95° lens (Lepton 3.1R class [U: its distortion is not in the notes]):
  barrel distortion k1 = 0.25 with the corners kept, cos⁴ fall-off to 0.4 at the corners;
- ``mwir_cooled_640x512``: a cooled MWIR look: noise 0.1 grey level, plateau AGC;
- ``png16_8bit_640x512``: an 8-bit video exported as 16-bit PNG of 8 significant bits, ``v·257``
  (the PNG specification's left bit replication);
- ``pillarbox_1920x1080``: a 640×480 camera's HDMI output through a 1080p grabber [U]: 1440×1080
  bilinear between 240-column black bars;
- ``signed_cc_winter_640x512``: a radiometric core whose Y16 is 0.01 °C as int16 [U], recorded as
  uint16: a −12…+12 °C winter scene, the pixels below 0 °C at 64300-65535.

Round 9 (``--round 9``, table :data:`ROUND9`), camera pipelines of kinds rounds 1-8 do not cover;
[U] as in round 4. No H.264 camera: this OpenCV build's FFmpeg has no H.264 encoder (``avc1``,
``H264``, ``X264`` do not open; round 7's ``mpeg4_a320_640x480`` is the coded-video camera):

- ``narcissus_640x480``: a cooled camera (noise 0.1, plateau AGC) with narcissus [U]: a central cold
  disc, radius 0.3 of the height, 12 % of the span, its edge soft (σ 25 px), the same in every frame;
- ``smudge_blur_640x512``: a smudge or water film on the lens window [U]: an ellipse of a quarter of
  the frame blurred (σ 4 px), the same place in every frame, the rest sharp (RoadScene, noise 0.6);
- ``y10_640x512``: a 10-bit core's Y10 video in 16-bit PNG [U]: 250-700 counts of span at 60-250,
  noise 0.8 count, values 0-1023 (T1030sc scenes);
- ``tnr_ghost_640x512``: a recursive temporal noise filter (α 0.25 over 8 sensor frames, noise 2.0)
  on a still scene crossed by a hot object moving 8 px a sensor frame: fading ghost copies behind
  it, the scene's noise cut (HIT-UAV, linear AGC);
- ``line_jitter_720x576``: an analog capture without time-base correction [U]: each line of the
  720×576 picture shifted by its own σ 0.6 px, drawn per frame (M3SVD, noise 0.6);
- ``lens_ghost_640x512``: a double reflection between lens surfaces [U]: the scene turned 180°,
  defocused (σ 6 px), added at 10 % (RoadScene, noise 0.6);
- ``horizon_level_640x512``: electronic horizon levelling [U]: the picture turned 4-12° either way,
  drawn per frame, its corners black (HIT-UAV, noise 0.6);
- ``snuc_ghost_640x512``: a scene-based NUC's burn-in (thermal_io.md §5, the LMS NUC "causes
  ghosting on static scenes"): 30-50 % of the detail of the view 40-120 px away, negated (RoadScene);
- ``decimated_320x256``: a 640×512 core's half-size video made by skipping rows and columns with no
  anti-alias filter [U]: aliasing, jagged edges (RoadScene, noise 0.6);
- ``veiling_glare_640x480``: a dirty window's veiling glare [U]: 35 % of the radiance scattered
  (σ 60 px), the AGC stretching the rest (M3SVD, noise 0.6).

Every random draw is seeded by the camera and the frame's index, so the folders are the same on
every run. numpy + OpenCV only.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np

#: frames per emulated camera
FRAMES = 12
#: the raw set's test frames of one camera model and size (1024×768 FLIR T1030sc)
RAW_CAMERA = "T1030sc"


def data_root(root=None) -> Path:
    """``root``, else ``$TIR_DATA_ROOT``, else ``<repo>/../shared/data``."""
    if root:
        return Path(root)
    if os.environ.get("TIR_DATA_ROOT"):
        return Path(os.environ["TIR_DATA_ROOT"])
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def split_frames(root: Path, name: str, contains: str = "") -> List[Tuple[str, np.ndarray]]:
    """(file name, frame as stored) for the test split of set folder ``name`` whose file name
    contains ``contains``; 8-bit colour frames are converted to grey.

    Raises:
        FileNotFoundError: no split list or a listed frame that cannot be read.
    """
    listing = root / f"{name}-test.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing}: no test split list; is --root the data folder?")
    out = []
    for line in listing.read_text().split():
        if contains not in line:
            continue
        img = cv2.imread(str(root / name / line), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise FileNotFoundError(f"{root / name / line}: cannot be read")
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        out.append((line, img))
    return out


def crops_640x512(frames: List[Tuple[str, np.ndarray]]) -> List[Tuple[str, np.ndarray]]:
    """Two 640×512 crops (top left, bottom right) of every frame at least that large."""
    out = []
    for name, f in frames:
        h, w = f.shape
        out += [(f"{Path(name).stem}-tl", f[:512, :640]), (f"{Path(name).stem}-br", f[h - 512:, w - 640:])]
    return out


def plateau_equalise(counts: np.ndarray, plateau: float = 0.002) -> np.ndarray:
    """Y16 counts -> uint8 by plateau histogram equalisation: one histogram bin per count between
    the frame's min and max, each bin clipped at ``plateau`` × pixel count, the cumulative clipped
    histogram as the tone map (the global AGC of FLIR's cores; the plateau value is ours)."""
    c = counts.astype(np.int64)
    lo = int(c.min())
    hist = np.bincount((c - lo).ravel())
    hist = np.minimum(hist, max(1.0, plateau * c.size))
    cdf = np.cumsum(hist)
    lut = np.rint(255.0 * (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0))
    return lut[c - lo].astype(np.uint8)


def clahe_agc(counts: np.ndarray) -> np.ndarray:
    """Y16 counts -> uint8 by CLAHE (OpenCV, 8×8 tiles, clip 2.0) on the counts stretched to the
    full 16-bit scale, then the top 8 bits."""
    c = counts.astype(np.float64)
    lo, hi = float(c.min()), float(c.max())
    full = np.rint((c - lo) / max(hi - lo, 1.0) * 65535.0).astype(np.uint16)
    eq = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(full)
    return (eq >> 8).astype(np.uint8)


def remap_span(counts: np.ndarray, span: float, base: float = 8000.0) -> np.ndarray:
    """Y16 counts remapped linearly so that their 1st-99th percentiles span ``span`` counts,
    the 1st percentile at ``base``; rounded to uint16."""
    c = counts.astype(np.float64)
    p1, p99 = np.percentile(c, (1, 99))
    return np.clip(np.rint((c - p1) / max(p99 - p1, 1.0) * span + base), 0, 65535).astype(np.uint16)


def to_u8(x: np.ndarray) -> np.ndarray:
    """Float grey levels -> uint8, rounded and clipped to 0..255 (same shape)."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def shading(grey: np.ndarray) -> np.ndarray:
    """Strong low-frequency shading: cos⁴ of the off-axis angle (corners at 0.55) times a
    left-to-right ramp 1.0 -> 0.88."""
    h, w = grey.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot((x - (w - 1) / 2) / ((w - 1) / 2), (y - (h - 1) / 2) / ((h - 1) / 2)) / np.sqrt(2)
    tan_max = np.sqrt((1 / 0.55) ** 0.5 - 1)  # cos⁴θ = 0.55 at the corners
    gain = np.cos(np.arctan(r * tan_max)) ** 4 * (1.0 - 0.12 * x / (w - 1))
    return to_u8(grey.astype(np.float64) * gain)


def halo(grey: np.ndarray, sigma: float = 25.0, peak: float = 40.0) -> np.ndarray:
    """A hot-spot halo: the part of the frame above its 98th percentile, Gaussian-blurred (σ px),
    scaled to a ``peak`` grey-level maximum and added."""
    g = grey.astype(np.float64)
    hot = np.maximum(g - np.percentile(g, 98), 0.0)
    glow = cv2.GaussianBlur(hot, (0, 0), sigma)
    return to_u8(g + glow * (peak / max(float(glow.max()), 1e-9)))


def osd(grey: np.ndarray) -> np.ndarray:
    """A burnt-in OSD: text at the top left (white, black outline), a centre reticle, and a 24-px
    vertical grey-scale bar with tick labels at the right edge."""
    img = grey.copy()
    h, w = img.shape
    for text, y in (("FLIR 30Hz  AGC:AUTO", 22), ("T 27.4C  ZOOM 1x", 44)):
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 4, cv2.LINE_AA)
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1, cv2.LINE_AA)
    cx, cy = w // 2, h // 2
    for d in ((-20, -6), (6, 20)):
        cv2.line(img, (cx + d[0], cy), (cx + d[1], cy), 255, 1)
        cv2.line(img, (cx, cy + d[0]), (cx, cy + d[1]), 255, 1)
    bar = np.linspace(255, 0, h - 40)[:, None].repeat(24, 1)
    img[20:h - 20, w - 30:w - 6] = to_u8(bar)
    for i, label in enumerate(("40", "30", "20", "10")):
        y = 20 + int(i * (h - 41) / 3)
        cv2.putText(img, label, (w - 58, max(y, 12) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)
    return img


def _raw(root):
    return crops_640x512(split_frames(root, "flir_raw16_mixed", RAW_CAMERA))


def _set(name):
    def load(root):
        return [(Path(n).stem, f) for n, f in split_frames(root, name)]
    return load


def _noise(i: int, g: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([7, i])
    return to_u8(g.astype(np.float64) + rng.normal(0.0, 3.5, g.shape))


def _column_fpn(i: int, g: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(11)  # one pattern for the camera, not per frame
    return to_u8(g.astype(np.float64) + rng.normal(0.0, 1.5, g.shape[1])[None, :])


def _row_fpn(i: int, g: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(13)  # one pattern for the camera, not per frame
    return to_u8(g.astype(np.float64) + rng.normal(0.0, 1.5, g.shape[0])[:, None])


def stuck_pixels(grey: np.ndarray, fraction: float = 0.0005, seed: int = 17) -> np.ndarray:
    """The camera's own defects, the same in every frame (seeded by the camera, not the frame):
    ``fraction`` of the pixels stuck, half at 255 (hot) and half at 0 (dead), and one dead column
    (at 1/3 of the width) reading 0. Same shape and dtype (uint8)."""
    h, w = grey.shape
    rng = np.random.default_rng(seed)
    n = max(2, int(round(fraction * h * w)))
    idx = rng.choice(h * w, n, replace=False)
    out = grey.copy().ravel()
    out[idx[: n // 2]] = 255
    out[idx[n // 2:]] = 0
    out = out.reshape(h, w)
    out[:, w // 3] = 0
    return out


def jpeg(grey: np.ndarray, quality: int = 50) -> np.ndarray:
    """The frame through JPEG at ``quality`` (OpenCV's libjpeg), decoded again (uint8, same shape)."""
    ok, buf = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def saturate_top(grey: np.ndarray, pct: float = 90.0) -> np.ndarray:
    """A linear AGC whose top is the frame's ``pct``-th percentile: ``255·g/p``, clipped, so at
    least (100 − pct) % of the pixels are at 255 (uint8, same shape)."""
    g = grey.astype(np.float64)
    top = max(float(np.percentile(g, pct)), 1.0)
    return to_u8(255.0 * g / top)


def letterbox(grey: np.ndarray, height: int = 512) -> np.ndarray:
    """The frame centred in a ``height``-row frame of the same width, black (0) rows above and below."""
    h, w = grey.shape
    out = np.zeros((height, w), np.uint8)
    top = (height - h) // 2
    out[top:top + h] = grey
    return out


def pal_capture(grey: np.ndarray, shift: int = 1, sigma: float = 0.8) -> np.ndarray:
    """An analog PAL capture: resized (bilinear) to 720×576, the odd rows (one field) shifted
    ``shift`` px right of the even rows (edge pixels repeated), then a horizontal Gaussian
    low-pass (σ px along the rows only). uint8, 576×720."""
    f = cv2.resize(grey, (720, 576), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    odd = f[1::2]
    f[1::2] = np.concatenate([np.repeat(odd[:, :1], shift, 1), odd[:, :-shift]], axis=1)
    k = cv2.getGaussianKernel(int(2 * round(3 * sigma) + 1), sigma)
    return to_u8(cv2.sepFilter2D(f, -1, k, np.array([[1.0]]), borderType=cv2.BORDER_REPLICATE))


def _flicker(i: int, g: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([23, i])
    gain, level = rng.uniform(0.8, 1.2), rng.uniform(-20.0, 20.0)
    return to_u8((g.astype(np.float64) - 128.0) * gain + 128.0 + level)


# --- round 3: camera pipelines -------------------------------------------------------------

#: counts of the scene's grey level 0 and counts per grey level (a 14-bit core's scale; ours),
#: and the 14-bit top where the sensor saturates
COUNTS_BASE, COUNTS_PER_GREY, COUNTS_MAX = 8000.0, 16.0, 16383.0


def resample(scene: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Optics and resolution: ``scene`` (H×W, any dtype) area-resampled to ``size`` = (width,
    height) as float64 (OpenCV INTER_AREA; the same array as float64 when the size is the same)."""
    f = scene.astype(np.float64)
    if (f.shape[1], f.shape[0]) == tuple(size):
        return f
    return cv2.resize(f, tuple(size), interpolation=cv2.INTER_AREA)


def to_counts(radiance: np.ndarray) -> np.ndarray:
    """Scene grey levels (linear radiance, float) -> counts of a 14-bit core, float, not yet
    clipped (the read-out clips at :data:`COUNTS_MAX` after the noise; same shape)."""
    return COUNTS_BASE + COUNTS_PER_GREY * radiance


def noise_sigma(counts: np.ndarray, noise_grey: float) -> float:
    """The counts' σ that a linear min-max AGC of the noiseless ``counts`` shows as ``noise_grey``
    grey levels: ``noise_grey · (max − min) / 255`` (at least 0.5 count)."""
    return max(float(noise_grey) * float(counts.max() - counts.min()) / 255.0, 0.5)


def linear_agc(counts: np.ndarray) -> np.ndarray:
    """Linear min-max AGC of one frame: ``255·(c − min)/(max − min)`` to uint8 (same shape)."""
    c = counts.astype(np.float64)
    lo, hi = float(c.min()), float(c.max())
    return to_u8(255.0 * (c - lo) / max(hi - lo, 1e-9))


def plateau_agc(counts: np.ndarray, plateau: float = 0.002) -> np.ndarray:
    """Plateau histogram AGC of float counts: rounded to whole counts, then
    :func:`plateau_equalise` (uint8, same shape)."""
    return plateau_equalise(np.rint(np.maximum(counts, 0.0)).astype(np.int64), plateau)


def dde_agc(counts: np.ndarray, sigma: float = 1.5, detail_gain: float = 3.0, plateau: float = 0.002) -> np.ndarray:
    """Digital detail enhancement as FLIR Boson-class cores do it (the base layer through the
    histogram AGC, the detail layer added back with its own gain; filter and gains are ours): base
    = Gaussian of the counts (σ px), detail = counts − base; out = plateau AGC of the base +
    ``detail_gain`` × detail × 255/(the base's max − min), to uint8 (same shape). An unsharp mask
    on the detail layer: edges and the sensor's noise are boosted together."""
    c = counts.astype(np.float64)
    base = cv2.GaussianBlur(c, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    scale = 255.0 / max(float(base.max() - base.min()), 1e-9)
    return to_u8(plateau_agc(base, plateau).astype(np.float64) + detail_gain * (c - base) * scale)


def temporal_filter(counts: np.ndarray, rng: np.random.Generator, noise_grey: float, steps: int = 8,
                    alpha: float = 0.25, pan: float = 0.0) -> np.ndarray:
    """A recursive temporal noise filter over ``steps`` sensor frames of one scene: each frame the
    noiseless ``counts`` shifted right by ``pan`` px per frame (bilinear, the last frame unshifted)
    plus its own white noise (:func:`noise_sigma`), filtered ``y += alpha·(x − y)``. Returns y
    (float counts, same shape): the noise cut to about √(α/(2 − α)) of a frame's, a still scene
    sharp, a moving one smeared over ~``pan``·(1 − α)/α px."""
    sigma = noise_sigma(counts, noise_grey)
    h, w = counts.shape
    y = None
    for j in range(steps):
        dx = -pan * (steps - 1 - j)
        m = np.float32([[1, 0, dx], [0, 1, 0]])
        x = cv2.warpAffine(counts, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        x = x + rng.normal(0.0, sigma, x.shape)
        y = x if y is None else y + alpha * (x - y)
    return y


def y16_low_span(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Y16 counts of a low-span scene on a 14-bit core: the frame's 1st-99th percentiles mapped
    linearly to a span drawn in 200-400 counts from a base drawn in 8000-8600, plus white noise
    of σ drawn in 2-6 counts; rounded to uint16 (same shape)."""
    span, base, sigma = rng.uniform((200.0, 8000.0, 2.0), (400.0, 8600.0, 6.0))
    c = remap_span(grey, span, base).astype(np.float64) + rng.normal(0.0, sigma, grey.shape)
    return np.clip(np.rint(c), 0, 65535).astype(np.uint16)


def hot_object(radiance: np.ndarray, rng: np.random.Generator, level: float = 1500.0) -> np.ndarray:
    """The scene (grey levels, float) with a small hot object: a filled ellipse covering a share
    drawn in 0.5-2 % of the pixels at a random place away from the edges, at ``level`` grey levels
    (far above the 14-bit top: it saturates), blurred by the optics (Gaussian σ 0.7 px). Same shape,
    float64."""
    h, w = radiance.shape
    share = rng.uniform(0.005, 0.02)
    aspect = rng.uniform(0.6, 1.6)
    mask = ellipse_mask((h, w), share, aspect, rng, blur=0.7)
    return radiance * (1 - mask) + level * mask


def ellipse_mask(shape, share: float, aspect: float, rng: np.random.Generator, blur: float) -> np.ndarray:
    """(H, W) float64 mask of a filled ellipse covering ``share`` of the pixels, width/height
    ``aspect``, centred at a place drawn from ``rng`` at least 4 px inside the edges, blurred by
    the optics (Gaussian σ ``blur`` px); 1 inside, 0 outside."""
    h, w = shape
    b = np.sqrt(share * h * w / (np.pi * aspect))
    a = aspect * b
    cx, cy = rng.uniform(a + 4, w - a - 4), rng.uniform(b + 4, h - b - 4)
    mask = np.zeros((h, w), np.float64)
    cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (int(round(a)), int(round(b))), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), blur)


def vignette(radiance: np.ndarray, corner: float = 0.6) -> np.ndarray:
    """Radiance times cos⁴ of the off-axis angle, the field scaled so that the corners get
    ``corner`` of the centre's (float64, same shape)."""
    h, w = radiance.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot((x - (w - 1) / 2) / ((w - 1) / 2), (y - (h - 1) / 2) / ((h - 1) / 2)) / np.sqrt(2)
    tan_max = np.sqrt((1 / corner) ** 0.5 - 1)
    return radiance * np.cos(np.arctan(r * tan_max)) ** 4


def camera(size: Tuple[int, int], noise_grey: float, agc: Callable[[np.ndarray], np.ndarray], seed: int,
           scene_fn: Callable = None, process: Callable = None, noise: bool = True, after: Callable = None):
    """A camera pipeline as a per-frame map ``(index, frame) -> uint8 frame`` for :data:`CAMERAS`:
    the frame as radiance, ``scene_fn(radiance, rng)`` (a change to the scene: a hot object, a
    vignette), :func:`resample` to ``size`` = (width, height), :func:`to_counts`, the sensor's
    white noise (``noise``: σ from :func:`noise_sigma` with ``noise_grey``, measured on the
    unchanged scene's counts, so that a hot object does not raise the sensor's NETD), the read-out's
    clip to 0..:data:`COUNTS_MAX`, ``process(counts, rng)`` (the camera's processing),
    ``agc(counts)`` -> uint8, then ``after(image)`` (the mount: a rotation). Random draws come from
    the generator ``[seed, index]``."""
    def fn(i: int, frame: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([seed, i])
        rad = frame.astype(np.float64)
        counts = to_counts(resample(rad, size))
        sigma = noise_sigma(counts, noise_grey)
        if scene_fn is not None:
            counts = to_counts(resample(scene_fn(rad, rng), size))
        if noise:
            counts = counts + rng.normal(0.0, sigma, counts.shape)
        counts = np.clip(counts, 0.0, COUNTS_MAX)
        if process is not None:
            counts = process(counts, rng)
        out = agc(counts)
        return after(out) if after is not None else out
    return fn


def _centre_4x3(root):
    """RoadScene test frames' 4:3 centre, 640×480 of the 640×512 frame."""
    return [(n, f[16:496]) for n, f in _set("roadscene-ir")(root)]


#: name -> (frame loader (data root -> [(stem, frame)]), per-frame map (index, frame) -> frame, what it is)
CAMERAS: Dict[str, Tuple[Callable, Callable, str]] = {
    "agc_plateau": (_raw, lambda i, f: plateau_equalise(f), "T1030sc raw counts, plateau equalisation to 8 bits"),
    "agc_clahe": (_raw, lambda i, f: clahe_agc(f), "T1030sc raw counts, CLAHE to 8 bits"),
    "tone_log": (_set("roadscene-ir"), lambda i, f: to_u8(255.0 * np.log1p(20.0 * f / 255.0) / np.log1p(20.0)),
                 "RoadScene, log tone curve k=20"),
    "black_hot": (_set("roadscene-ir"), lambda i, f: 255 - f, "RoadScene inverted (black hot)"),
    "tiny_80x60": (_set("hit_uav"), lambda i, f: cv2.resize(f, (80, 60), interpolation=cv2.INTER_AREA),
                   "HIT-UAV area-averaged to 80x60"),
    "soft_2x": (_set("chips_lepton35"), lambda i, f: cv2.resize(f, (f.shape[1] * 2, f.shape[0] * 2),
                                                                 interpolation=cv2.INTER_CUBIC),
                "Lepton 3.5 upscaled 2x bicubic (320x240)"),
    "shading": (_set("m3svd_magnity"), lambda i, f: shading(f), "M3SVD with strong vignette and ramp"),
    "netd_noise": (_set("roadscene-ir"), _noise, "RoadScene with white noise sigma 3.5 grey levels"),
    "column_fpn": (_set("hit_uav"), _column_fpn, "HIT-UAV with fixed column FPN sigma 1.5 grey levels"),
    "raw16_lowgain": (_raw, lambda i, f: remap_span(f, 300.0), "T1030sc counts, p1-p99 span 300 counts"),
    "raw16_highgain": (_raw, lambda i, f: remap_span(f, 20000.0), "T1030sc counts, p1-p99 span 20000 counts"),
    "pal_384x288": (_set("m3svd_magnity"), lambda i, f: cv2.resize(f, (384, 288), interpolation=cv2.INTER_AREA),
                    "M3SVD area-averaged to 384x288"),
    "halo": (_set("roadscene-ir"), lambda i, f: halo(f), "RoadScene with a hot-spot halo (sigma 25 px, +40)"),
    "false_colour": (_set("hit_uav"), lambda i, f: cv2.applyColorMap(f, cv2.COLORMAP_TURBO),
                     "HIT-UAV through the TURBO (rainbow) palette, colour PNG"),
    "osd_overlay": (_set("m3svd_magnity"), lambda i, f: osd(f), "M3SVD with OSD text, reticle and scale bar"),
    "row_fpn": (_set("hit_uav"), _row_fpn, "HIT-UAV with fixed row FPN sigma 1.5 grey levels"),
    "stuck_pixels": (_set("roadscene-ir"), lambda i, f: stuck_pixels(f),
                     "RoadScene with 0.05% stuck hot/dead pixels and a dead column"),
    "mjpeg_q50": (_set("roadscene-ir"), lambda i, f: jpeg(f, 50), "RoadScene through JPEG quality 50"),
    "saturated": (_set("roadscene-ir"), lambda i, f: saturate_top(f), "RoadScene, AGC top at p90: >=10% clipped"),
    "letterbox": (_set("m3svd_magnity"), lambda i, f: letterbox(f), "M3SVD 640x480 padded into 640x512, black bars"),
    "portrait": (_set("roadscene-ir"), lambda i, f: cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE),
                 "RoadScene rotated 90 degrees (512x640)"),
    "seek_206x156": (_set("hit_uav"), lambda i, f: cv2.resize(f, (206, 156), interpolation=cv2.INTER_AREA),
                     "HIT-UAV area-averaged to 206x156"),
    "pal_interlaced": (_set("m3svd_magnity"), lambda i, f: pal_capture(f),
                       "M3SVD as a PAL capture: 720x576, fields 1 px apart, horizontal soft"),
    "y16_fog": (_raw, lambda i, f: remap_span(f, 40.0, 28000.0), "T1030sc counts, p1-p99 span 40 counts at 28000"),
    "alc_flicker": (_set("m3svd_magnity"), _flicker, "M3SVD with per-frame AGC gain 0.8-1.2 and level +-20"),
    # round 3: camera pipelines (scene -> sensor size -> counts + noise -> processing -> per-frame AGC)
    "lepton25_80x60": (_set("hit_uav"), camera((80, 60), 1.0, linear_agc, 101),
                       "HIT-UAV at 80x60, noise 1.0 grey level, linear AGC per frame (Lepton 2.5)"),
    "lepton35_160x120": (_set("m3svd_magnity"), camera((160, 120), 0.35, plateau_agc, 102),
                         "M3SVD at 160x120, noise 0.35 (about 1.5 after its HEQ), plateau AGC per frame (Lepton 3.5)"),
    "boson_dde_320x256": (_set("hit_uav"), camera((320, 256), 0.6, dde_agc, 103),
                          "HIT-UAV at 320x256, noise 0.6, Boson-like DDE (detail x3) on plateau AGC"),
    "boson_dde_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6, dde_agc, 104),
                          "RoadScene at 640x512, noise 0.6, Boson-like DDE (detail x3) on plateau AGC"),
    "temporal_nr_640x480": (_set("m3svd_magnity"),
                            lambda i, f: camera((640, 480), 2.0, linear_agc, 105, noise=False,
                                                process=lambda c, rng: temporal_filter(
                                                    c, rng, 2.0, pan=1.0 if i % 2 else 0.0))(i, f),
                            "M3SVD, noise 2.0 through a recursive temporal filter (8 frames, alpha 0.25), "
                            "odd frames panning 1 px/frame, linear AGC"),
    "tc001_256x192": (_centre_4x3, camera((256, 192), 1.5, linear_agc, 106,
                                          process=lambda c, rng: cv2.GaussianBlur(c, (0, 0), 0.8,
                                                                                  borderType=cv2.BORDER_REFLECT)),
                      "RoadScene 4:3 centre at 256x192, noise 1.5, Gaussian smoothing 0.8 px, linear AGC (TC001/P2 Pro)"),
    "y16_indoor_160x120": (_set("chips_lepton35"), lambda i, f: y16_low_span(f, np.random.default_rng([107, i])),
                           "Lepton 3.5 indoor frames as Y16: span 200-400 counts at 8000-9000, noise 2-6 counts"),
    "hot_spot_640x480": (_set("m3svd_magnity"), camera((640, 480), 0.35, plateau_agc, 108, scene_fn=hot_object),
                         "M3SVD with a saturating hot object (0.5-2% of pixels), noise 0.35 (about 1.5 after its HEQ), plateau AGC"),
    "upside_down_640x512": (_set("roadscene-ir"), camera((640, 512), 1.0, linear_agc, 109,
                                                         after=lambda g: cv2.rotate(g, cv2.ROTATE_180)),
                            "RoadScene, noise 1.0, linear AGC, turned 180 degrees (mounted upside down)"),
    "vignette_agc_640x424": (_set("anti_uav"), camera((640, 424), 1.0, linear_agc, 110,
                                                      scene_fn=lambda r, rng: vignette(r, 0.6)),
                             "Anti-UAV sky with cos4 vignetting (corners 0.6), noise 1.0, linear AGC"),
}


# --- round 4 (session 15): cameras of kinds the 34 above do not cover ------------------------

def nearest_up(size: Tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """The camera's or viewer's display scaling as ``after`` for :func:`camera`: the image
    resized to ``size`` = (width, height) by nearest neighbour (each sensor pixel a flat block)."""
    return lambda g: cv2.resize(g, tuple(size), interpolation=cv2.INTER_NEAREST)


def bilinear_up(size: Tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """The display scaling as ``after`` for :func:`camera`: bilinear resize to ``size`` = (width,
    height), rounded back to uint8."""
    return lambda g: cv2.resize(g, tuple(size), interpolation=cv2.INTER_LINEAR)


def unsharp(amount: float, sigma: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """A camera's sharpening of its 8-bit video as ``after`` for :func:`camera`: the unsharp mask
    ``g + amount·(g − G_σ∗g)`` (Gaussian σ px, reflected borders), rounded and clipped to uint8."""
    def fn(g: np.ndarray) -> np.ndarray:
        f = g.astype(np.float64)
        return to_u8(f + amount * (f - cv2.GaussianBlur(f, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)))
    return fn


def tlinear_posterised(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Lepton in radiometric TLinear mode at 0.1 K resolution (Y16 = kelvin × 10,
    thermal_io.md's Lepton row) shown through a per-frame min/max linear AGC (GetThermal's,
    thermal_io.md §3.3): the frame's 1st-99th percentiles map to a scene span drawn in 3-6 K
    from 293.15 K, plus the sensor's NETD (σ 0.05 K), quantised to 0.1 K (30-60 levels between
    the percentiles, a few more in the tails), then stretched to 8 bits: a banded image of tens of
    grey levels, steps of several grey levels. uint8, same shape."""
    span_k = rng.uniform(3.0, 6.0)
    g = grey.astype(np.float64)
    p1, p99 = np.percentile(g, (1, 99))
    kelvin = 293.15 + (g - p1) / max(p99 - p1, 1.0) * span_k + rng.normal(0.0, 0.05, g.shape)
    return linear_agc(np.rint(kelvin * 10.0))


#: Lepton telemetry rows appended under a 160×120 image (flirpy's Lepton reader strips
#: ``image[:-2]``, thermal_io.md's PureThermal row: Y16 160×122)
TELEMETRY_ROWS = 2


def lepton_telemetry(words_per_row: int, frame: int, fpa_k100: float, rng: np.random.Generator) -> np.ndarray:
    """Two telemetry rows as a Lepton with telemetry enabled appends them to its Y16 frame
    (the row-A layout of the Lepton engineering datasheet 500-0659-00-09, telemetry section;
    word positions ours where the layout names only the field): revision word, a 32-bit
    millisecond time counter, status bits, an 8-word serial number, software revision, a 32-bit
    frame counter, the frame mean, FPA and housing temperatures in counts and in kelvin × 100,
    the last FFC's FPA temperature and time, AGC region words; every other word 0.
    (2, words_per_row) uint16."""
    rows = np.zeros((TELEMETRY_ROWS, words_per_row), np.uint16)
    ms = 600_000 + 111 * frame
    serial = np.random.default_rng(4242).integers(0, 65536, 8)  # one module, one serial number
    a = [0x000E, ms & 0xFFFF, ms >> 16, 0x0008, 0x0000, *serial, 0x0300, 0x0021, 0x0000, 0x0000,
         (1000 + frame) & 0xFFFF, 0x0000, int(fpa_k100) - 6000, 8192 + int(rng.integers(-40, 40)),
         int(fpa_k100), 8300, int(fpa_k100) + 150, 0, int(fpa_k100) - 20, 51_000 & 0xFFFF, 0,
         0, 0, 119, 159, 2000, 0]
    rows[0, :len(a)] = np.asarray(a, np.int64).astype(np.uint16)
    return rows


def y16_with_telemetry(i: int, grey: np.ndarray) -> np.ndarray:
    """A Lepton 3.5 on a PureThermal board, radiometric TLinear at 0.01 K (Y16 = kelvin × 100),
    telemetry enabled: the image's 1st-99th percentiles map to a span drawn in 3-8 K from
    a base drawn in 293-298 K, the sensor's NETD σ 0.05 K, rounded to counts, and
    :data:`TELEMETRY_ROWS` telemetry rows (:func:`lepton_telemetry`) under it: (H + 2, W)
    uint16."""
    rng = np.random.default_rng([207, i])
    span_k, base_k = rng.uniform((3.0, 293.0), (8.0, 298.0))
    g = grey.astype(np.float64)
    p1, p99 = np.percentile(g, (1, 99))
    kelvin = base_k + (g - p1) / max(p99 - p1, 1.0) * span_k + rng.normal(0.0, 0.05, g.shape)
    img = np.clip(np.rint(kelvin * 100.0), 0, 65535).astype(np.uint16)
    return np.vstack([img, lepton_telemetry(g.shape[1], i, 30500.0 + 10 * i, rng)])


def dead_columns(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A core's failed column read-outs, the same columns in every frame (seeded by the camera):
    three single columns and one adjacent pair reading the bottom of the counts (dead), one column
    at the 14-bit top (stuck high). Float counts, same shape."""
    out = counts.copy()
    w = counts.shape[1]
    cols = np.random.default_rng(208).choice(np.arange(8, w - 9), 5, replace=False)
    for c in cols[:3]:
        out[:, c] = 0.0
    out[:, cols[3]:cols[3] + 2] = 0.0
    out[:, cols[4]] = COUNTS_MAX
    return out


def y16_high_bits(i: int, grey: np.ndarray) -> np.ndarray:
    """14-bit counts stored MSB-aligned in 16-bit PNGs (``counts << 2``, every value a multiple
    of 4: a frame grabber or recorder that left-aligns Mono14 in a 16-bit word): a narrow scene,
    the frame's 1st-99th percentiles spanning a span drawn in 30-60 counts of the 14-bit core
    from a base drawn in 7000-8000, white noise σ 1.5 counts, rounded to whole 14-bit counts,
    then shifted. uint16, same shape."""
    rng = np.random.default_rng([209, i])
    span, base = rng.uniform((30.0, 7000.0), (60.0, 8000.0))
    c = remap_span(grey, span, base).astype(np.float64) + rng.normal(0.0, 1.5, grey.shape)
    return (np.clip(np.rint(c), 0, 16383).astype(np.uint16) << 2).astype(np.uint16)


def hd_upsampled(i: int, counts: np.ndarray) -> np.ndarray:
    """A 1280×1024 camera from 960×768 (5:4) T1030sc counts: resized (bicubic) to 1280×1024,
    then plateau histogram AGC to 8 bits (uint8, 1024×1280)."""
    c = cv2.resize(counts.astype(np.float32), (1280, 1024), interpolation=cv2.INTER_CUBIC)
    return plateau_agc(c.astype(np.float64))


def _raw_5x4(root):
    """Two 960×768 (5:4) crops, left and right, of every T1030sc raw test frame (1024×768)."""
    out = []
    for n, f in split_frames(root, "flir_raw16_mixed", RAW_CAMERA):
        out += [(f"{Path(n).stem}-l", f[:768, :960]), (f"{Path(n).stem}-r", f[:768, f.shape[1] - 960:])]
    return out


def _repeated(load: Callable, times: int) -> Callable:
    """A loader whose frames come ``times`` times each in a row (a stream that repeats every
    sensor frame), file stems suffixed ``-r0``, ``-r1``, …"""
    def fn(root):
        return [(f"{s}-r{k}", f) for s, f in load(root) for k in range(times)]
    return fn


def repeat_frame(fn: Callable, times: int) -> Callable:
    """A per-frame map that gives the ``times`` copies of one sensor frame the same output: the
    map of ``fn`` at the sensor frame's index ``i // times`` (same noise draw, byte-identical)."""
    return lambda i, f: fn(i // times, f)


#: an ironbow palette ("Iron", FLIR's default palette) as RGB control points at 0, 0.2, …, 1:
#: black, deep blue-violet, magenta, orange, yellow, white (the points are ours)
IRONBOW_RGB = np.array([[0, 0, 0], [32, 0, 140], [204, 0, 119], [255, 90, 0], [255, 200, 0], [255, 255, 255]],
                       np.float64)


def ironbow_to_grey(g: np.ndarray) -> np.ndarray:
    """An ironbow-palette frame turned back to grey by a user: the palette (:data:`IRONBOW_RGB`,
    linear between control points) looked up per grey level, then BT.601 luma (OpenCV's
    ``COLOR_BGR2GRAY``: 0.299 R + 0.587 G + 0.114 B). Monotone but not linear: the palette's
    dark half (blue/magenta) is compressed to 0-75 of luma. uint8, same shape."""
    x = np.linspace(0.0, 1.0, len(IRONBOW_RGB))
    lut = np.stack([np.interp(np.arange(256) / 255.0, x, IRONBOW_RGB[:, k]) for k in range(3)], 1)
    bgr = to_u8(lut[g])[..., ::-1].copy()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


#: round 4: cameras of kinds the 34 of :data:`CAMERAS` do not cover (``--round 4``), same layout
ROUND4: Dict[str, Tuple[Callable, Callable, str]] = {
    "mlx90640_nn_640x480": (_set("m3svd_magnity"), camera((32, 24), 1.5, linear_agc, 201, after=nearest_up((640, 480))),
                            "M3SVD at 32x24 (MLX90640), noise 1.5, linear AGC, shown 20x nearest neighbour at 640x480"),
    "lepton_nn_640x480": (_set("hit_uav"), camera((80, 60), 1.0, linear_agc, 202, after=nearest_up((640, 480))),
                          "HIT-UAV at 80x60 (Lepton 2.5), noise 1.0, linear AGC, shown 8x nearest neighbour at 640x480"),
    "p2pro_bilinear_1024x768": (_centre_4x3, camera((256, 192), 1.5, linear_agc, 203,
                                                    process=lambda c, rng: cv2.GaussianBlur(
                                                        c, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT),
                                                    after=bilinear_up((1024, 768))),
                                "RoadScene 4:3 centre at 256x192 (P2 Pro/TC001), noise 1.5, smoothing 0.8 px, "
                                "linear AGC, shown 4x bilinear at 1024x768"),
    "usm_mild_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6, linear_agc, 204, after=unsharp(0.7)),
                         "RoadScene, noise 0.6, linear AGC, unsharp mask amount 0.7 sigma 1 px"),
    "usm_strong_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6, linear_agc, 205, after=unsharp(2.0)),
                           "RoadScene, noise 0.6, linear AGC, unsharp mask amount 2.0 sigma 1 px"),
    "tlinear_banded_160x120": (_set("chips_lepton35"), lambda i, f: tlinear_posterised(f, np.random.default_rng([206, i])),
                               "Lepton 3.5 TLinear 0.1 K: 3-6 K span (p1-p99), 30-60 levels, min/max AGC (banded)"),
    "y16_telemetry_160x122": (_set("chips_lepton35"), y16_with_telemetry,
                              "Lepton 3.5 Y16 TLinear 0.01 K with 2 telemetry rows at the bottom (160x122)"),
    "dead_columns_320x256": (_set("hit_uav"), camera((320, 256), 0.6, plateau_agc, 208, process=dead_columns),
                             "HIT-UAV at 320x256, noise 0.6, 5 dead columns (one pair) and 1 stuck high, plateau AGC"),
    "y16_msb_640x512": (_raw, y16_high_bits,
                        "T1030sc counts as a 14-bit core, span 30-60 counts at 7000-8000, stored << 2 (multiples of 4)"),
    "hd_1280x1024": (_raw_5x4, hd_upsampled, "T1030sc 960x768 crops resized bicubic to 1280x1024, plateau AGC"),
    "dup_9hz_640x512": (_repeated(_set("hit_uav"), 3), repeat_frame(camera((640, 512), 1.0, linear_agc, 211), 3),
                        "HIT-UAV, noise 1.0, linear AGC, every sensor frame 3 times (9 Hz core in a 27-30 Hz stream)"),
    "vignette_wide_160x120": (_set("chips_lepton35"), camera((160, 120), 0.35, linear_agc, 212,
                                                             scene_fn=lambda r, rng: vignette(r, 0.3)),
                              "Lepton 3.5 frames with wide-FOV cos4 vignetting (corners 0.3), noise 0.35, linear AGC"),
    "ironbow_grey_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6, linear_agc, 213, after=ironbow_to_grey),
                             "RoadScene, noise 0.6, linear AGC, ironbow palette turned back to grey (BT.601 luma)"),
}

# --- round 5: cameras of kinds the 48 above do not cover -------------------------------------

#: round 5's FFC schedule in a 12-frame folder: the frames at which the shutter is closed
FFC_SHUTTER = (5, 6)


def ffc_shutter_frame(counts: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """The closed shutter (flag) as the sensor sees it during an FFC: a uniform radiance at the
    frame's median counts (the flag sits at the housing's temperature, inside the scene's span),
    plus the sensor's own white noise (σ counts): no scene. Float counts, same shape."""
    return np.full(counts.shape, float(np.median(counts))) + rng.normal(0.0, sigma, counts.shape)


def ffc_shutter_camera(size: Tuple[int, int], noise_grey: float, seed: int, shutter=FFC_SHUTTER) -> Callable:
    """A Lepton on a PureThermal board through GetThermal's per-frame min/max AGC (thermal_io.md
    §3.3) whose stream keeps running while the shutter is closed for an FFC (thermal_io.md §5:
    the camera closes a flag and integrates N frames; Boson/Lepton default every few minutes or on
    an FPA temperature change): the frames whose index is in ``shutter`` are
    :func:`ffc_shutter_frame`, which the min/max AGC stretches to the full 8 bits (the flag's white
    noise over 0..255), the others the scene as :func:`camera` makes it. Per-frame map
    ``(index, frame) -> uint8``."""
    scene = camera(size, noise_grey, linear_agc, seed)

    def fn(i: int, frame: np.ndarray) -> np.ndarray:
        if i not in shutter:
            return scene(i, frame)
        rng = np.random.default_rng([seed, i])
        counts = to_counts(resample(frame.astype(np.float64), size))
        return linear_agc(ffc_shutter_frame(counts, rng, noise_sigma(counts, noise_grey)))
    return fn


#: round 5's FFC between frames 7 and 8 of the drift camera: the offsets grow over frames 0-7, are
#: reset by the FFC and grow again over 8-11
FFC_AT = 8


def drift_since_ffc(i: int, ffc_at: int = FFC_AT) -> float:
    """The FPA temperature change since the last FFC in units of the drift camera's largest one:
    frames 0..``ffc_at``−1 rise linearly from 0 to 1, the FFC resets it, and the frames after it
    rise again at the same rate."""
    k = i if i < ffc_at else i - ffc_at
    return k / max(ffc_at - 1, 1)


def column_drift(i: int, counts: np.ndarray, grey_at_max: float = 2.5, seed: int = 302, ffc_at: int = FFC_AT) -> np.ndarray:
    """Column offsets that drift between FFCs: each column's read-out (one amplifier per column,
    thermal_io.md §5) has its own offset coefficient per kelvin of FPA temperature change (drawn
    once for the camera, N(0, 1)); the offsets are the coefficients × :func:`drift_since_ffc`
    (with ``ffc_at``),
    scaled so that at the largest change their σ is ``grey_at_max`` grey levels of the scene's
    min-max AGC. Float counts, same shape."""
    w = counts.shape[1]
    coeff = np.random.default_rng(seed).normal(0.0, 1.0, w)
    per_grey = float(counts.max() - counts.min()) / 255.0
    return counts + drift_since_ffc(i, ffc_at) * grey_at_max * per_grey * coeff[None, :]


def motion_blur(length: float, angle_deg: float) -> Callable[[np.ndarray], np.ndarray]:
    """The camera panning during the detector's integration: a 1-D box kernel of ``length`` px at
    ``angle_deg`` from the rows, applied to the scene (reflected borders). float64, same shape."""
    n = int(np.ceil(length)) | 1
    k = np.zeros((n, n), np.float64)
    c = (n - 1) / 2.0
    t = np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, max(int(round(length)) * 4, 2))
    a = np.deg2rad(angle_deg)
    for x, y in zip(c + t * np.cos(a), c - t * np.sin(a)):
        k[int(round(y)), int(round(x))] += 1.0
    k /= k.sum()
    return lambda r: cv2.filter2D(r.astype(np.float64), -1, k, borderType=cv2.BORDER_REFLECT)


def pan_scene(r: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pan's smear of the scene: :func:`motion_blur` with a length drawn in 5-15 px and a
    direction drawn within ±20° of the rows (a UAV gimbal or a vehicle camera turning)."""
    return motion_blur(rng.uniform(5.0, 15.0), rng.uniform(-20.0, 20.0))(r)


def manual_agc(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Tau2/Quark in manual AGC (gain and level fixed by the user, FLIR app note 102-PS242-100-01,
    thermal_io.md §4.1): a fixed linear map from counts to 8 bits set for a wider scene than this
    one, so the frame's 1st-99th percentiles cover a span drawn in 8-20 grey levels around a level
    drawn in 90-160 (posterised: tens of grey levels at most). uint8, same shape."""
    span, level = rng.uniform((8.0, 90.0), (20.0, 160.0))
    p1, p99 = np.percentile(counts, (1, 99))
    return to_u8(level + (counts - (p1 + p99) / 2.0) * span / max(p99 - p1, 1e-9))


def usb_tear(i: int, frame: np.ndarray, seed: int = 305) -> np.ndarray:
    """A USB capture that tears: the rows above a tear row (drawn in 30-70 % of the height) come
    from the new exposure, those below from the previous one, the camera having panned a drawn
    4-12 px along the rows between the two (edge pixels repeated). uint8, same shape."""
    rng = np.random.default_rng([seed, i])
    h, w = frame.shape
    tear, shift = int(rng.uniform(0.3, 0.7) * h), int(rng.integers(4, 13))
    prev = np.concatenate([np.repeat(frame[:, :1], shift, 1), frame[:, :-shift]], axis=1)
    out = frame.copy()
    out[tear:] = prev[tear:]
    return out


def optris_counts(i: int, grey: np.ndarray) -> np.ndarray:
    """An Optris PI 400/450-class camera [U]: a 382×288 detector whose 16-bit output is the
    temperature as ``(T[°C] + 100) × 10`` (0.1 K per count, [U]), so an indoor or street scene of
    15-40 °C fills 1150-1400 of the 12 bits: the scene (area-resampled) mapped so that its 1st-99th
    percentiles span a drawn 6-20 K from a drawn 15-25 °C, NETD σ 0.04 K, rounded. uint16,
    288×382."""
    rng = np.random.default_rng([306, i])
    span_k, base_c = rng.uniform((6.0, 15.0), (20.0, 25.0))
    g = resample(grey, (382, 288))
    p1, p99 = np.percentile(g, (1, 99))
    c = base_c + (g - p1) / max(p99 - p1, 1.0) * span_k + rng.normal(0.0, 0.04, g.shape)
    return np.clip(np.rint((c + 100.0) * 10.0), 0, 4095).astype(np.uint16)


def ici_counts(i: int, grey: np.ndarray) -> np.ndarray:
    """An ICI 8640-class 640×512 core's raw 16-bit counts [U]: a large offset (the frame's 1st
    percentile at a drawn 48000-54000), a span drawn in 1500-4000 counts to the 99th, white noise
    σ 3 counts, and a hot object (:func:`hot_object`) that clips at the 16-bit top (65535).
    uint16, same shape."""
    rng = np.random.default_rng([307, i])
    span, base = rng.uniform((1500.0, 48000.0), (4000.0, 54000.0))
    g = grey.astype(np.float64)
    p1, p99 = np.percentile(g, (1, 99))
    scene = (g - p1) / max(p99 - p1, 1.0)
    scene = hot_object(scene, rng, level=(65535.0 - base) / span + 1.0)
    c = base + scene * span + rng.normal(0.0, 3.0, g.shape)
    return np.clip(np.rint(c), 0, 65535).astype(np.uint16)


def hot_entry(radiance: np.ndarray, rng: np.random.Generator, drop: float) -> np.ndarray:
    """A hot object (a person, an engine) entering the scene: a filled ellipse of 1-3 % of the
    pixels (optics σ 1 px) whose level makes a min-max AGC's gain fall by ``drop`` (0.2-0.4: the
    scene then spans 1 − ``drop`` of the 8 bits). float64, same shape."""
    h, w = radiance.shape
    lo, hi = float(radiance.min()), float(radiance.max())
    level = lo + (hi - lo) / (1.0 - drop)
    share, aspect = rng.uniform(0.01, 0.03), rng.uniform(0.4, 0.8)
    mask = ellipse_mask((h, w), share, aspect, rng, blur=1.0)
    return radiance * (1 - mask) + level * mask


def pumping_scene(r: np.ndarray, rng: np.random.Generator, hot: bool) -> np.ndarray:
    """agc_pump's scene: with ``hot`` the scene with :func:`hot_entry` (a gain drop drawn in
    0.2-0.4), else as it is."""
    return hot_entry(r, rng, rng.uniform(0.2, 0.4)) if hot else r


def pumping_camera(size: Tuple[int, int], noise_grey: float, seed: int,
                   present: Callable[[int], bool] = lambda i: i % 2 == 1) -> Callable:
    """:func:`camera` with :func:`pumping_scene`, the hot object in the frames whose index
    ``present`` accepts (default the odd ones, so the camera's linear AGC pumps between the two gains
    from frame to frame): a per-frame map ``(index, frame) -> uint8``."""
    return lambda i, f: camera(size, noise_grey, linear_agc, seed,
                               scene_fn=lambda r, rng: pumping_scene(r, rng, present(i)))(i, f)


def lens_drops(radiance: np.ndarray, seed: int = 309) -> np.ndarray:
    """Water drops or dirt on the lens window, the same for every frame (seeded by the camera):
    water is nearly opaque in the 8-14 µm band [U: absorption length of tens of µm], so each of
    8-14 drops (radius 2-6 % of the width) shows its own temperature, the scene's median, at a
    drawn 50-85 % opacity; the drops sit far out of focus on the window (soft edges, Gaussian σ
    4 % of the width). float64, same shape."""
    h, w = radiance.shape
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.float64)
    for _ in range(int(rng.integers(8, 15))):
        r = rng.uniform(0.02, 0.06) * w
        cv2.circle(mask, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(round(r)),
                   float(rng.uniform(0.5, 0.85)), -1)
    mask = np.clip(cv2.GaussianBlur(mask, (0, 0), 0.04 * w), 0.0, 1.0)
    return radiance * (1 - mask) + float(np.median(radiance)) * mask


#: round 5: cameras of kinds the 48 of rounds 1-4 do not cover (``--round 5``), same layout
ROUND5: Dict[str, Tuple[Callable, Callable, str]] = {
    "ffc_shutter_160x120": (_set("chips_lepton35"), ffc_shutter_camera((160, 120), 0.35, 301),
                            "Lepton 3.5, noise 0.35, min/max AGC; frames 5-6 the closed FFC shutter (flag noise stretched)"),
    "fpn_drift_640x512": (_set("hit_uav"), lambda i, f: camera((640, 512), 0.6, linear_agc, 302,
                                                             process=lambda c, rng: column_drift(i, c))(i, f),
                          "HIT-UAV, noise 0.6, column offsets growing since the last FFC (0 -> 2.5 grey levels), FFC at frame 8"),
    "pan_blur_640x512": (_set("hit_uav"), camera((640, 512), 0.6, linear_agc, 303, scene_fn=pan_scene),
                         "HIT-UAV panned: 1-D box smear 5-15 px within 20 deg of the rows, noise 0.6, linear AGC"),
    "manual_agc_narrow_640x512": (_set("roadscene-ir"), lambda i, f: camera(
                                      (640, 512), 0.6, lambda c: manual_agc(c, np.random.default_rng([304, i, 1])), 304)(i, f),
                                  "RoadScene, noise 0.6, Tau2 manual AGC: the scene in 8-20 grey levels at 90-160"),
    "usb_tear_640x512": (_set("roadscene-ir"), usb_tear,
                         "RoadScene, the rows below a tear (30-70 % of the height) from the previous exposure, 4-12 px panned"),
    "optris_382x288": (_set("m3svd_magnity"), optris_counts,
                       "M3SVD as an Optris PI 450: 382x288, Y16 = (T + 100) x 10, 6-20 K scenes at 15-25 C (12-bit values)"),
    "ici_offset_640x512": (_raw, ici_counts,
                           "T1030sc scenes as ICI-style counts: base 48000-54000, span 1500-4000, a hot object clipped at 65535"),
    "agc_pump_640x512": (_set("roadscene-ir"), pumping_camera((640, 512), 0.6, 308),
                         "RoadScene, noise 0.6, linear AGC; a hot object in the odd frames drops the gain by 20-40 %"),
    "lens_drops_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6, linear_agc, 309,
                                                        scene_fn=lambda r, rng: lens_drops(r)),
                           "RoadScene with 8-14 out-of-focus drops on the window (50-85 % opaque), noise 0.6, linear AGC"),
}

# --- round 6: cameras of kinds the 56 above do not cover -------------------------------------

#: BT.601 digital video: 720 samples a line of which 704 are the active picture (8 blank each side),
#: and the luma's limited ("studio") range, black at 16 and white at 235
BT601_WIDTH, BT601_ACTIVE, BT601_BLACK, BT601_WHITE = 720, 704, 16, 235


def ntsc_one_field(g: np.ndarray) -> np.ndarray:
    """A Tau 2's analog NTSC video through a USB grabber that captures one field and doubles its lines
    (``after`` for :func:`camera`): the 640×480 image resized (bilinear) to BT.601's 704 active
    samples by 480 lines, the even lines kept (one 240-line field) and each shown twice, placed in a
    720-sample line with 8 black (0) samples either side. uint8, 480×720."""
    active = cv2.resize(g, (BT601_ACTIVE, 480), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((480, BT601_WIDTH), np.uint8)
    pad = (BT601_WIDTH - BT601_ACTIVE) // 2
    out[:, pad:pad + BT601_ACTIVE] = np.repeat(active[0::2], 2, axis=0)
    return out


def studio_range(g: np.ndarray, size: Tuple[int, int] = (720, 576)) -> np.ndarray:
    """A PAL grabber's limited-range luma kept as it comes (``after`` for :func:`camera`): the image
    resized (bilinear) to ``size`` = (width, height), then ``16 + g·219/255``: black at
    :data:`BT601_BLACK`, white at :data:`BT601_WHITE` (ITU-R BT.601), not expanded to 0-255 by the
    capture software. uint8, (height, width)."""
    f = cv2.resize(g, tuple(size), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    return to_u8(BT601_BLACK + f * (BT601_WHITE - BT601_BLACK) / 255.0)


#: a radiometric Boson's TLinear Y16 in low gain: counts per kelvin (thermal_io.md §1.6: "K×100 in
#: high gain (K×50 in low gain, per a third-party design note)")
BOSON_LOW_GAIN_PER_K = 50.0


def boson_tlinear_low(i: int, grey: np.ndarray) -> np.ndarray:
    """A radiometric Boson 640 in TLinear, low gain: Y16 = kelvin × :data:`BOSON_LOW_GAIN_PER_K`
    (0.02 K per count). The scene's 1st-99th percentiles span a drawn 8-20 K from a drawn
    285-300 K, with a hot object (:func:`ellipse_mask`: 0.5-2 % of the pixels, an engine or an
    exhaust at a drawn 350-450 K; low gain is the mode for such scenes), NETD σ 0.04 K, rounded.
    uint16, same shape (values 14250-22500)."""
    rng = np.random.default_rng([603, i])
    span_k, base_k, hot_k = rng.uniform((8.0, 285.0, 350.0), (20.0, 300.0, 450.0))
    g = grey.astype(np.float64)
    p1, p99 = np.percentile(g, (1, 99))
    kelvin = base_k + (g - p1) / max(p99 - p1, 1.0) * span_k
    mask = ellipse_mask(g.shape, rng.uniform(0.005, 0.02), rng.uniform(0.6, 1.6), rng, blur=0.7)
    kelvin = kelvin * (1 - mask) + hot_k * mask + rng.normal(0.0, 0.04, g.shape)
    return np.clip(np.rint(kelvin * BOSON_LOW_GAIN_PER_K), 0, 65535).astype(np.uint16)


#: status bits a 14-bit core's word carries above its counts in round 6's status_bits camera [U]:
#: bit 14 the frame's parity, bit 15 "FFC desired" (thermal_io.md §5: the camera raises the flag)
PARITY_BIT, FFC_DESIRED_BIT = 14, 15
#: the frames of a 12-frame folder during which the FFC-desired flag is up
FFC_DESIRED = range(4, 9)


def status_bit_counts(i: int, grey: np.ndarray, desired=FFC_DESIRED) -> np.ndarray:
    """A 14-bit core whose 16-bit words carry status above the counts [U: the bit layout is ours; a
    Camera Link / parallel tap that sends the status with every pixel]: the counts (the frame's
    1st-99th percentiles spanning a drawn 2000-6000 counts from a drawn 4000-6000, white noise σ 3
    counts, clipped to 14 bits) OR the frame's parity at :data:`PARITY_BIT` OR the FFC-desired
    flag at :data:`FFC_DESIRED_BIT` on the frames in ``desired`` (default :data:`FFC_DESIRED`). uint16, same shape: the
    whole frame jumps by 16384 or 32768 counts from one frame to the next."""
    rng = np.random.default_rng([607, i])
    span, base = rng.uniform((2000.0, 4000.0), (6000.0, 6000.0))
    c = remap_span(grey, span, base).astype(np.float64) + rng.normal(0.0, 3.0, grey.shape)
    c = np.clip(np.rint(c), 0, 16383).astype(np.uint16)
    flags = ((i & 1) << PARITY_BIT) | ((1 << FFC_DESIRED_BIT) if i in desired else 0)
    return (c | np.uint16(flags)).astype(np.uint16)


#: pixels per VoSPI packet of a Lepton 3.x (a packet carries half a 160-pixel line [U: Lepton
#: engineering datasheet, VoSPI section])
VOSPI_PACKET_PX = 80


def vospi_lost_packets(i: int, g: np.ndarray, seed: int = 608) -> np.ndarray:
    """A Lepton 3.5 read over VoSPI by a host that loses packets (an SPI clock too fast, a busy host
    [U]) and keeps the last good packet of the same half line in its place: 1-4 packets drawn per
    frame (not in the first line), each a half line of :data:`VOSPI_PACKET_PX` pixels replaced by the
    half line above it. uint8, same shape (160×120: two packets a line)."""
    rng = np.random.default_rng([seed, i])
    out = g.copy()
    h, w = g.shape
    halves = w // VOSPI_PACKET_PX
    for p in rng.choice(np.arange(halves, h * halves), int(rng.integers(1, 5)), replace=False):
        y, x0 = divmod(int(p), halves)
        x0 *= VOSPI_PACKET_PX
        out[y, x0:x0 + VOSPI_PACKET_PX] = out[y - 1, x0:x0 + VOSPI_PACKET_PX]
    return out


#: round 6's warm-up camera: the FFC the FPA's temperature change triggers (before this frame)
WARMUP_FFC_AT = 6


def warmup_counts(i: int, grey: np.ndarray, seed: int = 609, ffc_at: int = WARMUP_FFC_AT, frames: int = FRAMES) -> np.ndarray:
    """A Boson 320's Y16 pre-AGC counts over the first minutes after power-up (thermal_io.md §5: the
    offsets drift with the FPA and housing temperature, the FFC recomputes the per-pixel offsets,
    the lens and housing's own radiation shades the frame; §1.6: the FFC triggered by an FPA
    temperature change): the scene at 320×256 as :func:`camera` counts it (noise 0.6 grey levels),
    then the drift over ``frames`` frames: (1) the whole frame's level rising by 16.5 grey levels
    (1.5 a frame in a 12-frame folder); (2) per-pixel offsets (N(0, 1) per pixel, drawn once for
    the camera) × :func:`drift_since_ffc` (FFC before frame ``ffc_at``) at σ 2 grey levels at the
    largest change; (3) the housing's radiation, a dome ``1 − r²`` (r = 1 at the corners) growing
    from 0 to 25 % of the scene's span (not removed by the FFC: the shutter sits behind the lens [U]). Uint16 counts
    (14-bit range), 256×320."""
    rng = np.random.default_rng([seed, i])
    counts = to_counts(resample(grey.astype(np.float64), (320, 256)))
    per_grey = float(counts.max() - counts.min()) / 255.0
    counts = counts + rng.normal(0.0, noise_sigma(counts, 0.6), counts.shape)
    h, w = counts.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r2 = ((x - (w - 1) / 2) / ((w - 1) / 2)) ** 2 / 2 + ((y - (h - 1) / 2) / ((h - 1) / 2)) ** 2 / 2
    pixel = np.random.default_rng(seed).normal(0.0, 1.0, (h, w))
    counts = (counts + 1.5 * i * (FRAMES - 1) / (frames - 1) * per_grey
              + drift_since_ffc(i, ffc_at) * 2.0 * per_grey * pixel
              + (i / (frames - 1)) * 0.25 * 255.0 * per_grey * (1.0 - r2))
    return np.clip(np.rint(counts), 0, COUNTS_MAX).astype(np.uint16)


def row_flicker(counts: np.ndarray, rng: np.random.Generator, grey: float = 1.5) -> np.ndarray:
    """Temporal row noise (``process`` for :func:`camera`): every row's offset drawn anew each frame,
    σ ``grey`` grey levels of the frame's min-max AGC (thermal_io.md §5: row-wise bias and timing
    effects show as horizontal stripes; that they change from frame to frame, a row's bias read
    with its own noise, is [U]). Float counts, same shape."""
    per_grey = float(counts.max() - counts.min()) / 255.0
    return counts + rng.normal(0.0, grey * per_grey, counts.shape[0])[:, None]


def sky_target(radiance: np.ndarray, rng: np.random.Generator, share: float = 0.0003) -> np.ndarray:
    """A small UAV against the sky (``scene_fn`` for :func:`camera`): a filled ellipse of ``share`` of
    the pixels (about 100 px at 640×512: a drone a few hundred metres off) at a drawn place, its
    motor and battery far hotter than the sky: at the sky's median plus a drawn 8-15 × the sky's
    1st-99th percentile span (optics σ 0.7 px). The per-frame min/max AGC (GetThermal, BosonUSB,
    thermal_io.md §3.3; §4.2: "a single hot pixel dominates") then spends most of the 8 bits on the
    target and squeezes the sky's 1st-99th percentiles into about a quarter of them (65-73 grey
    levels on the round's 12 frames: the sky's tails beyond them widen the span). float64, same shape."""
    p1, p50, p99 = np.percentile(radiance, (1, 50, 99))
    level = p50 + rng.uniform(8.0, 15.0) * max(p99 - p1, 1.0)
    mask = ellipse_mask(radiance.shape, share, rng.uniform(0.8, 2.0), rng, blur=0.7)
    return radiance * (1 - mask) + level * mask


#: round 6: cameras of kinds the 56 of rounds 1-5 do not cover (``--round 6``), same layout
ROUND6: Dict[str, Tuple[Callable, Callable, str]] = {
    "ntsc_field_720x480": (_set("m3svd_magnity"), camera((640, 480), 0.6, linear_agc, 601, after=ntsc_one_field),
                           "M3SVD, noise 0.6, linear AGC, Tau 2 NTSC through a grabber: one field line-doubled, "
                           "704 active samples in 720 (8 black each side)"),
    "studio_range_720x576": (_set("roadscene-ir"), camera((640, 512), 0.6, linear_agc, 602, after=studio_range),
                             "RoadScene, noise 0.6, linear AGC, PAL grabber at 720x576, BT.601 limited range 16-235"),
    "boson_tlinear_low_640x512": (_set("roadscene-ir"), boson_tlinear_low,
                                  "RoadScene as a radiometric Boson in TLinear low gain: Y16 = K x 50, 8-20 K scenes "
                                  "at 285-300 K, a 350-450 K hot object"),
    "dde_max_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6,
                                                     lambda c: dde_agc(c, sigma=6.0, detail_gain=6.0), 604),
                        "RoadScene, noise 0.6, DDE at its maximum: a 6-px detail layer at 6x (halos), plateau base"),
    "mirror_640x512": (_set("roadscene-ir"), camera((640, 512), 1.0, linear_agc, 605, after=lambda g: cv2.flip(g, 1)),
                       "RoadScene, noise 1.0, linear AGC, mirrored left-right (Tau 2 orientation 'revert')"),
    "vflip_640x512": (_set("roadscene-ir"), camera((640, 512), 1.0, linear_agc, 606, after=lambda g: cv2.flip(g, 0)),
                      "RoadScene, noise 1.0, linear AGC, flipped top-bottom (Tau 2 orientation 'invert')"),
    "status_bits_640x512": (_raw, status_bit_counts,
                            "T1030sc scenes as 14-bit counts (span 2000-6000 at 4000-6000) with bit 14 the frame "
                            "parity and bit 15 an FFC-desired flag on frames 4-8"),
    "vospi_loss_160x120": (_set("chips_lepton35"), lambda i, f: vospi_lost_packets(
                               i, camera((160, 120), 0.35, linear_agc, 608)(i, f)),
                           "Lepton 3.5, noise 0.35, min/max AGC, 1-4 lost VoSPI packets a frame (half lines "
                           "repeated from the line above)"),
    "warmup_320x256": (_set("hit_uav"), warmup_counts,
                       "HIT-UAV as Boson 320 Y16 counts warming up: level +1.5 grey/frame, pixel offsets growing "
                       "(FFC before frame 6), a housing dome growing to 25 % of the span"),
    "row_flicker_640x512": (_set("hit_uav"), camera((640, 512), 0.6, linear_agc, 610, process=row_flicker),
                            "HIT-UAV, noise 0.6, linear AGC, row offsets drawn anew every frame (sigma 1.5 grey levels)"),
    "sky_target_640x512": (_set("anti_uav"), camera((640, 512), 1.0, linear_agc, 611, scene_fn=sky_target),
                           "Anti-UAV sky with a small hot UAV (0.03 % of the pixels, 8-15 sky spans above it), "
                           "noise 1.0, min/max AGC: the sky in about a quarter of the 8 bits"),
}


# --- round 7: cameras of kinds the 67 above do not cover -------------------------------------

#: a Tau 2 isotherm palette's colour half as RGB control points at indices 128, 176, 224, 255: yellow,
#: orange, red, red (102-PS242-40 §3.3.3.1: "the bottom half ... gray shades and the upper half ...
#: colour shades (for example, yellow to orange to red)"; the RGB values are ours)
ISOTHERM_RGB = ((128, (255, 255, 0)), (176, (255, 165, 0)), (224, (255, 0, 0)), (255, (255, 0, 0)))
#: the isotherm's lower / middle / upper thresholds as percentiles of the frame's counts [ours: the user
#: sets them in degrees; percentiles keep some of every scene above them]
ISOTHERM_PCT = (97.0, 98.5, 99.5)


def isotherm_grey(counts: np.ndarray) -> np.ndarray:
    """A Tau 2 isotherm (FLIR Tau 2 Product Specification 102-PS242-40 §3.3.3.1) in colour video turned
    back to grey by a user (BT.601 luma, as ``COLOR_BGR2GRAY``): below the lower threshold the linear
    min-max AGC's grey shades (palette indices 0-127 spanning black to white); between the lower, middle
    and upper thresholds (:data:`ISOTHERM_PCT`) indices 128-175, 176-223 and 224-255 of
    :data:`ISOTHERM_RGB`, linear in the counts within each band. The isotherm's luma falls with heat
    (yellow 226, orange 173, red 76): the hottest objects turn darker than the warm scene around them.
    Float counts -> uint8, same shape."""
    c = counts.astype(np.float64)
    lo, hi = float(c.min()), float(c.max())
    t = np.percentile(c, ISOTHERM_PCT).tolist() + [hi]
    out = 255.0 * (c - lo) / max(t[0] - lo, 1e-9)          # the grey half: black to white below the lower threshold
    idx, rgb = [p[0] for p in ISOTHERM_RGB], np.array([p[1] for p in ISOTHERM_RGB], np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    for k in range(3):
        band = (c > t[k]) & (c <= t[k + 1]) if k < 2 else c > t[k]
        pos = idx[k] + (idx[k + 1] - 1 - idx[k]) * (c[band] - t[k]) / max(t[k + 1] - t[k], 1e-9)
        out[band] = np.interp(pos, idx, luma)
    return to_u8(out)


#: round 7's eZoom steps in a 12-frame folder: frames 0-3 at 1×, 4-7 at 2×, 8-11 at 4× (the step lasts
#: :data:`ZOOM_RUN` frames, then the cycle repeats)
ZOOM_STEPS, ZOOM_RUN = (1, 2, 4), 4


def ezoom(counts: np.ndarray, zoom: int) -> np.ndarray:
    """A Tau 2's digital eZoom (102-PS242-40 §3.3.2.4 [S: eZoom named there; that the AGC follows the
    zoomed field is U]): the centre 1/``zoom`` of the counts resized back to the full size by bilinear
    interpolation (OpenCV INTER_LINEAR). Float counts, same shape; ``zoom`` 1 returns them as they are."""
    if zoom == 1:
        return counts
    h, w = counts.shape
    ch, cw = h // zoom, w // zoom
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(counts[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def zoom_at(i: int, run: int = ZOOM_RUN) -> int:
    """The eZoom factor of frame ``i``: :data:`ZOOM_STEPS` in runs of ``run`` frames, cycled."""
    return ZOOM_STEPS[(i // run) % len(ZOOM_STEPS)]


def ezoom_camera(run: int = ZOOM_RUN) -> Callable:
    """Round 7's eZoom camera as a per-frame map: RoadScene at 640×512, noise 0.6 grey levels, the zoom
    of :func:`zoom_at` on the counts, linear AGC (seed 702)."""
    return lambda i, f: camera((640, 512), 0.6, linear_agc, 702,
                               process=lambda c, rng: ezoom(c, zoom_at(i, run)))(i, f)


def pip_inset(g: np.ndarray, zoom: int = 2, border: int = 2) -> np.ndarray:
    """A picture-in-picture window (``after`` for :func:`camera`; the PiP mode of thermal riflescopes
    and monoculars [U: Pulsar-class manuals describe a magnified window at the top of the display]): the
    centre 1/4 × 1/4 of the image magnified ``zoom``× (bilinear) into a window of half the width and
    height, at the top centre, framed by a ``border``-px white (255) line. uint8, same shape."""
    h, w = g.shape
    ch, cw = h // (2 * zoom), w // (2 * zoom)
    src = g[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    win = cv2.resize(src, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
    out = g.copy()
    x0, y0 = w // 4, border
    out[y0 - border:y0 + h // 2 + border, x0 - border:x0 + w // 2 + border] = 255
    out[y0:y0 + h // 2, x0:x0 + w // 2] = win
    return out


#: round 7's gain-switch camera: counts per grey level in low gain, a quarter of high gain's
#: :data:`COUNTS_PER_GREY` [U: Boson low gain covers about 4× the temperature range], and the fire's
#: level (grey levels of the scene's scale: far above either gain's 14-bit top)
LOW_GAIN_PER_GREY, FIRE_LEVEL = COUNTS_PER_GREY / 4.0, 5000.0
#: the frames of a 12-frame folder in which the fire burns and the camera is in low gain
FIRE_FRAMES = range(6, 12)


def fire_mask(shape, rng: np.random.Generator) -> np.ndarray:
    """Flames: 3-6 ellipses rising from the bottom edge (their lower halves below it), sized so that
    they would cover a drawn 8-20 % of the pixels without overlapping (overlaps make it less), optics
    σ 1 px. (H, W) float64 in 0..1."""
    h, w = shape
    share = rng.uniform(0.08, 0.20)
    mask = np.zeros((h, w), np.float64)
    cx0 = rng.uniform(0.2, 0.8) * w
    n = int(rng.integers(3, 7))
    for _ in range(n):
        b = np.sqrt(share * h * w / n / np.pi * 4.0)  # a/b 0.5 on average, half of each below the edge
        a = b * rng.uniform(0.3, 0.7)
        cx, cy = cx0 + rng.normal(0.0, 1.5 * a), h - b * rng.uniform(0.0, 0.3)
        cv2.ellipse(mask, (int(cx), int(cy)), (int(a), int(b)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), 1.0)


def gain_switch_counts(i: int, grey: np.ndarray, fire=FIRE_FRAMES, seed: int = 704) -> np.ndarray:
    """A Boson in gain mode AUTO (thermal_io.md §1.6: SetGainMode enum 2; the DJI thermal SDK's
    ``ThermalGainMode.Auto``: "automatically select the optimal gain mode according to the temperature
    range of the image") when a fire enters: on the frames in ``fire`` the flames (:func:`fire_mask`)
    saturate the 14-bit read-out and the camera is in low gain (:data:`LOW_GAIN_PER_GREY` counts per
    grey level: the scene in a quarter of the counts), the sensor's noise the same in counts (σ of
    :func:`noise_sigma` at 0.6 grey levels in high gain): 4× the noise for the scene's contrast; the
    other frames in high gain without the fire. Plateau AGC (:func:`plateau_agc`), uint8 640×512."""
    rng = np.random.default_rng([seed, i])
    rad = resample(grey.astype(np.float64), (640, 512))
    sigma = noise_sigma(to_counts(rad), 0.6)
    if i in fire:
        m = fire_mask(rad.shape, rng)
        counts = COUNTS_BASE + LOW_GAIN_PER_GREY * (rad * (1 - m) + FIRE_LEVEL * m)
    else:
        counts = to_counts(rad)
    counts = np.clip(counts + rng.normal(0.0, sigma, counts.shape), 0.0, COUNTS_MAX)
    return plateau_agc(counts)


#: round 7's polarity switch in a 12-frame folder: white hot before this frame, black hot from it
POLARITY_AT = 6


def polarity_camera(switch_at: int = POLARITY_AT) -> Callable:
    """A camera whose user switches white hot to black hot mid-stream (FLIR's rawBoson README:
    ``cB0003 x0 x0 x0 x1`` "Change output to BlackHot"; the Tau 2's polarity/palette command 0x10,
    thermal_io.md §2): RoadScene at 640×512, noise 0.6, linear AGC (seed 705), inverted (255 − g)
    from frame ``switch_at`` on."""
    base = camera((640, 512), 0.6, linear_agc, 705)
    return lambda i, f: 255 - base(i, f) if i >= switch_at else base(i, f)


def msx_edges(scene: np.ndarray, g: np.ndarray, shift: Tuple[int, int] = (6, 3), gain: float = 1.5) -> np.ndarray:
    """FLIR MSX (Multi-Spectral Dynamic Imaging: the visual camera's edges inserted into the thermal
    image, with "a noticeable parallax", thermalvision.ie's FLIR MSX review): the thermal image ``g``
    (uint8, the sensor's image enlarged to the display) plus ``gain`` × the high-pass (σ 1.5 px) of the
    full-resolution ``scene`` at the display size (the visual camera's detail [U: a visual image's
    edges are not the thermal scene's; the scene's own edges stand in]) shifted by ``shift`` = (x, y) px
    (the two cameras' parallax). uint8, ``g``'s shape."""
    h, w = g.shape
    vis = cv2.resize(scene.astype(np.float64), (w, h), interpolation=cv2.INTER_AREA)
    edges = vis - cv2.GaussianBlur(vis, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)
    m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    edges = cv2.warpAffine(edges, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return to_u8(g.astype(np.float64) + gain * edges)


def msx_camera(i: int, frame: np.ndarray) -> np.ndarray:
    """Round 7's MSX camera: a FLIR ONE Pro-class 160×120 sensor (noise 1.0, linear AGC, seed 706)
    enlarged bilinear to 640×480, with :func:`msx_edges` of the scene. uint8 480×640."""
    g = camera((160, 120), 1.0, linear_agc, 706, after=bilinear_up((640, 480)))(i, frame)
    return msx_edges(frame, g)


def shutterless_shading(counts: np.ndarray, rng: np.random.Generator, i: int = 0) -> np.ndarray:
    """A shutterless core's residual low-frequency non-uniformity (thermal_io.md §5: "residual
    spatially-correlated low-frequency shading ... lens/housing self-radiation"; shutterless cores
    correct without a flag, so the residue is never reset [U]), drawn anew every frame (``process`` for
    :func:`camera`): a tilted plane whose direction turns with the frame index (40° a frame from a
    drawn start) plus a drawn bowl ``±(r² − mean r²)``, together 10-20 % of the frame's min-max span
    (drawn) from the centre to the corners. Float counts, same shape."""
    h, w = counts.shape
    span = float(counts.max() - counts.min())
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    xn, yn = (x - (w - 1) / 2) / ((w - 1) / 2), (y - (h - 1) / 2) / ((h - 1) / 2)
    theta = np.deg2rad(rng.uniform(0.0, 360.0) + 40.0 * i)
    plane = xn * np.cos(theta) + yn * np.sin(theta)
    r2 = (xn ** 2 + yn ** 2) / 2
    bowl = rng.choice((-1.0, 1.0)) * (r2 - r2.mean())
    field = plane / max(np.abs(plane).max(), 1e-9) + rng.uniform(0.5, 1.0) * bowl / max(np.abs(bowl).max(), 1e-9)
    return counts + rng.uniform(0.10, 0.20) * span * field / max(np.abs(field).max(), 1e-9)


#: round 7's MPEG-4 camera: frames of the group of pictures before the kept one, and the pan
#: per frame in sensor pixels
MPEG4_GOP_BEFORE, MPEG4_PAN = 5, 1.0


def mpeg4_stream(i: int, frame: np.ndarray, seed: int = 708) -> np.ndarray:
    """A FLIR A320-class camera's MPEG-4 RTSP stream (the A320 manual's "Image Streaming": "MPEG4
    compressed video in three sizes (640x480, 320x240, 160x128)"): the scene at the 320×240 sensor,
    panning :data:`MPEG4_PAN` px a frame, noise 0.6 grey levels and a linear AGC per frame, enlarged
    bilinear to 640×480 and encoded with OpenCV's MPEG-4 Part 2 encoder (``mp4v``, its default
    quantiser [U: the camera's rate control]) as a group of :data:`MPEG4_GOP_BEFORE` + 1 frames
    starting at an I-frame; the kept frame is the last, a P-frame, decoded. uint8 480×640.

    Raises:
        RuntimeError: OpenCV cannot write or read the MPEG-4 stream (a build without FFmpeg)."""
    import tempfile
    base = camera((320, 240), 0.6, linear_agc, seed, after=bilinear_up((640, 480)))
    h, w = frame.shape
    frames = []
    for j in range(MPEG4_GOP_BEFORE + 1):
        dx = MPEG4_PAN * (MPEG4_GOP_BEFORE - j) * w / 320.0
        shifted = cv2.warpAffine(frame.astype(np.float64), np.float32([[1, 0, -dx], [0, 1, 0]]), (w, h),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames.append(base(i * 16 + j, shifted))
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "gop.mp4")
        wr = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480), True)
        if not wr.isOpened():
            raise RuntimeError("OpenCV cannot write MPEG-4 (mp4v)")
        for f in frames:
            wr.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
        wr.release()
        cap = cv2.VideoCapture(path)
        out = None
        while True:
            ok, img = cap.read()
            if not ok:
                break
            out = img
        cap.release()
    if out is None:
        raise RuntimeError("OpenCV cannot read the MPEG-4 stream back")
    return cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)


#: round 7's facade camera: counts per kelvin [U: a 14-bit core's high gain, as a radiometric Boson's
#: TLinear K × 100, thermal_io.md §1.6], the sensor's NETD in kelvin (the Tau 2's "< 50 mK" class), and
#: the AGC's max gain in grey levels per count (ours)
FACADE_COUNTS_PER_K, FACADE_NETD_K, FACADE_MAX_GAIN = 100.0, 0.05, 0.5


def max_gain_agc(counts: np.ndarray, max_gain: float = FACADE_MAX_GAIN, itt: float = 128.0) -> np.ndarray:
    """The linear AGC of a Tau 2/Quark with its max gain (FLIR app note 102-PS242-100-01, thermal_io.md
    §4.1 items 4-5 and its "Linear-histogram mode"): gain ``m = min(255/(p99 − p1), max_gain)`` grey
    levels per count (1 % tail rejection), the percentiles' mean mapped to the ITT midpoint ``itt``,
    clipped to uint8 (same shape). A low-contrast scene is not stretched over the 8 bits: it keeps its
    noise at ``max_gain`` × σ grey levels."""
    c = counts.astype(np.float64)
    p1, p99 = np.percentile(c, (1, 99))
    m = min(255.0 / max(p99 - p1, 1e-9), max_gain)
    return to_u8(itt + m * (c - (p1 + p99) / 2.0))


def facade_counts(i: int, grey: np.ndarray, seed: int = 709) -> np.ndarray:
    """A building facade at night on a 640×512 core (the scene's 1st-99th percentiles span a drawn
    1.5-3 K, :data:`FACADE_COUNTS_PER_K`, white noise of :data:`FACADE_NETD_K`), through
    :func:`max_gain_agc`: the scene in 75-150 grey levels around 128, its noise about 2.5 grey levels.
    uint8 512×640."""
    rng = np.random.default_rng([seed, i])
    g = resample(grey.astype(np.float64), (640, 512))
    p1, p99 = np.percentile(g, (1, 99))
    kelvin = rng.uniform(1.5, 3.0) * (g - p1) / max(p99 - p1, 1e-9)
    counts = 8000.0 + FACADE_COUNTS_PER_K * (kelvin + rng.normal(0.0, FACADE_NETD_K, g.shape))
    return max_gain_agc(counts)


#: round 7: cameras of kinds the 67 of rounds 1-6 do not cover (``--round 7``), same layout
ROUND7: Dict[str, Tuple[Callable, Callable, str]] = {
    "isotherm_grey_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6, isotherm_grey, 701),
                              "RoadScene, noise 0.6, Tau 2 isotherm (hottest 3 % as yellow-orange-red) turned "
                              "to grey by BT.601 luma: the hottest objects darker than the warm ones"),
    "ezoom_steps_640x512": (_set("roadscene-ir"), ezoom_camera(),
                            "RoadScene, noise 0.6, linear AGC, Tau 2 eZoom 1x / 2x / 4x (bilinear) on frames "
                            "0-3 / 4-7 / 8-11"),
    "pip_zoom_640x512": (_set("hit_uav"), camera((640, 512), 0.6, linear_agc, 703, after=pip_inset),
                         "HIT-UAV, noise 0.6, linear AGC, a 2x picture-in-picture window of the centre at the "
                         "top (white frame)"),
    "gain_switch_fire_640x512": (_set("m3svd_magnity"), gain_switch_counts,
                                 "M3SVD at 640x512, Boson gain AUTO: frames 6-11 a fire (5-15 % of the pixels, "
                                 "saturated) and low gain (4x the noise for the scene), plateau AGC"),
    "polarity_switch_640x512": (_set("roadscene-ir"), polarity_camera(),
                                "RoadScene, noise 0.6, linear AGC, white hot on frames 0-5, black hot from 6"),
    "msx_edges_640x480": (_centre_4x3, msx_camera,
                          "RoadScene 4:3 centre at 160x120 (noise 1.0, linear AGC) shown 640x480, FLIR MSX: "
                          "the full-resolution edges added at 1.5x, 6/3 px of parallax"),
    "shutterless_640x512": (_set("hit_uav"), lambda i, f: camera(
                                (640, 512), 0.6, linear_agc, 707,
                                process=lambda c, rng: shutterless_shading(c, rng, i))(i, f),
                            "HIT-UAV, noise 0.6, linear AGC, a shutterless core's low-frequency residue "
                            "(plane + bowl, 10-20 % of the span) changing every frame"),
    "mpeg4_a320_640x480": (_set("m3svd_magnity"), mpeg4_stream,
                           "M3SVD at 320x240 panning 1 px/frame, noise 0.6, linear AGC, shown 640x480 through "
                           "OpenCV's MPEG-4 Part 2 encoder (a P-frame 5 after the I-frame): FLIR A320 RTSP"),
    "max_gain_facade_640x512": (_set("m3svd_magnity"), facade_counts,
                                "M3SVD as a night facade: 1.5-3 K of span, NETD 50 mK, Tau 2 linear AGC capped "
                                "at max gain 0.5 grey/count: the scene in 75-150 grey levels, noise ~2.5"),
}


# --- round 8: cameras of kinds the 76 above do not cover -------------------------------------

#: a radiometric Lepton's TLinear Y16 at 0.01 K resolution: counts per kelvin (thermal_io.md §3.2:
#: "°C = raw/100 − 273.15", ``ktoc(val) = (val − 27315)/100``)
TLINEAR_PER_K = 100.0


def lepton25_tlinear(i: int, grey: np.ndarray, seed: int = 801) -> np.ndarray:
    """A radiometric Lepton 2.5 (80×60) in TLinear at 0.01 K (thermal_io.md §3.2, Y16 = kelvin ×
    :data:`TLINEAR_PER_K`): the scene area-averaged to 80×60, its 1st-99th percentiles spanning a drawn
    3-10 K from a drawn 288-300 K, NETD σ 0.05 K [U: the Lepton's "< 50 mK" class], rounded. uint16
    60×80 (values about 28800-31000)."""
    rng = np.random.default_rng([seed, i])
    span_k, base_k = rng.uniform((3.0, 288.0), (10.0, 300.0))
    g = resample(grey, (80, 60))
    p1, p99 = np.percentile(g, (1, 99))
    kelvin = base_k + (g - p1) / max(p99 - p1, 1e-9) * span_k + rng.normal(0.0, 0.05, g.shape)
    return np.clip(np.rint(kelvin * TLINEAR_PER_K), 0, 65535).astype(np.uint16)


#: the InfiRay module's raw temperature half: kelvin per count (thermal_io.md §3.2: °C = raw/64 − 273.15)
TC001_PER_K = 64.0


def tc001_stacked(i: int, grey: np.ndarray, seed: int = 802) -> np.ndarray:
    """A TOPDON TC001 / InfiRay P2 Pro's whole 256×384 YUYV capture as a generic UVC program records it
    with the conversion to RGB left on, turned to grey (thermal_io.md §3.2: the top 192 rows the vendor's
    AGC image, the bottom 192 rows the raw temperature in 1/64 K, two bytes a pixel; [U] that a
    recording of the converted stream keeps it): top half tc001_256x192's image (noise 1.5, smoothing
    0.8 px, linear AGC); bottom half the luma the conversion makes of the raw words, their low byte
    (the high byte goes to the chroma), so the 1/64-K counts of a 15-40 °C scene wrap every 4 K.
    uint8 384×256."""
    top = camera((256, 192), 1.5, linear_agc, seed,
                 process=lambda c, rng: cv2.GaussianBlur(c, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT))(i, grey)
    rng = np.random.default_rng([seed + 1000, i])
    span_k, base_k = rng.uniform((6.0, 288.0), (25.0, 300.0))
    g = resample(grey, (256, 192))
    p1, p99 = np.percentile(g, (1, 99))
    raw = np.rint((base_k + (g - p1) / max(p99 - p1, 1e-9) * span_k + rng.normal(0.0, 0.06, g.shape))
                  * TC001_PER_K).astype(np.int64)
    return np.concatenate([top, (raw & 0xFF).astype(np.uint8)], axis=0)


def super_resolution(g: np.ndarray, factor: int = 2, amount: float = 1.0) -> np.ndarray:
    """A camera's "super resolution" display mode (``after`` for :func:`camera`; Hikmicro-class
    handhelds [U: the vendor does not publish the method]): bicubic enlargement by ``factor``, then an
    unsharp mask of ``amount`` (σ 1 px at the enlarged size). uint8 (H·factor, W·factor)."""
    big = cv2.resize(g, (g.shape[1] * factor, g.shape[0] * factor), interpolation=cv2.INTER_CUBIC)
    return unsharp(amount)(big)


#: round 8's HD camera: its digital output's bits (a 12-bit Y16 video, [U] for the product)
HD_BITS = 12


def hd12_counts(i: int, counts: np.ndarray, seed: int = 804) -> np.ndarray:
    """A 1280×1024 uncooled core with a 12-bit Y16 output (HD cores' digital video, [U] which ones):
    960×768 T1030sc counts resized (bicubic) to 1280×1024, their 1st-99th percentiles spanning a drawn
    600-1800 counts from a drawn 800-1400, white noise σ 2 counts, clipped to 0..4095. uint16 1024×1280."""
    rng = np.random.default_rng([seed, i])
    span, base = rng.uniform((600.0, 800.0), (1800.0, 1400.0))
    c = cv2.resize(counts.astype(np.float32), (1280, 1024), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    c = remap_span(c, span, base).astype(np.float64) + rng.normal(0.0, 2.0, c.shape)
    return np.clip(np.rint(c), 0, (1 << HD_BITS) - 1).astype(np.uint16)


#: round 8's mains interference: the mains and frame frequencies (Hz) and the bands' period in rows
MAINS_HZ, MAINS_FPS, MAINS_PERIOD_ROWS = 50.0, 60.0, 170.0


def mains_bands(i: int) -> Callable:
    """Rolling bands of mains interference (``process`` for :func:`camera`; [U] a 50 Hz supply coupled
    into the read-out of a 60 Hz camera): a sinusoid along the rows of amplitude 2.5 grey levels of the
    frame's min-max AGC and period :data:`MAINS_PERIOD_ROWS`, its phase advancing 2π·50/60 a frame so
    the bands roll. Float counts, same shape."""
    def fn(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        per_grey = float(counts.max() - counts.min()) / 255.0
        rows = np.arange(counts.shape[0], dtype=np.float64)
        phase = 2.0 * np.pi * (MAINS_HZ / MAINS_FPS) * i
        return counts + 2.5 * per_grey * np.sin(2.0 * np.pi * rows / MAINS_PERIOD_ROWS + phase)[:, None]
    return fn


def barrel(radiance: np.ndarray, k1: float = 0.25, corner: float = 0.4) -> np.ndarray:
    """A wide-FOV lens (``scene_fn`` for :func:`camera`; a Lepton 3.1R's 95° [U: the datasheet's
    distortion is not in the notes]): barrel distortion, each output pixel at radius r (1 at the corners)
    taken from the scene at ``r·(1 + k1·r²)/(1 + k1)`` (the corners stay, a positive ``k1`` enlarges the
    centre by 1 + k1 and squeezes the edges: straight lines bow outwards; OpenCV remap, bilinear,
    reflected borders),
    times :func:`vignette` with the corners at ``corner``. float64, same shape."""
    h, w = radiance.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    rn = np.hypot(cx, cy)
    dx, dy = (x - cx) / rn, (y - cy) / rn
    scale = (1.0 + k1 * (dx * dx + dy * dy)) / (1.0 + k1)  # r_src / r: 1 at the corners, 1/(1 + k1) at the centre
    mx = (cx + dx * rn * scale).astype(np.float32)
    my = (cy + dy * rn * scale).astype(np.float32)
    out = cv2.remap(radiance.astype(np.float64), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return vignette(out, corner)


def png16_x257(g: np.ndarray) -> np.ndarray:
    """An 8-bit video exported as a 16-bit PNG with 8 significant bits (PNG spec §12.5 [S]: scale a
    sample to a greater depth by left bit replication, ``v·257`` for 8 → 16 bits): uint16, same shape,
    256 levels 0, 257, …, 65535."""
    return (g.astype(np.uint16) * np.uint16(257)).astype(np.uint16)


#: an HDMI grabber's frame (1920×1080) and the 4:3 picture it scales into it (1440×1080)
HDMI_SIZE, HDMI_PICTURE = (1920, 1080), (1440, 1080)


def pillarbox(g: np.ndarray) -> np.ndarray:
    """A 640×480 camera's HDMI output through a 1080p grabber (``after`` for :func:`camera`; [U] the
    scaler): the 4:3 picture resized (bilinear) to :data:`HDMI_PICTURE` and centred in a black
    :data:`HDMI_SIZE` frame, 240 columns of 0 either side. uint8 1080×1920."""
    out = np.zeros((HDMI_SIZE[1], HDMI_SIZE[0]), np.uint8)
    pic = cv2.resize(g, HDMI_PICTURE, interpolation=cv2.INTER_LINEAR)
    x0 = (HDMI_SIZE[0] - HDMI_PICTURE[0]) // 2
    out[:, x0:x0 + HDMI_PICTURE[0]] = pic
    return out


def signed_centicelsius(i: int, grey: np.ndarray, seed: int = 810) -> np.ndarray:
    """A radiometric core whose Y16 is the temperature in 0.01 °C as a signed 16-bit word [U: modules
    that report int16 centi-degrees Celsius], recorded as uint16: a winter scene, its 1st-99th
    percentiles spanning a drawn 8-16 K from a drawn −12…−4 °C, NETD σ 0.05 K, so the pixels below
    0 °C wrap to 65536 + value (about 64300-65535) and the rest read 0-1200. uint16, same shape."""
    rng = np.random.default_rng([seed, i])
    span, base = rng.uniform((8.0, -12.0), (16.0, -4.0))
    g = grey.astype(np.float64)
    p1, p99 = np.percentile(g, (1, 99))
    celsius = base + (g - p1) / max(p99 - p1, 1e-9) * span + rng.normal(0.0, 0.05, g.shape)
    return (np.rint(celsius * 100.0).astype(np.int64) & 0xFFFF).astype(np.uint16)


#: round 8: cameras of kinds the 76 of rounds 1-7 do not cover (``--round 8``), same layout
ROUND8: Dict[str, Tuple[Callable, Callable, str]] = {
    "lepton25_y16_80x60": (_set("hit_uav"), lepton25_tlinear,
                           "HIT-UAV as a radiometric Lepton 2.5: 80x60 Y16 TLinear 0.01 K, 3-10 K at 288-300 K"),
    "tc001_stacked_256x384": (_centre_4x3, tc001_stacked,
                              "RoadScene 4:3 centre as a TC001's whole 256x384 capture turned to grey: the AGC "
                              "image on top, the raw 1/64 K words' low byte below"),
    "hikmicro_sr_640x512": (_set("hit_uav"), camera((320, 256), 0.6, dde_agc, 803, after=super_resolution),
                            "HIT-UAV at 320x256, noise 0.6, DDE, 'super resolution' 2x bicubic + unsharp 1.0"),
    "hd12_y16_1280x1024": (_raw_5x4, hd12_counts,
                           "T1030sc scenes at 1280x1024 as 12-bit Y16: span 600-1800 at 800-1400, noise 2 counts"),
    "mains_bands_640x512": (_set("roadscene-ir"), lambda i, f: camera((640, 512), 0.6, linear_agc, 805,
                                                                      process=mains_bands(i))(i, f),
                            "RoadScene, noise 0.6, linear AGC, 50 Hz bands (2.5 grey, 170 rows) rolling at 60 fps"),
    "barrel_wide_160x120": (_set("m3svd_magnity"), camera((160, 120), 0.35, linear_agc, 806,
                                                                  scene_fn=lambda r, rng: barrel(r)),
                            "M3SVD through a 95-degree lens: barrel k1 0.25, corners at 0.4, 160x120, noise 0.35"),
    "mwir_cooled_640x512": (_set("m3svd_magnity"), camera((640, 512), 0.1, plateau_agc, 807),
                            "M3SVD as a cooled MWIR camera: noise 0.1 grey level, plateau AGC"),
    "png16_8bit_640x512": (_set("roadscene-ir"), lambda i, f: png16_x257(camera((640, 512), 0.6, linear_agc, 808)(i, f)),
                           "RoadScene, noise 0.6, linear AGC, exported as 16-bit PNG: v x 257 (8 significant bits)"),
    "pillarbox_1920x1080": (_set("m3svd_magnity"), camera((640, 480), 0.6, linear_agc, 809, after=pillarbox),
                            "M3SVD 640x480, noise 0.6, linear AGC, through a 1080p HDMI grabber: 1440x1080 "
                            "with 240 black columns either side"),
    "signed_cc_winter_640x512": (_raw, signed_centicelsius,
                                 "T1030sc scenes as int16 0.01 degC, a -12..+12 degC winter scene: below 0 degC "
                                 "wraps to 64300-65535"),
}


# --- round 9: cameras of kinds the 86 above do not cover -------------------------------------

#: round 9's narcissus: the cold disc's depth as a share of the scene's min-max span, its radius as a
#: share of the frame's height, and its soft edge (Gaussian σ px) [U: a cooled camera's narcissus is
#: the detector seeing its own cold reflection in the lens; its size and depth are ours]
NARCISSUS_DEPTH, NARCISSUS_RADIUS, NARCISSUS_EDGE = 0.12, 0.30, 25.0


def narcissus(counts: np.ndarray, rng: np.random.Generator = None, depth: float = NARCISSUS_DEPTH,
              radius: float = NARCISSUS_RADIUS, edge: float = NARCISSUS_EDGE) -> np.ndarray:
    """A cooled camera's narcissus (``process`` for :func:`camera`; [U] the cold FPA's reflection off a
    lens surface back onto itself): a disc of ``radius`` × the height at the centre, its edge blurred
    (Gaussian σ ``edge`` px), ``depth`` × the frame's min-max span colder than the scene; the same in
    every frame (it follows the optics, not the scene). Float counts, same shape."""
    h, w = counts.shape
    disc = np.zeros((h, w), np.float64)
    cv2.circle(disc, (w // 2, h // 2), int(round(radius * h)), 1.0, -1)
    disc = cv2.GaussianBlur(disc, (0, 0), edge)
    return counts - depth * float(counts.max() - counts.min()) * disc


#: round 9's smudge: share of the frame it covers, the optics' blur under it (σ px at the sensor), its
#: soft edge (σ px), and the seed of its place (the same on every frame)
SMUDGE_SHARE, SMUDGE_SIGMA, SMUDGE_EDGE, SMUDGE_SEED = 0.25, 4.0, 20.0, 902


def smudge_blur(radiance: np.ndarray, rng: np.random.Generator = None, share: float = SMUDGE_SHARE,
                sigma: float = SMUDGE_SIGMA, edge: float = SMUDGE_EDGE, seed: int = SMUDGE_SEED) -> np.ndarray:
    """A smudge or a film of water on the lens window (``scene_fn`` for :func:`camera`; [U] a
    transparent film defocuses rather than hides: the blur and its size are ours): inside an ellipse of
    ``share`` of the pixels (aspect 1.4, placed by ``seed``, the same in every frame; its edge blurred
    σ ``edge`` px) the scene blurred by a Gaussian of σ ``sigma`` px, outside it sharp; blended by the
    soft mask. float64, same shape."""
    r = radiance.astype(np.float64)
    mask = ellipse_mask(r.shape, share, 1.4, np.random.default_rng(seed), blur=edge)
    soft = cv2.GaussianBlur(r, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return r * (1.0 - mask) + soft * mask


#: round 9's 10-bit core: bits of its Y10 output
Y10_BITS = 10


def y10_counts(i: int, counts: np.ndarray, seed: int = 903) -> np.ndarray:
    """A 10-bit core's Y10 video stored in 16-bit PNGs (V4L2's ``Y10`` format: 10 significant bits in
    the low bits of each 16-bit word, the top 6 zero [U: V4L2's pixel-format list, not in the notes]; a
    10-bit thermal core is [U]):
    T1030sc counts whose 1st-99th percentiles span a drawn 250-700 counts from a drawn 60-250, white
    noise σ 0.8 count, clipped to 0..1023. uint16, same shape."""
    rng = np.random.default_rng([seed, i])
    span, base = rng.uniform((250.0, 60.0), (700.0, 250.0))
    c = remap_span(counts, span, base).astype(np.float64) + rng.normal(0.0, 0.8, counts.shape)
    return np.clip(np.rint(c), 0, (1 << Y10_BITS) - 1).astype(np.uint16)


#: round 9's TNR ghost: sensor frames filtered, the filter's weight, the hot object's speed (px per
#: sensor frame) and its level above the scene's top (share of the scene's min-max span)
TNR_STEPS, TNR_ALPHA, TNR_SPEED, TNR_HOT = 8, 0.25, 8.0, 0.5


def tnr_ghost(i: int, grey: np.ndarray, seed: int = 904, size: Tuple[int, int] = (640, 512)) -> np.ndarray:
    """A camera with a recursive temporal noise filter (TNR, ``y += α·(x − y)``; [U] the vendor's
    filter) on a still scene crossed by a hot object: :data:`TNR_STEPS` sensor frames at noise 2.0 grey
    levels (:func:`noise_sigma`), the object (an ellipse of 0.3-0.8 % of the pixels, optics σ 0.7 px,
    :data:`TNR_HOT` × the span above the scene's top) moving :data:`TNR_SPEED` px a sensor frame in a
    drawn direction, filtered with α = :data:`TNR_ALPHA`: the still scene's noise cut to ~0.38 of a
    frame's, the object leaving a fading ghost trail of copies behind it. Linear AGC. uint8
    (height, width) of ``size``."""
    rng = np.random.default_rng([seed, i])
    counts = to_counts(resample(grey, size))
    sigma = noise_sigma(counts, 2.0)
    span = float(counts.max() - counts.min())
    mask = ellipse_mask(counts.shape, rng.uniform(0.003, 0.008), rng.uniform(0.6, 1.6), rng, blur=0.7)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    h, w = counts.shape
    y = None
    for j in range(TNR_STEPS):
        back = TNR_SPEED * (TNR_STEPS - 1 - j)      # where the object was j sensor frames ago
        m = np.float32([[1, 0, -back * np.cos(theta)], [0, 1, -back * np.sin(theta)]])
        mj = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
        x = counts * (1 - mj) + (counts.max() + TNR_HOT * span) * mj + rng.normal(0.0, sigma, counts.shape)
        y = x if y is None else y + TNR_ALPHA * (x - y)
    return linear_agc(np.clip(y, 0.0, COUNTS_MAX))


def line_jitter(i: int, seed: int = 905, sigma: float = 0.6, size: Tuple[int, int] = (720, 576)) -> Callable:
    """An analog camera through a capture card without time-base correction (``after`` for
    :func:`camera`; [U] the jitter's size): the image resized (bilinear) to ``size`` and every line
    shifted along itself by its own sub-pixel offset (white, σ ``sigma`` px, drawn per frame from
    ``[seed, i]``; bilinear, edge pixels repeated): ragged vertical edges. uint8, (height, width)."""
    def fn(g: np.ndarray) -> np.ndarray:
        f = cv2.resize(g, tuple(size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        rng = np.random.default_rng([seed, i])
        h, w = f.shape
        shift = rng.normal(0.0, sigma, h).astype(np.float32)
        mx = np.arange(w, dtype=np.float32)[None, :] - shift[:, None]
        my = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
        return to_u8(cv2.remap(f, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return fn


#: round 9's lens ghost: the reflected image's weight and its defocus (σ px at the scene's size)
GHOST_WEIGHT, GHOST_SIGMA = 0.10, 6.0


def lens_ghost(radiance: np.ndarray, rng: np.random.Generator = None, weight: float = GHOST_WEIGHT,
               sigma: float = GHOST_SIGMA) -> np.ndarray:
    """A ghost image from a double reflection between lens surfaces (``scene_fn`` for :func:`camera`;
    [U] its weight and defocus; a germanium lens's AR coating leaves a few % per surface): the scene
    plus ``weight`` × its copy turned 180° about the optical axis (the centre) and defocused (Gaussian
    σ ``sigma`` px): warm objects reappear faintly at the point-symmetric place. float64, same shape."""
    r = radiance.astype(np.float64)
    ghost = cv2.GaussianBlur(r[::-1, ::-1].copy(), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return r + weight * ghost


def horizon_level(i: int, seed: int = 907, lo: float = 4.0, hi: float = 12.0) -> Callable:
    """A gimbal's or a helmet camera's electronic horizon levelling (``after`` for :func:`camera`; [U]
    that a product turns the picture rather than crops it): the image turned about its centre by a
    drawn ±``lo``-``hi`` degrees (from ``[seed, i]``; bilinear), the corners the sensor did not see
    black (0). uint8, same shape."""
    def fn(g: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([seed, i])
        angle = rng.uniform(lo, hi) * rng.choice((-1.0, 1.0))
        h, w = g.shape
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        return cv2.warpAffine(g, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return fn


def snuc_ghost(counts: np.ndarray, rng: np.random.Generator, lo: float = 0.3, hi: float = 0.5) -> np.ndarray:
    """A scene-based NUC's burn-in (``process`` for :func:`camera`; thermal_io.md §5: the Scribner LMS
    NUC drives each pixel toward its neighbours' mean, "causes ghosting on static scenes"): after the
    camera stared at one view its offsets hold a drawn ``lo``-``hi`` of that view's local detail with
    the sign turned; then the camera turned by a drawn 40-120 px (either way, along both axes). The
    frame's counts minus that share of the high-pass (Gaussian σ 1 minus σ 8 px) of the counts shifted
    by the turn: a faint negative of the scene beside itself. Float counts, same shape."""
    h, w = counts.shape
    dx, dy = rng.uniform(40.0, 120.0, 2) * rng.choice((-1.0, 1.0), 2)
    m = np.float32([[1, 0, dx], [0, 1, dy * 0.5]])
    old = cv2.warpAffine(counts, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    detail = cv2.GaussianBlur(old, (0, 0), 1.0) - cv2.GaussianBlur(old, (0, 0), 8.0)
    return counts - rng.uniform(lo, hi) * detail


def decimate2(g: np.ndarray) -> np.ndarray:
    """A 640×512 core's half-size video made by skipping every other row and column with no
    anti-alias filter (``after`` for :func:`camera`; [U] which products do): ``g[::2, ::2]``, aliased
    fine detail and jagged edges. uint8 (H/2, W/2)."""
    return np.ascontiguousarray(g[::2, ::2])


#: round 9's veiling glare: the share of the scene scattered and the scatter's width (σ px)
VEIL_SHARE, VEIL_SIGMA = 0.35, 60.0


def veiling_glare(radiance: np.ndarray, rng: np.random.Generator = None, share: float = VEIL_SHARE,
                  sigma: float = VEIL_SIGMA) -> np.ndarray:
    """A dirty or scratched lens window's veiling glare (``scene_fn`` for :func:`camera`; [U] the scatter's
    share and width): ``share`` of every point's radiance spread by a wide Gaussian (σ ``sigma`` px),
    the rest kept: local contrast cut by about that share, a soft glow over warm areas; the camera's
    AGC stretches the rest again. float64, same shape."""
    r = radiance.astype(np.float64)
    return (1.0 - share) * r + share * cv2.GaussianBlur(r, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


#: round 9: cameras of kinds the 86 of rounds 1-8 do not cover (``--round 9``), same layout
ROUND9: Dict[str, Tuple[Callable, Callable, str]] = {
    "narcissus_640x480": (_set("m3svd_magnity"), camera((640, 480), 0.1, plateau_agc, 901, process=narcissus),
                          "M3SVD as a cooled camera (noise 0.1, plateau AGC) with narcissus: a central cold disc "
                          "(radius 0.3 of the height, 12 % of the span, soft edge)"),
    "smudge_blur_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6, linear_agc, 902, scene_fn=smudge_blur),
                            "RoadScene, noise 0.6, linear AGC, a smudge on the lens: a quarter of the frame "
                            "blurred (sigma 4 px), the same place every frame"),
    "y10_640x512": (_raw, y10_counts, "T1030sc scenes as 10-bit Y10 in 16-bit PNG: span 250-700 at 60-250, "
                                      "noise 0.8 count"),
    "tnr_ghost_640x512": (_set("hit_uav"), tnr_ghost,
                          "HIT-UAV still, a hot object moving 8 px/sensor frame, recursive TNR (8 frames, "
                          "alpha 0.25, noise 2.0): fading ghost trails, linear AGC"),
    "line_jitter_720x576": (_set("m3svd_magnity"), lambda i, f: camera((640, 480), 0.6, linear_agc, 905,
                                                                       after=line_jitter(i))(i, f),
                            "M3SVD, noise 0.6, linear AGC, analog capture at 720x576 without time-base "
                            "correction: every line shifted by its own sigma 0.6 px"),
    "lens_ghost_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6, linear_agc, 906, scene_fn=lens_ghost),
                           "RoadScene, noise 0.6, linear AGC, a lens ghost: the scene turned 180 degrees, "
                           "defocused (sigma 6 px), at 10 %"),
    "horizon_level_640x512": (_set("hit_uav"), lambda i, f: camera((640, 512), 0.6, linear_agc, 907,
                                                                   after=horizon_level(i))(i, f),
                              "HIT-UAV, noise 0.6, linear AGC, turned 4-12 degrees either way (electronic "
                              "horizon levelling), black corners"),
    "snuc_ghost_640x512": (_set("roadscene-ir"), camera((640, 512), 0.6, linear_agc, 908, process=snuc_ghost),
                           "RoadScene, noise 0.6, linear AGC, a scene-based NUC's burn-in: 30-50 % of a "
                           "40-120 px shifted view's detail, negated"),
    "decimated_320x256": (_set("roadscene-ir"), camera((640, 512), 0.6, linear_agc, 909, after=decimate2),
                          "RoadScene, noise 0.6, linear AGC, half size by skipping every other row and "
                          "column (no anti-alias filter)"),
    "veiling_glare_640x480": (_set("m3svd_magnity"), camera((640, 480), 0.6, linear_agc, 910,
                                                           scene_fn=veiling_glare),
                              "M3SVD, noise 0.6, linear AGC, a dirty window's veiling glare: 35 % of the "
                              "radiance scattered (sigma 60 px)"),
}


#: the rounds ``--round`` builds: 1-3 are :data:`CAMERAS` (the default), 4 is :data:`ROUND4`, 5 :data:`ROUND5`,
#: 6 :data:`ROUND6`, 7 :data:`ROUND7`, 8 :data:`ROUND8`, 9 :data:`ROUND9`
ROUNDS = {"1-3": CAMERAS, "4": ROUND4, "5": ROUND5, "6": ROUND6, "7": ROUND7, "8": ROUND8, "9": ROUND9}


def build(out: Path, root=None, only=None, frames: int = FRAMES, cameras: Dict = None) -> Dict[str, int]:
    """Write every camera of ``cameras`` (default :data:`CAMERAS`; :data:`ROUND4` … :data:`ROUND9` for rounds
    4 … 9), or
    those in ``only``, under ``out``; returns {camera: frames written}. PNG, 8-bit grey or 16-bit
    counts as the camera delivers them (``false_colour``: 8-bit BGR).

    Raises:
        KeyError: a name in ``only`` that is not a camera of ``cameras`` (the message lists them).
    """
    cameras = CAMERAS if cameras is None else cameras
    root = data_root(root)
    names = list(cameras) if not only else list(only)
    for n in names:
        if n not in cameras:
            raise KeyError(f"no emulated camera {n!r}; cameras: {', '.join(cameras)}")
    written = {}
    for n in names:
        load, fn, _ = cameras[n]
        folder = out / n
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        src = load(root)[:frames]
        for i, (stem, f) in enumerate(src):
            cv2.imwrite(str(folder / f"{i:03d}_{stem}.png"), fn(i, f))
        written[n] = len(src)
    return written


def main(argv=None) -> int:
    """The command line (module docstring); 0, or 2 with one line on stderr for an unknown camera
    or a data root without the test splits."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write the camera folders into (e.g. /tmp/unseen10)")
    p.add_argument("--root", default=None, help="data root (default $TIR_DATA_ROOT or ../shared/data)")
    p.add_argument("--only", default=None, help="comma list of cameras (default: all of the round)")
    p.add_argument("--round", default="1-3", choices=sorted(ROUNDS),
                   help="which cameras: 1-3 (the 34 of rounds 1-3, default), 4, 5, 6, 7, 8 or 9 (one later round)")
    a = p.parse_args(argv)
    cameras = ROUNDS[a.round]
    try:
        done = build(Path(a.out), a.root, a.only.split(",") if a.only else None, cameras=cameras)
    except (KeyError, FileNotFoundError) as e:
        print(f"emulate_cameras: {e.args[0]}", file=sys.stderr)
        return 2
    for n, k in done.items():
        print(f"{n}: {k} frames ({cameras[n][2]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
