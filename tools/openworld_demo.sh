#!/usr/bin/env bash
# The open-world acceptance scenario, collect + discover + propose (issue 13 items 1-3;
# docs/open-world.md). The virtual camera streams, for 60 s of frames in all:
#   30 s  vignetting + column FPN (tools/openworld/vignetting_stripes.json: never seen by the router)
#   15 s  heavy JPEG (quality 5-15: never seen by the router)
#   15 s  the known "noise" task (its uncertain frames are collected too: they must land near "noise")
# each with tir run --collect into one folder, then tir discover --from that folder.
# Usage: tools/openworld_demo.sh OUT_DIR [TIR]   (TIR: the tir command, default `tir`)
set -euo pipefail
out=${1:?usage: tools/openworld_demo.sh OUT_DIR [TIR]}
tir=${2:-tir}
here=$(cd "$(dirname "$0")" && pwd)
spec="$here/openworld/vignetting_stripes.json"
size=${SIZE:-320x256}
rm -rf "$out/collect"
mkdir -p "$out"
run() {  # run DEGRADATION SECONDS
  $tir run --source "synthetic://?size=$size&degrade=$1" --duration "$2" --collect "$out/collect" \
    --collect-rate 10 --collect-max-frames 2000 --output http://127.0.0.1:0 --threads 1 --quiet \
    | tee -a "$out/run.log"
  python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['counts']; print('after', sys.argv[2], c)" \
    "$out/collect/index.json" "$1" | tee -a "$out/run.log"
}
: > "$out/run.log"
run "$spec" "${VS_SECONDS:-30}"
run jpeg "${JPEG_SECONDS:-15}"
run noise "${NOISE_SECONDS:-15}"
$tir discover --from "$out/collect" --out "$out/discover" | tee "$out/discover.log"
