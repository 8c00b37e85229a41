#!/usr/bin/env bash
# The open-world acceptance scenario (issue 13; docs/open-world.md), in three parts:
#
#   collect   the virtual camera streams, through tir run --collect with the shipped bundle,
#             SPEC_SECONDS of a degradation the bundle has never seen (SPEC, default
#             tools/openworld/shading_dead_pixels.json), then NOISE_SECONDS of the known "noise" task
#             (and JPEG_SECONDS of heavy JPEG, default 0), all into one folder; tir discover --from it
#   learn     tir learn --spec <the proposal> on a copy of the shipped bundle (LEARN_STEPS etc.); the
#             proposal is the group's when it fits, else the largest fitting leaf's
#   swap      a live tir run --watch-bundle on a second copy of the shipped bundle, recording frame
#             numbers and times; after SWAP_AT seconds the learned bundle is published into that
#             folder (files first, manifest.json last by an atomic rename, as tir learn --out does);
#             then the recording is checked: frame numbers continuous, the interval at the swap
#             against the median, old routes bit-identical (tools/openworld/swap_report.py)
#
# Usage: tools/openworld_demo.sh OUT_DIR [TIR] [PARTS]   (TIR: the tir command, default `tir`;
#        PARTS: any of "collect learn swap", default all three)
set -euo pipefail
out=${1:?usage: tools/openworld_demo.sh OUT_DIR [TIR] [PARTS]}
tir=${2:-tir}
parts=${3:-collect learn swap}
here=$(cd "$(dirname "$0")" && pwd)
spec=${SPEC:-$here/openworld/shading_dead_pixels.json}
size=${SIZE:-320x256}
py=${PYTHON:-python3}
shipped=$($py -c "from tir.engines.bundle import default_bundle_path as d; print(d() or '')")
[ -n "$shipped" ] || { echo "no installed bundle (engines/bundles/edge)" >&2; exit 2; }
mkdir -p "$out"

has() { case " $parts " in *" $1 "*) return 0;; esac; return 1; }

run() {  # run DEGRADATION SECONDS
  $tir run --source "synthetic://?size=$size&degrade=$1" --duration "$2" --collect "$out/collect" \
    --collect-rate 10 --collect-max-frames 2000 --output http://127.0.0.1:0 --threads 1 --quiet \
    | tee -a "$out/run.log"
  $py -c "import json,sys; c=json.load(open(sys.argv[1]))['counts']; print('after', sys.argv[2], c)" \
    "$out/collect/index.json" "$1" | tee -a "$out/run.log"
}

if has collect; then
  rm -rf "$out/collect" "$out/discover"
  : > "$out/run.log"
  run "$spec" "${SPEC_SECONDS:-30}"
  [ "${JPEG_SECONDS:-0}" = 0 ] || run jpeg "$JPEG_SECONDS"
  run noise "${NOISE_SECONDS:-15}"
  $tir discover --from "$out/collect" --out "$out/discover" | tee "$out/discover.log"
fi

learn_args=(--name "${NAME:-shading}" --work-dir "$out/learn-work" --steps "${LEARN_STEPS:-300}"
            --finetune-steps "${FINETUNE_STEPS:-100}" --field-steps "${FIELD_STEPS:-150}" --batch 8
            --threads "${THREADS:-2}" --router-draws "${ROUTER_DRAWS:-2}" --gate-frames "${GATE_FRAMES:-8}")

if has learn; then
  proposal=$($py - "$out/discover/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
fits = [g["proposal"] for g in r["groups"] if g["proposal"].get("fits")]
fits += sorted((p for p in r["proposals"] if p.get("fits")), key=lambda p: -p.get("frames_fitted", 0))
if not fits:
    sys.exit("no proposal fits: nothing to learn (see report.json)")
print(fits[0]["file"])
EOF
)
  echo "learning from $proposal" | tee "$out/learn.log"
  rm -rf "$out/learned"
  cp -r "$shipped" "$out/learned"
  $tir learn --bundle "$out/learned" --spec "$out/discover/$proposal" "${learn_args[@]}" 2>&1 | tee -a "$out/learn.log"
  cp "$out/discover/$proposal" "$out/learned-from.json"
fi

if has swap; then
  rm -rf "$out/live" "$out/swap-rec"
  cp -r "$shipped" "$out/live"
  token=$($py -c "import secrets; print(secrets.token_urlsafe(24))")
  port=${PORT:-8765}
  # non-live source (realtime=0): lossless, every frame counts, so a lost frame would show
  $tir run --model "$out/live" --watch-bundle 0.5 \
    --source "synthetic://?size=$size&degrade=$spec&realtime=0&ffc=0" --duration "${SWAP_SECONDS:-45}" \
    --output "http://127.0.0.1:$port?token=$token" --record "$out/swap-rec" --threads 1 > "$out/swap-run.log" 2>&1 &
  runpid=$!
  sleep "${SWAP_AT:-20}"
  # publish the learned bundle (version 2) into the live folder: files first, the manifest last
  find "$out/learned" -maxdepth 1 -type f ! -name manifest.json -exec cp {} "$out/live/" \;
  cp "$out/learned/manifest.json" "$out/live/manifest.json.tmp"
  mv "$out/live/manifest.json.tmp" "$out/live/manifest.json"
  echo "published $out/learned into $out/live at $(date -u +%T)" | tee -a "$out/swap-run.log"
  for _ in $(seq 60); do
    if curl -s "http://127.0.0.1:$port/stats.json" | $py -c \
        "import json,sys; b=json.load(sys.stdin)['model']['bundle']; sys.exit(0 if b['swaps'] else 1)"; then break; fi
    sleep 1
  done
  curl -s "http://127.0.0.1:$port/stats.json" > "$out/swap-stats.json"
  curl -s -o /dev/null -w "POST /bundle/reload without the token: %{http_code}\n" -X POST \
    "http://127.0.0.1:$port/bundle/reload" | tee -a "$out/swap-run.log"
  wait $runpid || true
  $py "$here/openworld/swap_report.py" "$out" "$shipped" | tee "$out/swap-report.txt"
fi
