"""End to end: synthetic camera -> pipeline -> ONNX model exported here -> HTTP MJPEG,
read back with a real HTTP client and decoded, as a browser would."""
import http.client
import json
import time

import cv2
import numpy as np

from tir.edge.outputs import open_output
from tir.edge.pipeline import Pipeline
from tir.edge.sources import open_source
from tir.engines.backends import load_engine
from tir.engines.training.models.plainnet import export_plainnet_onnx


def read_parts(response, count):
    """JPEG bodies of the first ``count`` parts of a multipart/x-mixed-replace stream."""
    boundary = response.getheader("Content-Type").split("boundary=")[1].encode()
    parts = []
    while len(parts) < count:
        line = response.fp.readline()
        if line.strip() != b"--" + boundary:
            continue
        headers = {}
        while True:
            line = response.fp.readline().strip()
            if not line:
                break
            key, value = line.decode().split(":", 1)
            headers[key.lower()] = value.strip()
        parts.append(response.fp.read(int(headers["content-length"])))
    return parts


def test_synthetic_through_onnx_to_mjpeg(tmp_path):
    engine = load_engine(export_plainnet_onnx("tiny", tmp_path / "tiny.onnx"))
    source = open_source("synthetic://?size=160x120&fps=30")
    http_out = open_output("http://127.0.0.1:0")
    pipeline = Pipeline(source, engine, [http_out], duration=20).start()
    try:
        deadline = time.monotonic() + 10
        while pipeline.snapshot().get("frames", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # until frames flow, the streams show the NO SIGNAL card
        conn = http.client.HTTPConnection("127.0.0.1", http_out.port, timeout=10)
        jpegs = {}
        for view in ("raw", "restored"):
            conn.request("GET", f"/stream/{view}.mjpg")
            response = conn.getresponse()
            assert response.status == 200
            jpegs[view] = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
                           for j in read_parts(response, 4)]
            response.close()
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", http_out.port, timeout=10)
        for view, images in jpegs.items():
            assert all(im is not None and im.shape[:2] == (120, 160) for im in images), view
            # the camera's people and cars move: later frames differ from the first
            assert max(np.abs(im.astype(int) - images[0]).mean() for im in images[1:]) > 0.1, view
        time.sleep(1.0)
        conn.request("GET", "/stats.json")
        stats = json.loads(conn.getresponse().read())
        assert stats["frames"] > 5 and stats["connected"] is True
        assert stats["latency_ms"]["e2e"]["p50"] > 0
        assert {"preprocess", "infer", "postprocess", "display"} <= set(stats["latency_ms"])
    finally:
        pipeline.stop()
    assert pipeline.error is None
