"""Soak run: ``tir run`` for a long time with a viewer on a stream; RSS and latency every 10 s.

    python -m tir.tools.soak --seconds 600 --csv soak.csv [-- extra tir run options]

Starts ``tir run --port 0 --duration SECONDS`` (default source and model unless given after
``--``), opens ``/stream/side.mjpg`` and reads it for the whole run (one viewer), and every
``--every`` seconds writes: t, the process' resident memory (VmRSS of /proc/PID/status, MiB),
``/stats.json``'s e2e p50/p99 (ms), frame age (ms), fps, frames, drops, the 1-minute load.
Prints start vs end (mean of the first and last three samples after the first minute) and
the change in percent. Exit status: tir run's.
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

FIELDS = ["t_s", "rss_mib", "e2e_p50_ms", "e2e_p99_ms", "frame_age_ms", "fps", "frames", "drops", "load_1m"]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--csv", required=True)
    parser.add_argument("extra", nargs="*", help="more tir run options (after --)")
    args = parser.parse_args(argv)
    cmd = [sys.executable, "-m", "tir.tools", "run", "--port", "0", "--quiet", "--duration", str(args.seconds),
           *args.extra]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
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
    t0 = time.monotonic()
    with open(args.csv, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(FIELDS)
        while child.poll() is None:
            time.sleep(args.every - (time.monotonic() - t0) % args.every)
            try:
                with urllib.request.urlopen(f"{url}/stats.json", timeout=5) as reply:
                    stats = json.load(reply)
                rss = rss_mib(child.pid)
            except (OSError, RuntimeError, ValueError):
                continue
            e2e = stats.get("latency_ms", {}).get("e2e", {})
            drops = sum(v for v in stats.get("drops", {}).values() if isinstance(v, int))
            row = [round(time.monotonic() - t0, 1), round(rss, 1), e2e.get("p50"), e2e.get("p99"),
                   stats.get("frame_age_ms"), stats.get("fps"), stats.get("frames"), drops,
                   round(os.getloadavg()[0], 2)]
            out.writerow(row)
            f.flush()
            rows.append(dict(zip(FIELDS, row)))
    code = child.wait()
    steady = [r for r in rows if r["t_s"] >= 60] or rows
    if len(steady) >= 6:
        for key in ("rss_mib", "e2e_p50_ms", "fps"):
            start = sum(r[key] for r in steady[:3]) / 3
            end = sum(r[key] for r in steady[-3:]) / 3
            print(f"soak: {key} start {start:.1f} end {end:.1f} ({100 * (end - start) / start:+.1f} %)")
    print(f"soak: {len(rows)} samples, viewer read {viewed['bytes'] / 1e6:.0f} MB, tir run exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
