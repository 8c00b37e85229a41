"""What cameras and serial ports are plugged in: /dev/video* and /dev/tty{ACM,USB}* with
their names and USB VID:PID read from sysfs.

sysfs layout used (Linux): ``/sys/class/video4linux/videoN/{name,index}`` and
``/sys/class/tty/ttyACMN``; each has a ``device`` link to the USB interface, and walking up
from it reaches the USB device folder holding ``idVendor``, ``idProduct``, ``product``,
``manufacturer`` and ``serial``. Every function takes ``sysfs_root`` and ``dev_root`` so
tests can point them at a tree built in a temporary folder.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..camera.formats import CameraModel, RawFormat, camera_for, format_for

SERIAL_PATTERNS = ("ttyACM*", "ttyUSB*")


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _number(name: str) -> Tuple[str, int]:
    m = re.match(r"(\D*)(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def usb_info(class_entry: str, sysfs_root: str = "/sys") -> Dict[str, str]:
    """USB attributes (idVendor, idProduct, product, manufacturer, serial) of the USB device
    above a sysfs class entry, found by walking up from its ``device`` link; {} if not USB."""
    link = os.path.join(class_entry, "device")
    if not os.path.exists(link):
        return {}
    path = os.path.realpath(link)
    stop = os.path.realpath(sysfs_root)
    while path.startswith(stop) and len(path) > len(stop):
        if os.path.isfile(os.path.join(path, "idVendor")) and os.path.isfile(os.path.join(path, "idProduct")):
            keys = ("idVendor", "idProduct", "product", "manufacturer", "serial")
            return {k: v for k in keys if (v := _read(os.path.join(path, k))) is not None}
        path = os.path.dirname(path)
    return {}


@dataclass
class UsbDevice:
    """A /dev node with what sysfs says about it."""

    path: str
    name: str = ""
    vid: Optional[int] = None
    pid: Optional[int] = None
    manufacturer: str = ""
    serial: str = ""

    @property
    def usb_id(self) -> str:
        """``"vvvv:pppp"`` (USB vendor:product id, lower-case hex), or "" when sysfs does not say."""
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else ""

    @property
    def camera(self) -> Optional[CameraModel]:
        """The known thermal camera model with this USB id (:func:`camera_for`), or None."""
        return camera_for(self.vid, self.pid) if self.usb_id else None

    def describe(self) -> str:
        """One line for messages: path, product name and ``[vid:pid camera]`` where known."""
        parts = [self.path]
        if self.name:
            parts.append(repr(self.name))
        if self.usb_id:
            known = self.camera
            parts.append(f"[{self.usb_id}{' ' + known.name if known else ''}]")
        return " ".join(parts)


@dataclass
class VideoDevice(UsbDevice):
    """A V4L2 video node (``/dev/videoN``); ``index`` is sysfs' node index (0 = capture, 1 = UVC metadata)."""
    index: Optional[int] = None  # V4L2 node index: 0 = capture node, 1 = UVC metadata


@dataclass
class SerialPort(UsbDevice):
    """A USB serial port (``/dev/ttyACM*``, ``/dev/ttyUSB*``), e.g. a camera's control port."""
    pass


def _fill(device: UsbDevice, info: Dict[str, str]) -> None:
    if "idVendor" in info and "idProduct" in info:
        try:
            device.vid, device.pid = int(info["idVendor"], 16), int(info["idProduct"], 16)
        except ValueError:
            pass
    device.manufacturer = info.get("manufacturer", "")
    device.serial = info.get("serial", "")
    if not device.name:
        device.name = info.get("product", "")


def list_video_devices(sysfs_root: str = "/sys", dev_root: str = "/dev") -> List[VideoDevice]:
    """Video nodes known to sysfs or present in ``dev_root``, in numeric order."""
    found: Dict[str, VideoDevice] = {}
    for entry in glob.glob(os.path.join(sysfs_root, "class", "video4linux", "video*")):
        node = os.path.basename(entry)
        index = _read(os.path.join(entry, "index"))
        device = VideoDevice(os.path.join(dev_root, node), name=_read(os.path.join(entry, "name")) or "",
                             index=int(index) if index and index.isdigit() else None)
        _fill(device, usb_info(entry, sysfs_root))
        found[node] = device
    for path in glob.glob(os.path.join(dev_root, "video*")):
        found.setdefault(os.path.basename(path), VideoDevice(path))
    return [found[k] for k in sorted(found, key=_number)]


def list_serial_ports(sysfs_root: str = "/sys", dev_root: str = "/dev") -> List[SerialPort]:
    """USB serial ports (ttyACM*, ttyUSB*) with their VID:PID, in name order."""
    found: Dict[str, SerialPort] = {}
    for pattern in SERIAL_PATTERNS:
        for entry in glob.glob(os.path.join(sysfs_root, "class", "tty", pattern)):
            node = os.path.basename(entry)
            port = SerialPort(os.path.join(dev_root, node))
            _fill(port, usb_info(entry, sysfs_root))
            found[node] = port
        for path in glob.glob(os.path.join(dev_root, pattern)):
            found.setdefault(os.path.basename(path), SerialPort(path))
    return [found[k] for k in sorted(found, key=_number)]


def video_device_info(path: str, sysfs_root: str = "/sys", dev_root: str = "/dev") -> Optional[VideoDevice]:
    """What is known about one video node (``/dev/videoN`` or a link to it)."""
    node = os.path.basename(os.path.realpath(path)) if os.path.exists(path) else os.path.basename(path)
    for device in list_video_devices(sysfs_root, dev_root):
        if os.path.basename(device.path) == node:
            return device
    return None


def describe_video_devices(sysfs_root: str = "/sys", dev_root: str = "/dev") -> str:
    """One line for error messages: the video devices that exist."""
    devices = list_video_devices(sysfs_root, dev_root)
    if not devices:
        return f"no video devices ({dev_root}/video*) exist on this machine"
    return "video devices here: " + "; ".join(d.describe() for d in devices)


def describe_serial_ports(sysfs_root: str = "/sys", dev_root: str = "/dev") -> str:
    """One line for error messages: the USB serial ports that exist."""
    ports = list_serial_ports(sysfs_root, dev_root)
    if not ports:
        return f"no USB serial ports ({dev_root}/ttyACM*, {dev_root}/ttyUSB*) exist on this machine"
    return "serial ports here: " + "; ".join(p.describe() for p in ports)


def find_thermal_camera(sysfs_root: str = "/sys", dev_root: str = "/dev") -> Optional[Tuple[str, RawFormat]]:
    """(path, raw format) of the first known thermal camera's capture node, or None.

    A UVC camera exposes several nodes (thermal_io.md 3.2: the Boson has several); the
    capture node has sysfs ``index`` 0, so it is preferred over metadata nodes."""
    cameras = [d for d in list_video_devices(sysfs_root, dev_root) if d.camera is not None]
    cameras.sort(key=lambda d: (d.index not in (0, None), _number(os.path.basename(d.path))))
    if not cameras:
        return None
    return cameras[0].path, format_for(cameras[0].vid, cameras[0].pid)
