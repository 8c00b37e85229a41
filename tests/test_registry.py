"""The one registry pattern (tir.edge.registry): typed options, unknown options refused, bad
values named, everything checked before anything opens; every entry of every registry."""
from dataclasses import dataclass
from typing import Optional

import pytest

from tir.edge.camera.formats import CAMERAS, PROTOCOLS
from tir.edge.outputs.base import OUTPUTS, OutputError, check_output
from tir.edge.registry import OptionError, Registry, option, options_of, parse_options
from tir.edge.sources.base import SOURCES, SourceError, SourceOptionError, check_source, open_source
from tir.tools.cli import main


@dataclass(frozen=True)
class ToyOptions:
    size: int = option(3, "a size", check=lambda v: None if v > 0 else "must be > 0")
    mode: str = option("a", "a mode", choices=("a", "b"))
    on: bool = option(False, "a switch")
    gain: Optional[float] = option(None, "a gain")


def test_options_parse_typed_values_and_name_bad_ones():
    o = parse_options(ToyOptions, {"size": "7", "on": "yes", "gain": "0.5"}, "toy://")
    assert o == ToyOptions(size=7, mode="a", on=True, gain=0.5)
    assert parse_options(ToyOptions, {}, "toy://") == ToyOptions()
    with pytest.raises(OptionError, match=r"^toy://\?size=x: option size must be an integer \(got 'x'\)$"):
        parse_options(ToyOptions, {"size": "x"}, "toy://?size=x")
    with pytest.raises(OptionError, match=r"option size must be > 0 \(got '0'\)"):
        parse_options(ToyOptions, {"size": "0"}, "toy://")
    with pytest.raises(OptionError, match=r"option mode must be one of a, b \(got 'c'\)"):
        parse_options(ToyOptions, {"mode": "c"}, "toy://")
    with pytest.raises(OptionError, match=r"option on must be 1 or 0"):
        parse_options(ToyOptions, {"on": "maybe"}, "toy://")
    with pytest.raises(OptionError, match=r"^toy://: unknown options sise, x; valid options: size, mode, on, gain$"):
        parse_options(ToyOptions, {"sise": "1", "x": "2"}, "toy://")
    assert [o.name for o in options_of(ToyOptions)] == ["size", "mode", "on", "gain"]
    assert options_of(ToyOptions)[3].type is float and options_of(ToyOptions)[1].choices == ("a", "b")


def test_registry_lookup_aliases_lazy_targets_and_help():
    reg = Registry("toy", KeyError, casefold=True)
    reg.register("json", "json:dumps", help="dump JSON", aliases=("js",), suffixes=(".json",))

    @reg.register("Upper", help="upper-case text", options=ToyOptions)
    def upper(text):
        return text.upper()

    assert reg.load("JS") is __import__("json").dumps and reg.get("upper").load() is upper
    assert reg.get("json").suffixes == (".json",) and "js" in reg.choices()
    assert reg.get("upper").parse({"size": "2"}).size == 2
    assert reg.find(lambda e: ".json" in e.meta.get("suffixes", ())).name == "json"
    with pytest.raises(KeyError, match="unknown toy 'yaml'; known: json, Upper"):
        reg.get("yaml")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("JSON", "json:loads", help="x")
    with pytest.raises(ValueError, match="one-line help"):
        reg.register("empty", "json:loads", help=" ")
    strict = Registry("camera", meta={"usb_ids": (), "protocol": None})
    strict.register("cam", object(), help="a camera", usb_ids=((1, 2),))
    assert strict.get("cam").protocol is None and strict.get("cam").usb_ids == ((1, 2),)
    with pytest.raises(ValueError, match="camera 'typo': unknown field usb_id; fields: usb_ids, protocol"):
        strict.register("typo", object(), help="a camera", usb_id=(1, 2))
    reg.unregister("json")
    assert "js" not in reg and reg.names() == ["Upper"]


def _all_registries():
    from tir.engines.backends import BACKENDS
    from tir.engines.degrade import OPS
    from tir.engines.models import MODELS
    from tir.tools.cli import MODES

    return {"sources": SOURCES, "outputs": OUTPUTS, "cameras": CAMERAS, "protocols": PROTOCOLS,
            "backends": BACKENDS, "degradation ops": OPS, "models": MODELS, "modes": MODES}


@pytest.mark.parametrize("name", ["sources", "outputs", "cameras", "protocols", "backends", "degradation ops",
                                  "models", "modes"])
def test_every_entry_of_every_registry_has_help_declared_options_and_refuses_unknown_ones(name):
    registry = _all_registries()[name]
    assert len(registry) > 0
    for entry in registry:
        assert len(entry.help) > 10, (name, entry.name)
        if name == "modes":  # a mode's options are its argparse flags: an unknown one is refused
            with pytest.raises(SystemExit) as info:
                main([entry.name, "--no-such-option"])
            assert info.value.code == 2
            continue
        options = entry.option_list()  # loads the target: every declared option is well formed
        for opt in options:
            assert opt.help.strip(), (name, entry.name, opt.name)
            if opt.default is not None and opt.choices is not None:
                assert opt.default in opt.choices, (name, entry.name, opt.name)
        with pytest.raises(ValueError, match="unknown option no_such_option; valid options: "
                                             + (", ".join(o.name for o in options) or "none")):
            entry.parse({"no_such_option": "1"}, where=f"{entry.name}")
        if options:  # every declared default is itself accepted
            entry.parse({o.name: o.default for o in options if o.default is not None}, where=entry.name)


def test_source_options_are_checked_before_anything_opens():
    with pytest.raises(SourceOptionError, match=r"^synthetic://\?fps=abc: option fps must be a number \(got 'abc'\)$"):
        check_source("synthetic://?fps=abc")
    with pytest.raises(SourceOptionError, match=r"unknown option degarde; valid options: size, fps, seed"):
        check_source("synthetic://?degarde=noise")
    with pytest.raises(SourceOptionError, match=r"option degrade must be a degradation name.*no degradation 'fog'"):
        check_source("synthetic://?degrade=fog")
    with pytest.raises(SourceError, match=r"unknown source scheme 'rtmp' in 'rtmp://cam'; known: synthetic://, file://, v4l2://"):
        check_source("rtmp://cam")
    with pytest.raises(SourceOptionError, match="option format must be a camera format.*unknown raw format 'mjpg'"):
        check_source("v4l2:///dev/video99?format=mjpg")  # refused without touching the device
    assert check_source("v4l2:///dev/video99?format=Boson&size=640x512").values.size == (640, 512)
    assert isinstance(SourceOptionError("x"), ValueError)
    src = open_source("synthetic://?size=160x120&realtime=0&frames=1", fps=12)
    assert src.options.fps == 12.0 and src.options.size == (160, 120) and src.fps == 12.0
    src.close()


def test_output_options_are_checked_before_anything_binds():
    with pytest.raises(OutputError, match=r"http://127.0.0.1:0\?max_viewers=x: option max_viewers must be an integer"):
        check_output("http://127.0.0.1:0?max_viewers=x")
    with pytest.raises(OutputError, match=r"unknown option qualty; valid options: quality, no_signal_after"):
        check_output("http://127.0.0.1:0?qualty=90")
    with pytest.raises(OutputError, match="unknown output scheme 'ftp'"):
        check_output("ftp://x")


@pytest.mark.parametrize("source, message", [
    ("synthetic://?degarde=noise", "unknown option degarde"),
    ("synthetic://?fps=abc", "option fps must be a number"),
    ("synthetic://?degrade=fog", "option degrade must be a degradation name"),
])
def test_tir_run_refuses_bad_source_options_before_the_model_loads_or_the_server_binds(
        monkeypatch, capsys, source, message):
    from tir.tools import run

    def no_model(*a, **kw):
        raise AssertionError("the model loaded before the options were checked")

    monkeypatch.setattr(run, "load_model", no_model)
    assert main(["run", "--source", source, "--port", "0", "--frames", "1"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"tir run: error: {source}: {message}") and "tir run: output" not in out


def test_tir_run_refuses_a_bad_output_option_before_the_source_opens(monkeypatch, capsys):
    from tir.tools import run

    monkeypatch.setattr(run, "load_model", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("loaded")))
    assert main(["run", "--source", "synthetic://", "--output", "http://127.0.0.1:0?max_viewer=2"]) == 2
    assert "unknown option max_viewer; valid options: quality" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# docs/architecture.md, "Adding things": each path done here, end to end
# --------------------------------------------------------------------------------------------

def test_add_a_camera_format_is_one_descriptor(fake_sysfs):
    """One CAMERAS.register(...) call: the USB id finds it, v4l2:// decodes with it, format= takes it."""
    import numpy as np

    from tir.edge.camera.formats import Layout, RawFormat, camera_for, format_for, get_format
    from tir.edge.sources.v4l2 import V4L2Source
    from tir.edge.uri import parse_uri
    from test_sources_v4l2 import FakeCapture

    sysfs, dev = fake_sysfs
    toy = RawFormat("toycam", "Y16 ", (160, 121), 0.05, "a toy camera: 160x120 + 1 telemetry row at the bottom",
                    (Layout("toycam 160", (160, 121), 1, 0.05),))
    CAMERAS.register("toycam", toy, help="a toy Y16 camera with one telemetry row (test)",
                     title="Toy Cam", usb_ids=((0x046D, 0x0825),), protocol=None)  # the fixture's 'webcam'
    try:
        assert format_for("046d", "0825") is toy and camera_for(0x046D, 0x0825).name == "Toy Cam"
        assert get_format("TOYCAM") is toy and check_source("v4l2:///dev/video0?format=toycam").values.format == "toycam"
        image = np.arange(160 * 121, dtype=np.uint16).reshape(121, 160)
        source = V4L2Source(parse_uri(f"v4l2://{dev}/video0"), FakeCapture([image], native=(160, 121)), sysfs, dev)
        frame = source.read()
        assert source.format is toy and frame.raw.shape == (120, 160) and frame.meta["kelvin_per_count"] == 0.05
        np.testing.assert_array_equal(frame.raw, image[:120])
        source.close()
    finally:
        CAMERAS.unregister("toycam")
    assert format_for("046d", "0825") is None


def test_add_a_backend_is_one_module_and_its_registry_entry(tmp_path, capsys):  # noqa: C901
    """An Engine subclass (here in this test module) + one BACKENDS.register(...) call: auto picks
    it by suffix, its options are checked, and the CLI offers it."""
    from dataclasses import dataclass as dc

    import numpy as np

    from tir.engines.backends import BACKENDS, load_engine
    from tir.engines.engine import Engine, EngineError

    @dc(frozen=True)
    class GainOptions:
        gain: float = option(1.0, "multiply the input by this")

    class GainEngine(Engine):
        backend = "gain"

        def __init__(self, path, gain: float = 1.0):
            super().__init__(path.stem)
            self.gain = gain

        def _run(self, batch):
            return batch * np.float32(self.gain)

    BACKENDS.register("gain", GainEngine, options=GainOptions, help="multiplies frames by a constant (a test backend)",
                      suffixes=(".gain",), accepts=(".gain",), requires=(), install="nothing", modules=False)
    try:
        model = tmp_path / "x.gain"
        model.write_text("")
        engine = load_engine(model, gain="2.5")
        assert isinstance(engine, GainEngine) and engine.gain == 2.5
        np.testing.assert_array_equal(engine.infer(np.ones((1, 1, 8, 8), np.float32)), np.full((1, 1, 8, 8), 2.5))
        with pytest.raises(EngineError, match="backend gain: unknown option threads; valid options: gain"):
            load_engine(model, backend="gain", threads=2)
        with pytest.raises(EngineError, match="backend gain: option gain must be a number"):
            load_engine(model, gain="x")
        with pytest.raises(SystemExit):
            main(["run", "--help"])
        assert "gain: .gain" in " ".join(capsys.readouterr().out.split())  # --backend help from the registry
        report = tmp_path / "bench.json"
        assert main(["bench", "--mode", "model", "--model", str(model), "--backend", "gain", "--size", "32x24",
                     "--frames", "2", "--warmup", "1", "--no-progress", "--json", str(report)]) == 0
        result = __import__("json").loads(report.read_text())["results"][0]
        assert result["backend"] == "gain" and result["model_only"]["frames"] == 2 and "error" not in result
    finally:
        BACKENDS.unregister("gain")


@pytest.mark.parametrize("uri, message", [
    # a duplicated option: the last one silently won
    ("synthetic://?fps=30&fps=10", "synthetic://?fps=30&fps=10: option fps is given twice ('30' and '10'); give it once"),
    ("synthetic://?degrade=noise&degrade=blur", "option degrade is given twice ('noise' and 'blur')"),
    ("file:///tmp/x.npy?loop=1&loop=0", "option loop is given twice"),
    # infinity was taken (NaN was not): fps=inf on the recorder hung tir run
    ("synthetic://?degrade_period=inf", "option degrade_period must be a finite number (got 'inf')"),
    ("file:///tmp/x.npy?fps=inf", "option fps must be a finite number (got 'inf')"),
    ("v4l2:///dev/video0?fps=inf", "option fps must be a finite number (got 'inf')"),
    # out of range values that were accepted, failed later or were clamped silently
    ("synthetic://?seed=-1", "option seed must be >= 0 (got '-1')"),  # numpy: "expected non-negative integer"
    ("v4l2:///dev/video0?size=0x0", "option size must be WIDTHxHEIGHT with each side 1..8192 (got '0x0')"),
    ("v4l2:///dev/video0?size=100000x100000", "option size must be WIDTHxHEIGHT with each side 1..8192"),
])
def test_bad_source_uris_are_refused_naming_the_option(uri, message):
    with pytest.raises(SourceError) as info:
        check_source(uri)
    assert message in str(info.value)


@pytest.mark.parametrize("uri, message", [
    ("http://127.0.0.1:8080?quality=50&quality=90", "option quality is given twice ('50' and '90')"),
    ("file:///tmp/rec?what=raw&what=restored", "option what is given twice"),
    ("file:///tmp/rec?fps=inf", "option fps must be a finite number (got 'inf')"),
    ("display://0?scale=inf", "option scale must be a finite number"),
    ("collect:///tmp/c?rate=inf", "option rate must be a finite number"),
    ("http://127.0.0.1:8080?no_signal_after=inf", "option no_signal_after must be a finite number"),
    ("http://127.0.0.1:8080?quality=0", "option quality must be 1..100 (a JPEG quality) (got '0')"),  # was snapped to 50
    ("http://127.0.0.1:8080?quality=101", "option quality must be 1..100"),
    ("file:///tmp/rec?queue=0", "option queue must be 1..1024 (got '0')"),  # was clamped to 1
    ("file:///tmp/rec?queue=-5", "option queue must be 1..1024"),
    ("file:///tmp/rec?queue=10000000000", "option queue must be 1..1024"),  # an unbounded buffer of frame copies
    ("file:///tmp/rec?compression=42", "option compression must be 0..9 (got '42')"),  # was clamped to 9
    ("rtsp://@:8554/tir?relay_port=70000", "option relay_port must be a port 1..65535"),
    # the port of the address: 'abc' was "invalid literal for int()", 99999 an OverflowError after the model loaded
    ("http://127.0.0.1:abc", "http://127.0.0.1:abc: port 'abc' is not a port number (0..65535)"),
    ("http://127.0.0.1:99999", "port '99999' is not a port number"),
    ("http://127.0.0.1:-1", "port '-1' is not a port number"),
    ("rtsp://@:99999/tir", "port '99999' is not a port number"),
])
def test_bad_output_uris_are_refused_naming_the_option(uri, message):
    with pytest.raises(OutputError) as info:
        check_output(uri)
    assert message in str(info.value)


def test_uri_port_forms_that_stay_valid():
    from tir.edge.uri import parse_uri

    assert parse_uri("http://[::1]").port is None and parse_uri("http://[::1]:8080").port == 8080
    assert parse_uri("http://:0").port == 0 and parse_uri("HTTP://127.0.0.1:8080/").port == 8080
    assert check_output("http://127.0.0.1:8080?quality=100").values.quality == 100


def test_tir_run_refuses_an_infinite_preview_fps_instead_of_hanging(monkeypatch, capsys, tmp_path):
    from tir.tools import run

    monkeypatch.setattr(run, "load_model", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("loaded")))
    uri = f"file://{tmp_path}/rec?fps=inf"
    assert main(["run", "--source", "synthetic://", "--output", uri, "--frames", "1"]) == 2
    assert capsys.readouterr().err == f"tir run: error: {uri}: option fps must be a finite number (got 'inf')\n"


def test_schemes_that_name_nothing_refuse_text_after_the_scheme():
    """synthetic:// and display:// name nothing after '://': text there is refused, not ignored."""
    from tir.edge.outputs import open_output
    from tir.edge.outputs.base import OutputOptionError
    from tir.edge.sources import open_source
    from tir.edge.sources.base import SourceOptionError

    with pytest.raises(SourceOptionError, match="synthetic:// names nothing after '://', got 'foo'"):
        open_source("synthetic://foo?fps=10")
    with pytest.raises(OutputOptionError, match="display:// names nothing after '://', got 'abc'"):
        open_output("display://abc")
    with pytest.raises(OutputOptionError, match="names nothing after '://', got '0/x'"):
        open_output("display://0/x")
    from tir.edge.outputs.window import WindowOutput
    from tir.edge.uri import parse_uri

    assert WindowOutput(parse_uri("display://0?view=raw")).view == "raw"   # the README's display://0
    src = open_source("synthetic:///?size=160x120&realtime=0")   # a bare slash is no name
    src.close()
