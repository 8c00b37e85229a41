"""Soak run: ``tir run`` for a long time with a viewer on a stream; RSS and latency every 10 s.

    python -m tir.tools.soak --seconds 600 --csv soak.csv [-- extra tir run options]

Starts ``tir run --port 0 --duration SECONDS`` (default source and model unless given after
``--``), opens ``/stream/side.mjpg`` and reads it for the whole run (one viewer), and every
``--every`` seconds writes: t, the process' resident memory (VmRSS of /proc/PID/status, MiB),
``/stats.json``'s e2e p50/p99 (ms), frame age (ms), fps, frames, drops, the 1-minute load, and
the CPU time ``tir run`` spent per frame since the last sample (utime + stime of
/proc/PID/stat, ms per frame: unlike wall-clock latency it hardly moves when other processes
share the cores, so it shows whether the pipeline itself gets slower).

Prints, for each measure over the steady part (after the first minute): start vs end (median
of the first and of the last ``--window`` seconds) and the drift of a robust straight-line fit
over the whole run (Theil-Sen: the median of the slopes of all sample pairs, Sen 1968), as a
share of the run's median. Exit status: tir run's.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from statistics import median

from tir.tools.cli import number, output_file

FIELDS = ["t_s", "rss_mib", "e2e_p50_ms", "e2e_p99_ms", "frame_age_ms", "fps", "frames", "drops", "load_1m",
          "cpu_ms_per_frame"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its waited-for children), in seconds (proc(5): fields 14-17)."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def theil_sen_slope(t, y) -> float:
    """Median of the pairwise slopes (y_j - y_i) / (t_j - t_i) (Sen 1968): a straight-line trend
    that a minority of outliers (a noisy neighbour for a few samples) cannot move."""
    slopes = [(y[j] - y[i]) / (t[j] - t[i]) for i in range(len(t)) for j in range(i + 1, len(t)) if t[j] > t[i]]
    return median(slopes) if slopes else 0.0


def drift_report(rows, window: float = 60.0, skip: float = 60.0):
    """{measure: (start, end, drift %)} over the samples after ``skip`` seconds; start/end are
    medians of the first/last ``window`` seconds, drift = Theil-Sen slope × duration / median."""
    steady = [r for r in rows if r["t_s"] >= skip] or rows
    out = {}
    if len(steady) < 6:
        return out
    t_first, t_last = steady[0]["t_s"], steady[-1]["t_s"]
    for key in ("rss_mib", "e2e_p50_ms", "fps", "cpu_ms_per_frame"):
        pts = [(r["t_s"], r[key]) for r in steady if r.get(key) is not None]
        if len(pts) < 6:
            continue
        t, y = [p[0] for p in pts], [p[1] for p in pts]
        start = median([v for (ti, v) in pts if ti <= t_first + window])
        end = median([v for (ti, v) in pts if ti >= t_last - window])
        med = median(y)
        drift = 100.0 * theil_sen_slope(t, y) * (t[-1] - t[0]) / med if med else 0.0
        out[key] = (start, end, drift)
    return out


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB, from VmRSS of /proc/PID/status (Linux).

    Raises:
        RuntimeError: the status file has no VmRSS line.
        OSError: no such process (the file cannot be read).
    """
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def main(argv=None) -> int:
    """Run the soak: start ``tir run``, view its stream, sample every ``--every`` s into ``--csv``
    and print the start/end and Theil-Sen drift report (see the module docstring).

    Args:
        argv: the command line (default ``sys.argv[1:]``); ``--csv`` is required.

    Returns:
        ``tir run``'s exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    seconds = number(float, 0, low_open=True, what="a number of seconds")
    # --every 0 divided by zero (and a negative one slept a negative time) only after tir run had
    # started, leaving it running without its reader; refused here before anything starts
    parser.add_argument("--seconds", type=seconds, default=600.0)
    parser.add_argument("--every", type=seconds, default=10.0)
    parser.add_argument("--window", type=seconds, default=60.0, help="seconds at each end for start/end medians")
    parser.add_argument("--csv", required=True, type=output_file,   # checked before tir run starts
                        help="the samples' CSV file (a writable path)")
    parser.add_argument("extra", nargs="*", help="more tir run options (after --)")
    args = parser.parse_args(argv)
    try:   # opened before tir run starts: a CSV that cannot be written was a traceback with tir run left running
        samples = open(args.csv, "w", newline="")
    except OSError as exc:
        parser.error(f"--csv {args.csv}: {exc.strerror or exc}")
    with samples:
        return _soak(args, samples)


def _soak(args, samples) -> int:
    """:func:`main` with the CSV file open: start ``tir run``, sample it, report; ``tir run`` is
    stopped (SIGTERM, its clean stop) if the soak itself fails before it ends."""
    cmd = [sys.executable, "-m", "tir.tools", "run", "--port", "0", "--quiet", "--duration", str(args.seconds),
           *args.extra]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        return _sample(args, samples, child)
    finally:
        if child.poll() is None:   # the soak failed (or was interrupted) while tir run streams on
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


def _sample(args, f, child) -> int:
    """Read ``tir run``'s (``child``) start lines for its URL, view its stream, write a row of
    :data:`FIELDS` to ``f`` every ``args.every`` s until it ends, print the drift report;
    returns its exit status."""
    url = None
    for line in child.stdout:
        sys.stdout.write(line)
        found = re.search(r"output (http://\S+)", line)
        if found:
            url = found.group(1).rstrip("/")
            break
    if url is None:
        return child.wait()
    threading.Thread(target=lambda: [sys.stdout.write(line) for line in child.stdout], daemon=True).start()
    viewed = {"bytes": 0}

    def viewer():
        try:
            with urllib.request.urlopen(f"{url}/stream/side.mjpg", timeout=30) as stream:
                while child.poll() is None:
                    chunk = stream.read(65536)
                    if not chunk:
                        break
                    viewed["bytes"] += len(chunk)
        except OSError:
            pass

    threading.Thread(target=viewer, daemon=True).start()
    rows = []
    last_cpu = last_frames = None
    t0 = time.monotonic()
    out = csv.writer(f)
    out.writerow(FIELDS)
    while child.poll() is None:
        time.sleep(args.every - (time.monotonic() - t0) % args.every)
        try:
            with urllib.request.urlopen(f"{url}/stats.json", timeout=5) as reply:
                stats = json.load(reply)
            rss = rss_mib(child.pid)
            cpu = cpu_seconds(child.pid)
        except (OSError, RuntimeError, ValueError):
            continue
        frames = stats.get("frames")
        cpu_per_frame = None
        if last_cpu is not None and isinstance(frames, int) and frames > last_frames:
            cpu_per_frame = round(1000.0 * (cpu - last_cpu) / (frames - last_frames), 2)
        if isinstance(frames, int):
            last_cpu, last_frames = cpu, frames
        e2e = stats.get("latency_ms", {}).get("e2e", {})
        drops = sum(v for v in stats.get("drops", {}).values() if isinstance(v, int))
        row = [round(time.monotonic() - t0, 1), round(rss, 1), e2e.get("p50"), e2e.get("p99"),
               stats.get("frame_age_ms"), stats.get("fps"), stats.get("frames"), drops,
               round(os.getloadavg()[0], 2), cpu_per_frame]
        out.writerow(row)
        f.flush()
        rows.append(dict(zip(FIELDS, row)))
    code = child.wait()
    for key, (start, end, drift) in drift_report(rows, args.window).items():
        print(f"soak: {key} start {start:.1f} end {end:.1f} (medians of the first/last {args.window:.0f} s, "
              f"{100 * (end - start) / start:+.1f} %); trend over the run {drift:+.1f} % (Theil-Sen)")
    print(f"soak: {len(rows)} samples, viewer read {viewed['bytes'] / 1e6:.0f} MB, tir run exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
