"""The soak's trend arithmetic (tools/soak.py): robust to a few outliers, exact on a line."""
import os

import pytest

from tir.tools.soak import cpu_seconds, drift_report, theil_sen_slope


def test_theil_sen_recovers_a_line_and_ignores_a_few_outliers():
    t = list(range(0, 600, 10))
    y = [50.0 + 0.01 * ti for ti in t]
    assert theil_sen_slope(t, y) == pytest.approx(0.01)
    y[5] += 40.0  # a noisy neighbour for two samples
    y[30] -= 30.0
    assert theil_sen_slope(t, y) == pytest.approx(0.01, abs=1e-3)


def test_drift_report_flat_run_with_spikes_is_flat_and_growth_is_seen():
    rows = []
    for i, t in enumerate(range(0, 610, 10)):
        latency = 60.0 + (30.0 if i in (20, 21, 40) else 0.0)
        rows.append({"t_s": float(t), "rss_mib": 100.0 + 0.01 * t, "e2e_p50_ms": latency, "fps": 30.0,
                     "cpu_ms_per_frame": None if i == 0 else 40.0})
    rep = drift_report(rows)
    start, end, drift = rep["e2e_p50_ms"]
    assert start == end == 60.0 and drift == pytest.approx(0.0)
    # rss grows 0.01 MiB/s over 540 s of steady run: +5.4 MiB on a median of ~103.5
    assert rep["rss_mib"][2] == pytest.approx(100 * 0.01 * 540 / 103.5, rel=0.02)
    assert rep["cpu_ms_per_frame"][2] == 0.0


def test_cpu_seconds_of_this_process_grows_with_work():
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds(os.getpid()) > before


@pytest.mark.parametrize("option,value", [("--every", "0"), ("--every", "-10"), ("--seconds", "-5"),
                                          ("--window", "nan")])
def test_the_soak_refuses_a_zero_or_negative_time_before_starting_tir_run(tmp_path, monkeypatch, option, value):
    # --every 0 raised ZeroDivisionError after tir run had started, leaving it running unread
    import subprocess

    from tir.tools import soak

    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or pytest.fail("tir run started"))
    with pytest.raises(SystemExit) as stop:
        soak.main(["--csv", str(tmp_path / "s.csv"), option, value])
    assert stop.value.code == 2 and not started and not (tmp_path / "s.csv").exists()


def test_a_csv_that_cannot_be_written_is_refused_before_tir_run_starts(tmp_path, monkeypatch, capsys):
    # the CSV was opened after tir run had started: a traceback, and tir run left streaming
    import subprocess

    from tir.tools import soak

    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("tir run started"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as stop:
        soak.main(["--csv", str(tmp_path / "file" / "s.csv"), "--seconds", "1"])
    assert stop.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err


def test_tir_run_is_stopped_when_the_soak_fails(tmp_path, monkeypatch):
    import subprocess

    from tir.tools import soak

    class Child:
        terminated = False

        def poll(self):
            return 0 if self.terminated else None

        def terminate(self):
            self.terminated = True

        def wait(self, timeout=None):
            return 0

    child = Child()
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: child)
    monkeypatch.setattr(soak, "_sample", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        soak.main(["--csv", str(tmp_path / "s.csv"), "--seconds", "1"])
    assert child.terminated
