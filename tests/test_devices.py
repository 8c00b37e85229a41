import os

from tir.edge.sources.devices import (describe_serial_ports, describe_video_devices,
                                      find_thermal_camera, list_serial_ports, list_video_devices,
                                      video_device_info)


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


def build_tree(tmp_path):
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    webcam = usb_device(sysfs, "pci0/usb1/1-1", "046d", "0825", "Webcam C270")
    boson = usb_device(sysfs, "pci0/usb1/1-2", "09cb", "4007", "Boson")
    video_node(sysfs, webcam, "video0", "UVC Camera (046d:0825)", 0)
    video_node(sysfs, webcam, "video1", "UVC Camera (046d:0825)", 1)
    video_node(sysfs, boson, "video10", "Boson: FLIR Video", 1)  # metadata node listed first
    video_node(sysfs, boson, "video2", "Boson: FLIR Video", 0)
    tty_node(sysfs, boson, "ttyACM0", nested=False)
    ftdi = usb_device(sysfs, "pci0/usb1/1-3", "0403", "6001", "FT232R USB UART")
    tty_node(sysfs, ftdi, "ttyUSB0", nested=True)
    for name in ("video0", "video1", "video2", "video10", "video11", "ttyACM0", "ttyUSB0"):
        (dev / name).write_text("")  # video11: a node sysfs does not know (e.g. v4l2loopback)
    return str(sysfs), str(dev)


def test_video_devices_with_names_and_usb_ids(tmp_path):
    sysfs, dev = build_tree(tmp_path)
    devices = list_video_devices(sysfs, dev)
    assert [os.path.basename(d.path) for d in devices] == ["video0", "video1", "video2", "video10", "video11"]
    by_node = {os.path.basename(d.path): d for d in devices}
    assert by_node["video2"].usb_id == "09cb:4007" and by_node["video2"].name == "Boson: FLIR Video"
    assert by_node["video2"].index == 0 and by_node["video2"].camera.name == "FLIR Boson"
    assert by_node["video0"].usb_id == "046d:0825" and by_node["video0"].camera is None
    assert by_node["video11"].usb_id == "" and by_node["video11"].path == f"{dev}/video11"
    assert video_device_info(f"{dev}/video2", sysfs, dev).serial == "S1"
    text = describe_video_devices(sysfs, dev)
    assert "video2 'Boson: FLIR Video' [09cb:4007 FLIR Boson]" in text and "video11" in text


def test_serial_ports_for_acm_and_usb_serial_layouts(tmp_path):
    sysfs, dev = build_tree(tmp_path)
    ports = {os.path.basename(p.path): p for p in list_serial_ports(sysfs, dev)}
    assert set(ports) == {"ttyACM0", "ttyUSB0"}
    assert ports["ttyACM0"].usb_id == "09cb:4007" and ports["ttyACM0"].name == "Boson"
    assert ports["ttyUSB0"].usb_id == "0403:6001" and ports["ttyUSB0"].manufacturer == "ACME"
    assert "ttyUSB0 'FT232R USB UART' [0403:6001]" in describe_serial_ports(sysfs, dev)


def test_find_thermal_camera_prefers_the_capture_node(tmp_path):
    sysfs, dev = build_tree(tmp_path)
    path, fmt = find_thermal_camera(sysfs, dev)
    assert path == f"{dev}/video2" and fmt.name == "boson"


def test_nothing_plugged_in(tmp_path):
    (tmp_path / "dev").mkdir()
    assert list_video_devices(str(tmp_path / "sys"), str(tmp_path / "dev")) == []
    assert find_thermal_camera(str(tmp_path / "sys"), str(tmp_path / "dev")) is None
    assert "no video devices" in describe_video_devices(str(tmp_path / "sys"), str(tmp_path / "dev"))
    assert "no USB serial ports" in describe_serial_ports(str(tmp_path / "sys"), str(tmp_path / "dev"))
