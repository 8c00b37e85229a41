import re

import numpy as np
import pytest

from tir.edge.frame import Frame, FrameError, check_frame
from tir.edge.uri import parse_size, parse_uri
from tir.edge.sources import SourceError, check_source, open_source
from tir.edge.outputs import OutputError, open_output
from tir.engines.engine import Engine, EngineError, pad_to_multiple


def test_parse_uri_forms():
    u = parse_uri("synthetic://?size=320x256&fps=9&seed=3")
    assert u.scheme == "synthetic" and u.options == {"size": "320x256", "fps": "9", "seed": "3"}
    typed = check_source(u).values  # the scheme's declared options, typed (tir.edge.registry)
    assert (typed.fps, typed.seed, typed.size) == (9.0, 3, (320, 256))
    assert parse_uri("2").path == "/dev/video2" and parse_uri("2").scheme == "v4l2"
    assert parse_uri("/dev/video1").scheme == "v4l2"
    h = parse_uri("http://0.0.0.0:8081")
    assert (h.scheme, h.host, h.port) == ("http", "0.0.0.0", 8081)
    f = parse_uri("clip.tiff")
    assert f.scheme == "file" and f.path.endswith("clip.tiff")
    assert check_source("file:///tmp/x?loop=1").values.loop is True


def test_a_file_uri_path_is_percent_decoded_and_a_bare_path_is_not(tmp_path):
    # a folder named "take #2" could not be given as a file:// URI: '#' starts the fragment
    folder = tmp_path / "take #2"
    folder.mkdir()
    u = parse_uri(f"file://{tmp_path}/take%20%232?loop=1")
    assert u.path == str(folder) and u.options == {"loop": "1"}
    assert parse_uri(f"file://{tmp_path}/a%3Fb.npy").path == f"{tmp_path}/a?b.npy"
    assert parse_uri(f"{tmp_path}/50%25 gain").path == f"{tmp_path}/50%25 gain"  # bare: as written


def test_parse_size_rejects_garbage():
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size("640by512")


def test_unknown_schemes_name_the_known_ones():
    with pytest.raises(SourceError, match="synthetic://"):
        open_source("gopher://x")
    with pytest.raises(OutputError, match="http://"):
        open_output("gopher://x")


def test_frame_stamps_and_checks():
    raw = np.zeros((4, 6), np.uint16)
    f = Frame(raw=raw, seq=1, t_capture=1.0)
    assert f.stamps["capture"] == 1.0 and f.shape == (4, 6)
    f.stamp("infer")
    assert f.stamps["infer"] >= 0
    check_frame(raw, (4, 6))
    with pytest.raises(FrameError) as e:
        check_frame(raw.astype(np.uint8))
    assert e.value.kind == "dtype"
    with pytest.raises(FrameError) as e:
        check_frame(raw, (6, 4))
    assert e.value.kind == "shape"


class Doubler(Engine):
    multiple = 8
    backend = "numpy"

    def _run(self, batch):
        assert batch.shape[-1] % 8 == 0 and batch.shape[-2] % 8 == 0
        return batch * 2


def test_engine_pads_and_crops_any_size():
    x = np.random.default_rng(0).random((1, 1, 13, 21), dtype=np.float32)
    y = Doubler("double").infer(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, 2 * x)
    assert Doubler("double").infer(x[0, 0]).shape == (1, 1, 13, 21)
    with pytest.raises(EngineError):
        Doubler("double").infer(np.zeros((1, 3, 8, 8), np.float32))


def test_pad_to_multiple_tiny_frames_use_edge_mode():
    padded, hw = pad_to_multiple(np.ones((1, 1, 2, 3), np.float32), 8)
    assert padded.shape == (1, 1, 8, 8) and hw == (2, 3)


class Embedder(Engine):
    multiple = 4
    backend = "numpy"

    def _run(self, batch):
        return np.full((batch.shape[0], 700), 1.0, np.float32)


def test_engine_leaves_non_image_outputs_uncropped():
    out = Embedder("embed").infer(np.zeros((1, 1, 10, 10), np.float32))
    assert out.shape == (1, 700)


def test_a_misspelt_uri_option_is_refused_naming_the_known_ones():
    from tir.edge.outputs.base import OutputError, open_output
    from tir.edge.sources.base import SourceError, open_source

    with pytest.raises(SourceError, match=r"unknown option degarde; valid options: .*degrade"):
        open_source("synthetic://?degarde=noise")
    with pytest.raises(ValueError, match=r"^synthetic://\?fps=abc: option fps must be a number"):
        open_source("synthetic://?fps=abc")
    with pytest.raises(OutputError, match=r"unknown option max_viewer; valid options: .*max_viewers"):
        open_output("http://127.0.0.1:0?max_viewer=1")
    source = open_source("synthetic://?size=160x120&degrade=noise")  # known options still work
    source.close()


@pytest.mark.parametrize("text, says", [
    ("http:127.0.0.1:8081", "write http://127.0.0.1:8081"),   # was a recording into ./http:127.0.0.1:8081
    ("http:/127.0.0.1:8081", "write http://127.0.0.1:8081"),
    ("synthetic:", "write synthetic://"),
    ("v4l2:0", "write v4l2://0"),
])
def test_a_scheme_without_its_slashes_is_refused_not_taken_for_a_folder(tmp_path, monkeypatch, text, says):
    from tir.edge.errors import UsageError
    from tir.edge.uri import parse_uri

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=re.escape(says)):
        parse_uri(text)
    (tmp_path / "take:1").mkdir()                        # a path of that form that exists is a path
    assert parse_uri("take:1").path == str(tmp_path / "take:1")
    assert parse_uri("./http:x").scheme == "file" and parse_uri("C:").scheme == "file"
