import os

from tir.edge.sources.devices import (describe_serial_ports, describe_video_devices,
                                      find_thermal_camera, list_serial_ports, list_video_devices,
                                      video_device_info)


def test_video_devices_with_names_and_usb_ids(fake_sysfs):
    sysfs, dev = fake_sysfs
    devices = list_video_devices(sysfs, dev)
    assert [os.path.basename(d.path) for d in devices] == ["video0", "video1", "video2", "video4", "video10", "video11"]
    by_node = {os.path.basename(d.path): d for d in devices}
    assert by_node["video2"].usb_id == "09cb:4007" and by_node["video2"].name == "Boson: FLIR Video"
    assert by_node["video2"].index == 0 and by_node["video2"].camera.name == "FLIR Boson"
    assert by_node["video0"].usb_id == "046d:0825" and by_node["video0"].camera is None
    assert by_node["video11"].usb_id == "" and by_node["video11"].path == f"{dev}/video11"
    assert video_device_info(f"{dev}/video2", sysfs, dev).serial == "S1"
    text = describe_video_devices(sysfs, dev)
    assert "video2 'Boson: FLIR Video' [09cb:4007 FLIR Boson]" in text and "video11" in text


def test_serial_ports_for_acm_and_usb_serial_layouts(fake_sysfs):
    sysfs, dev = fake_sysfs
    ports = {os.path.basename(p.path): p for p in list_serial_ports(sysfs, dev)}
    assert set(ports) == {"ttyACM0", "ttyUSB0"}
    assert ports["ttyACM0"].usb_id == "09cb:4007" and ports["ttyACM0"].name == "Boson"
    assert ports["ttyUSB0"].usb_id == "0403:6001" and ports["ttyUSB0"].manufacturer == "ACME"
    assert "ttyUSB0 'FT232R USB UART' [0403:6001]" in describe_serial_ports(sysfs, dev)


def test_find_thermal_camera_prefers_the_capture_node(fake_sysfs):
    sysfs, dev = fake_sysfs
    path, fmt = find_thermal_camera(sysfs, dev)
    assert path == f"{dev}/video2" and fmt.name == "boson"


def test_nothing_plugged_in(tmp_path):
    (tmp_path / "dev").mkdir()
    assert list_video_devices(str(tmp_path / "sys"), str(tmp_path / "dev")) == []
    assert find_thermal_camera(str(tmp_path / "sys"), str(tmp_path / "dev")) is None
    assert "no video devices" in describe_video_devices(str(tmp_path / "sys"), str(tmp_path / "dev"))
    assert "no USB serial ports" in describe_serial_ports(str(tmp_path / "sys"), str(tmp_path / "dev"))
