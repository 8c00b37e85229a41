"""The live page in a real headless Chromium: both videos play and the stats move."""
import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
import threading
import time

import numpy as np
import pytest

from tir.edge.frame import Frame, now
from tir.edge.outputs import open_output
from tir.edge.pipeline.stats import AdaptStatus, CameraStats, ContrastStatus, LatencySummary, StatsSnapshot

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
W, H = 160, 120

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs the selenium package")


def make_frame(seq):
    """Warm background, a hot disc circling the frame, fine noise (deterministic per seq)."""
    rng = np.random.default_rng(seq)
    yy, xx = np.mgrid[0:H, 0:W]
    angle = seq * 0.35
    cx, cy = W / 2 + 45 * np.cos(angle), H / 2 + 35 * np.sin(angle)
    disc = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 120.0)
    clean = 29000 + 6 * yy + 1800 * disc
    raw = (clean + rng.normal(0, 40, (H, W))).astype(np.uint16)
    frame = Frame(raw=raw, seq=seq, t_capture=now())
    frame.restored = clean.astype(np.uint16)
    frame.meta["temperature_k"] = 0.01  # TLinear: 0.01 K per count, so the page shows °C
    return frame


class LivePipeline:
    """Feeds frames and serves stats the way a running pipeline would."""

    def __init__(self, output):
        self.output = output
        self.seq = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        output.attach(self.stats)

    def stats(self):
        n = self.seq
        return StatsSnapshot(
            fps=20.0 + (n % 5) * 0.1,
            frames=n,
            connected=True,
            source={"uri": "synthetic://?size=160x120"},
            task="denoise+destripe",
            confidence=0.87,
            drops={"capture": n // 10, "corrupt": 0},
            latency_ms={
                "capture": LatencySummary(n=n, p50=0.4, p90=0.6, p99=0.9, mean=0.45, max=1.2),
                "restore": LatencySummary(n=n, p50=8.0 + n % 3, p90=9.5, p99=12.0, mean=8.4, max=14.0),
                "e2e": LatencySummary(n=n, p50=11.0 + n % 3, p90=13.0, p99=18.0, mean=11.6, max=21.0),
            },
        )

    def _run(self):
        while not self.stop.is_set():
            self.output.write(make_frame(self.seq))
            self.seq += 1
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


# Draw an <img> into a canvas and hash its pixels: proves the browser has decoded new frames.
PIXEL_HASH_JS = """
const img = document.getElementById(arguments[0]);
if (!img.naturalWidth) return null;
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const ctx = c.getContext('2d');
ctx.drawImage(img, 0, 0);
const d = ctx.getImageData(0, 0, c.width, c.height).data;
let h = 0;
for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) >>> 0; }
return [img.naturalWidth, img.naturalHeight, h];
"""


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tir-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # A fixed driver path: selenium-manager never downloads anything.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def live_page(browser):
    """The live page of an HTTP output fed by a :class:`LivePipeline`, open in ``browser`` with its
    first stats shown: yields (output, pipeline, text of an element by id); the output is closed
    after."""
    from selenium.webdriver.common.by import By

    out = open_output("http://127.0.0.1:0").start()
    try:
        with LivePipeline(out) as live:
            browser.get(out.url)
            text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
            wait_for(lambda: text("frames").strip().isdigit(), what="the first stats")
            yield out, live, text
    finally:
        out.close()


def test_page_plays_both_streams_and_updates_stats(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    out = open_output("http://127.0.0.1:0").start()
    try:
        with LivePipeline(out):
            browser.get(out.url)
            hashes = {}
            for view in ("raw", "restored"):
                first = wait_for(lambda: browser.execute_script(PIXEL_HASH_JS, view),
                                 what=f"the {view} image to load")
                assert first[:2] == [W, H], f"{view} shows {first[:2]}, expected {W}x{H}"
                hashes[view] = first[2]
            frames_before = int(wait_for(
                lambda: browser.find_element(By.ID, "frames").text.strip().isdigit()
                and browser.find_element(By.ID, "frames").text, what="the frames counter"))
            for view in ("raw", "restored"):
                wait_for(lambda: browser.execute_script(PIXEL_HASH_JS, view)[2] != hashes[view],
                         what=f"the {view} image to change")
            wait_for(lambda: int(browser.find_element(By.ID, "frames").text) > frames_before,
                     what="the frames counter to increase")

            text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
            assert float(text("fps")) >= 20.0
            assert float(text("e2e-p50")) >= 11.0 and text("e2e-p99") == "18.0"
            assert text("status") == "LIVE"
            assert text("task") == "denoise+destripe" and text("confidence") == "87 %"
            assert "restore" in text("stages") and "e2e" in text("stages")
            assert "°C" in text("scene")
            assert not browser.find_element(By.ID, "banner").is_displayed()

            # Hovering a video shows the temperature of the pixel under the cursor.
            ActionChains(browser).move_to_element(browser.find_element(By.ID, "raw")).perform()
            wait_for(lambda: "°C" in text("spot"), what="a spot temperature")
            x, y = map(int, re.match(r"raw \((\d+), (\d+)\)", text("spot")).groups())
            assert abs(x - W // 2) <= 1 and abs(y - H // 2) <= 1, "spot is not under the cursor"

            shot = tmp_path / "web-page.png"
            browser.save_screenshot(str(shot))
            assert shot.stat().st_size > 10000
            if os.environ.get("TIR_SAVE_SCREENSHOT"):
                shutil.copy(shot, os.environ["TIR_SAVE_SCREENSHOT"])

        # The feed stops: the page must say so instead of freezing on the last frame.
        out.attach(lambda: StatsSnapshot(connected=False))
        wait_for(lambda: browser.find_element(By.ID, "status").text == "NO SIGNAL",
                 what="the NO SIGNAL badge")
        assert browser.find_element(By.ID, "banner").is_displayed()
    finally:
        out.close()


def test_camera_card_shows_fpa_and_its_button_requests_ffc(browser):
    from selenium.webdriver.common.by import By

    requested = []
    with live_page(browser) as (out, live, text):
        assert not browser.find_element(By.ID, "camera-card").is_displayed()  # no camera control

        camera = {"fpa_temp_c": 35.24, "ffc_state": "complete", "last_ffc_age_s": 12.0, "ffc_count": 3}
        out.attach(lambda: dataclasses.replace(live.stats(), camera=CameraStats(**camera)),
                   {"ffc": lambda: requested.append(time.monotonic())})
        wait_for(lambda: text("fpa") == "35.2 °C", what="the FPA temperature")
        assert text("ffc-state") == "FFC complete, last 12 s ago (3 so far)"
        button = wait_for(lambda: browser.find_element(By.ID, "ffc-button").is_displayed()
                          and browser.find_element(By.ID, "ffc-button"), what="the FFC button")
        button.click()
        wait_for(lambda: requested, what="POST /ffc from the button")
        assert len(requested) == 1


def test_new_camera_button_posts_camera_new_and_the_card_shows_the_changes(browser):
    from selenium.webdriver.common.by import By

    requested = []
    with live_page(browser) as (out, live, text):
        assert not browser.find_element(By.ID, "history-card").is_displayed()  # nothing restored
        model = {"camera_changes": 2, "camera_change": ["size"]}
        out.attach(lambda: dataclasses.replace(live.stats(), model=dict(model)),
                   {"camera/new": lambda: requested.append(time.monotonic())})
        wait_for(lambda: text("camera-changes") == "2", what="the camera changes count")
        assert text("camera-change") == "last: size"
        browser.find_element(By.ID, "new-camera-button").click()
        wait_for(lambda: requested, what="POST /camera/new from the button")
        model.update(camera_changes=3, camera_change=["user"])
        wait_for(lambda: text("camera-change") == "last: user", what="the user's change")
        assert len(requested) == 1


def test_unusable_frames_show_in_the_drops_card(browser):
    # /stats.json and the status line counted them; the page showed only the stage drops
    with live_page(browser) as (out, live, text):
        assert "unusable" not in text("drops-detail")
        out.attach(lambda: dataclasses.replace(live.stats(), drops={"source": 0},
                                               corrupt={"size": 3, "depth": 0, "corrupt": 2}, corrupt_total=5))
        wait_for(lambda: text("drops-detail") == "unusable frames 5 (size 3, corrupt 2)",
                 what="the unusable frames count")
        assert text("drops") == "0"


def test_a_recording_split_at_the_file_size_limit_shows_on_the_page(browser):
    # session 18: the status line said "recording went on in N new files", the page nothing
    from tir.edge.pipeline.stats import RecordingStats

    with live_page(browser) as (out, live, text):
        assert "recording" not in text("drops-detail")
        split = RecordingStats(written=40, segments=2, path="/media/usb/rec")
        out.attach(lambda: dataclasses.replace(live.stats(), drops={"source": 0}, recording=split))
        wait_for(lambda: text("drops-detail") == "recording went on in 2 new files (file size limit)",
                 what="the recording's new files")


def test_router_adaptation_state_shows_on_the_page(browser):
    from selenium.webdriver.common.by import By

    with live_page(browser) as (out, live, text):
        assert not browser.find_element(By.ID, "adapt-fact").is_displayed()  # no adaptation

        state = {"state": "collecting 12/200", "frames": 200, "saved": None}
        out.attach(lambda: dataclasses.replace(live.stats(), adapt=AdaptStatus(**state)))
        wait_for(lambda: text("adapt") == "collecting 12/200", what="the collecting state")
        state = {"state": "adapted", "frames": 200, "saved": None}
        wait_for(lambda: text("adapt") == "adapted", what="the adapted state")
        state = {"state": "refused: 8 frames are too few", "frames": 8, "saved": None}
        wait_for(lambda: text("adapt") == "not adapted (refused: 8 frames are too few)",
                 what="the refused state")
        assert "bad" in browser.find_element(By.ID, "adapt").get_attribute("class")


def test_contrast_gate_shows_on_the_page(browser):
    from selenium.webdriver.common.by import By

    with live_page(browser) as (out, live, text):
        assert not browser.find_element(By.ID, "contrast-fact").is_displayed()  # gate off / no router

        gate = {"reference": None, "frames": 0, "ratio": 0.7746, "demoted": 0}
        out.attach(lambda: dataclasses.replace(live.stats(), contrast=ContrastStatus(**gate)))
        wait_for(lambda: text("contrast") == "ref - · 0 demoted · 0 tone-aligned", what="the gate with no reference yet")
        gate = {"reference": 0.3712, "frames": 40, "ratio": 0.7746, "demoted": 12, "aligned": 7}
        wait_for(lambda: text("contrast") == "ref 0.37 · 12 demoted · 7 tone-aligned",
                 what="the gate's reference and counts")
        gate = {"reference": 0.3712, "frames": 41, "ratio": 0.7746, "demoted": 12, "promoted": 2, "aligned": 7}
        wait_for(lambda: text("contrast") == "ref 0.37 · 12 demoted · 2 promoted · 7 tone-aligned",
                 what="the verdicts the gate gave the contrast part")
        fact = browser.find_element(By.ID, "contrast-fact")
        title = fact.get_attribute("title")
        assert fact.is_displayed() and "contrast gate" in title and "reference" in title
