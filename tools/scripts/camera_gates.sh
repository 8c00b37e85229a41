#!/usr/bin/env bash
# Run `tir eval` on every emulated camera folder (tools/scripts/emulate_cameras.py wrote them to
# /tmp/unseen*/), one JSON per camera, so two checkouts can be compared with compare_evals.py.
# Usage: tools/scripts/camera_gates.sh REPO OUT [reverse]
# Several copies may run at once on the same OUT: each camera is claimed by a lock file.
set -u
repo=$1; out=$2; order=${3:-}
mkdir -p "$out"
cams=$(ls -d /tmp/unseen*/* | grep -v false_colour)
[ "$order" = reverse ] && cams=$(echo "$cams" | tac)
for c in $cams; do
    n=$(basename "$c")
    [ -e "$out/$n.lock" ] && continue
    touch "$out/$n.lock"
    (cd "$repo" && TIR_DATA_ROOT=${TIR_DATA_ROOT:-/work/shared/data} timeout 900 .venv/bin/tir eval \
        --data "$c" --max-frames 12 --threads 1 --json "$out/$n.json" > "$out/$n.log" 2>&1)
done
