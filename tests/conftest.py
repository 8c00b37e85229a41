"""Shared fixtures: small real synthetic thermal frames and sources, a fake sysfs tree."""
import os

import pytest

from tir.edge.sources import open_source
from tir.edge.sources.synthetic import render_frames

SMALL_FRAMES = 8


@pytest.fixture(scope="session")
def synthetic_frames():
    """Four consecutive 160x120 uint16 14-bit frames, shape (4, 120, 160)."""
    return render_frames(4, size=(160, 120), seed=0)


@pytest.fixture
def small_source():
    """A fast, finite synthetic source: 160x120, not paced, SMALL_FRAMES frames."""
    source = open_source(f"synthetic://?size=160x120&realtime=0&frames={SMALL_FRAMES}")
    yield source
    source.close()


def usb_device(sysfs, bus_path, vid, pid, product, serial="S1"):
    folder = sysfs / "devices" / bus_path
    folder.mkdir(parents=True)
    for key, value in (("idVendor", vid), ("idProduct", pid), ("product", product),
                       ("manufacturer", "ACME"), ("serial", serial)):
        (folder / key).write_text(value + "\n")
    return folder


def video_node(sysfs, usb_folder, node, name, index):
    interface = usb_folder / f"{usb_folder.name}:1.0"
    entry = interface / "video4linux" / node
    entry.mkdir(parents=True)
    (entry / "name").write_text(name + "\n")
    (entry / "index").write_text(f"{index}\n")
    os.symlink(os.path.relpath(interface, entry), entry / "device")
    cls = sysfs / "class" / "video4linux"
    cls.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(entry, cls), cls / node)


def tty_node(sysfs, usb_folder, node, nested):
    interface = usb_folder / f"{usb_folder.name}:1.0"
    parent = interface / node if nested else interface  # ttyUSB sits one level deeper
    entry = parent / "tty" / node
    entry.mkdir(parents=True)
    os.symlink(os.path.relpath(parent, entry), entry / "device")
    cls = sysfs / "class" / "tty"
    cls.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(entry, cls), cls / node)


@pytest.fixture
def fake_sysfs(tmp_path):
    """A sysfs + /dev tree: webcam video0/1, Boson video2 (capture) + video10 (metadata) +
    ttyACM0, TC001 video4, FTDI ttyUSB0, and video11 unknown to sysfs. Returns (sysfs, dev)."""
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    webcam = usb_device(sysfs, "pci0/usb1/1-1", "046d", "0825", "Webcam C270")
    boson = usb_device(sysfs, "pci0/usb1/1-2", "09cb", "4007", "Boson")
    video_node(sysfs, webcam, "video0", "UVC Camera (046d:0825)", 0)
    video_node(sysfs, webcam, "video1", "UVC Camera (046d:0825)", 1)
    video_node(sysfs, boson, "video10", "Boson: FLIR Video", 1)  # metadata node listed first
    video_node(sysfs, boson, "video2", "Boson: FLIR Video", 0)
    tty_node(sysfs, boson, "ttyACM0", nested=False)
    tc001 = usb_device(sysfs, "pci0/usb2/2-1", "0bda", "5830", "USB Camera")
    video_node(sysfs, tc001, "video4", "USB Camera: USB Camera", 0)
    ftdi = usb_device(sysfs, "pci0/usb1/1-3", "0403", "6001", "FT232R USB UART")
    tty_node(sysfs, ftdi, "ttyUSB0", nested=True)
    for name in ("video0", "video1", "video2", "video4", "video10", "video11", "ttyACM0", "ttyUSB0"):
        (dev / name).write_text("")  # video11: a node sysfs does not know (e.g. v4l2loopback)
    return str(sysfs), str(dev)
