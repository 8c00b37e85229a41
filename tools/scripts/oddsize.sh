#!/usr/bin/env bash
# Odd frame sizes and small sensors through `tir run`, end to end (docs/BENCHMARKS.md, docs/cameras.md
# "Odd frame sizes, run end to end"). Prints each run's last status line (fps, e2e p50/p99, drops).
#
#   tools/scripts/oddsize.sh [TIR] [SECONDS]      # TIR: the tir executable (default: tir on PATH), SECONDS: 12
#
# The 336x256 case is a Y16 .npy file: a 336x256 crop of 40 frames of the virtual camera (which
# itself offers 160x120, 256x192, 320x256 and 640x512 only), written to a temporary folder.
set -euo pipefail
TIR=${1:-tir}
SECONDS_EACH=${2:-12}
PY="$(dirname "$(command -v "$TIR")")/python"
[ -x "$PY" ] || PY=python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" - "$WORK/odd336.npy" <<'PY'
import sys
import numpy as np
from tir.edge.sources.synthetic import render_frames
frames = render_frames(40, size=(640, 512), seed=0)
np.save(sys.argv[1], np.ascontiguousarray(frames[:, 100:356, 150:486]))   # 40 x 256 x 336 uint16 counts
PY
run() {
    local label=$1; shift
    local line
    line=$("$TIR" run "$@" --output none --duration "$SECONDS_EACH" 2>&1 | grep '^fps' | tail -1)
    printf '%-32s %s\n' "$label" "${line:-NO STATUS LINE (the run failed)}"
}
run "160x120 noise"           --source "synthetic://?size=160x120&degrade=noise"
run "256x192 CB"              --source "synthetic://?size=256x192&degrade=CB"
run "160x120 CN"              --source "synthetic://?size=160x120&degrade=CN"
run "336x256 Y16 file"        --source "file://$WORK/odd336.npy?loop=1"
run "336x256 Y16 file, noise" --source "file://$WORK/odd336.npy?loop=1" --task noise
