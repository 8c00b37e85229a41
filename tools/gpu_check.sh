#!/usr/bin/env bash
# The GPU check (docs/gpu-check.md): on a CUDA machine, install what TensorRT/pycuda need from
# carried wheels, then run the `gpu` tests, calibrate, `tir build`, `tir bench` (model-only across
# backends and precisions) and `tir bench --trt-style` (+ the full pipeline), writing one log and
# one JSON summary into one folder. Every step has a time-out and a failed step is recorded, not
# fatal, so one run gives as much information as it can. A total budget caps the whole run.
#
#   tools/gpu_check.sh [--out DIR] [--dry-run] [--wheels DIR] [--bundle DIR] [--task ROUTE]
#                      [--size WxH] [--frames N] [--calib-frames N] [--step-timeout S] [--budget S]
#
# --dry-run: no GPU needed; the same steps with the ONNX Runtime CPU backend in place of
# TensorRT, and the TensorRT build skipped (recorded as such). CI runs it on tiny sizes.
# Exit status: 0 when every step that ran passed, 1 otherwise, 2 for bad arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${OUT:-./gpu-check-out}"
DRY_RUN=0
WHEELS=".whl"
BUNDLE="engines/bundles/edge"
TASK=""
SIZE="640x512"
FRAMES=200
CALIB_FRAMES=64
STEP_TIMEOUT=240
BUDGET=460          # seconds for the whole run: ~8 min of device time, leaving room for a rerun
BUILD_PRECISIONS="fp32,fp16,int8"  # fp32 too: the model bench compares fp32,fp16,int8
PYTHON="${PYTHON:-}"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT_DIR="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        --bundle) BUNDLE="$2"; shift 2 ;;
        --task) TASK="$2"; shift 2 ;;
        --size) SIZE="$2"; shift 2 ;;
        --frames) FRAMES="$2"; shift 2 ;;
        --calib-frames) CALIB_FRAMES="$2"; shift 2 ;;
        --step-timeout) STEP_TIMEOUT="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for n in "$FRAMES" "$CALIB_FRAMES" "$STEP_TIMEOUT" "$BUDGET"; do
    case "$n" in ''|*[!0-9]*) echo "gpu_check.sh: $n is not a whole number of frames/seconds" >&2; exit 2 ;; esac
done
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"   # plans, calibration: not sent back
export TIR_ENGINE_CACHE="$WORK/engines"
export PYTHONUNBUFFERED=1
LOG="$OUT_DIR/gpu-check.log"
STEPS="$WORK/steps.tsv"
: >"$LOG"
: >"$STEPS"
T0=$(date +%s)
FAILED=0
if [ "$DRY_RUN" = 1 ]; then TRT=onnxruntime; MODE=dry-run; else TRT=tensorrt; MODE=gpu; fi
TIR=("$PYTHON" -m tir.tools)
TASK_ARGS=()
[ -n "$TASK" ] && TASK_ARGS=(--task "$TASK")

write_summary() {
    "$PYTHON" - "$STEPS" "$OUT_DIR/summary.json" "$MODE" "$T0" <<'EOF'
import json, sys, time
rows, out, mode, t0 = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
steps = []
with open(rows, encoding="utf-8") as f:
    for line in f:
        name, status, rc, seconds, command = line.rstrip("\n").split("\t", 4)
        steps.append({"step": name, "status": status, "rc": None if rc == "-" else int(rc),
                      "seconds": float(seconds), "command": command})
doc = {"mode": mode, "wall_s": round(time.time() - t0, 1), "ok": all(s["status"] in ("ok", "skipped") for s in steps),
       "steps": steps, "log": "gpu-check.log"}
with open(out, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
}

record() {  # name status rc seconds command...
    local name="$1" status="$2" rc="$3" secs="$4"; shift 4
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$secs" "$*" >>"$STEPS"
    echo "== $name: $status (rc $rc, ${secs}s)" | tee -a "$LOG"
    write_summary  # after every step, so a run cut short still leaves its summary
}

skip() {  # name reason [status]: "skipped" (by design, counts as ok) or "no-time" (counts as failed)
    echo "== $1: ${3:-skipped}: $2" >>"$LOG"
    record "$1" "${3:-skipped}" - 0 "$2"
}

step() {  # name command... : runs with a time-out, output into the log; never exits the script
    local name="$1"; shift
    local left=$((BUDGET - ($(date +%s) - T0)))
    if [ "$left" -lt 15 ]; then skip "$name" "no time left in the ${BUDGET}s budget" no-time; FAILED=1; return 0; fi
    local limit=$((left < STEP_TIMEOUT ? left : STEP_TIMEOUT))
    { echo; echo "== $name (time-out ${limit}s): $*"; } >>"$LOG"
    local start rc status ms
    start=$(date +%s%N)
    if timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1; then rc=0; else rc=$?; fi
    case "$rc" in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
    [ "$rc" = 0 ] || FAILED=1
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    record "$name" "$status" "$rc" "$((ms / 1000)).$((ms % 1000 / 100))" "$*"
}

environment() {
    echo "mode: $MODE"; echo "date: $(date -u +%FT%TZ)"; echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "python: $PYTHON ($("$PYTHON" --version 2>&1))"
    if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
    else echo "nvidia-smi: not found"; fi
    if command -v nvcc >/dev/null 2>&1; then nvcc --version | tail -2; else echo "nvcc: not found"; fi
    "$PYTHON" -m pip list 2>/dev/null | grep -iE '^(torch|onnx|onnxruntime|onnxruntime-gpu|tensorrt|tensorrt-cu1[23].*|pycuda|cuda-python|cuda-bindings|numpy|opencv.*) ' || true
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1 || true
}

install_carried() {  # wheels (and a pycuda sdist) carried in --wheels DIR: no network on the device
    local site="$WORK/site"
    shopt -s nullglob
    local wheels=("$WHEELS"/*.whl) sdists=("$WHEELS"/pycuda-*.tar.gz)
    shopt -u nullglob
    if [ ${#wheels[@]} -gt 0 ]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}"
        echo "installed into $site: ${wheels[*]}"
    fi
    if [ ${#sdists[@]} -gt 0 ]; then  # PyPI has no pycuda wheels for Linux: build it here with nvcc
        PATH="/usr/local/cuda/bin:$PATH" CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}" \
            "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" "${sdists[@]}"
    fi
    "$PYTHON" -c "import tir.tools" 2>/dev/null || "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e .
    for m in tensorrt pycuda.driver; do
        PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c "import $m; print('$m', getattr($m, '__version__', 'ok'))" \
            || echo "$m: not importable (see docs/gpu-check.md: what must be carried)"
    done
}

echo "gpu_check.sh: $MODE run, output in $OUT_DIR, work folder $WORK, budget ${BUDGET}s" | tee -a "$LOG"
environment >"$OUT_DIR/env.txt" 2>&1 || true
cat "$OUT_DIR/env.txt" >>"$LOG"

export -f install_carried
export WHEELS WORK PYTHON
step install bash -c install_carried
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"

step pytest-gpu "$PYTHON" -m pytest -q -rs -m gpu tests/test_tensorrt_gpu.py -p no:cacheprovider \
    --junitxml "$OUT_DIR/pytest-gpu.xml"

HOLDOUT=$(( CALIB_FRAMES / 4 )); [ "$HOLDOUT" -ge 1 ] || HOLDOUT=1; [ "$HOLDOUT" -le 16 ] || HOLDOUT=16
step calibrate "${TIR[@]}" calibrate --bundle "$BUNDLE" --frames "$CALIB_FRAMES" --size "$SIZE" \
    --holdout "$HOLDOUT" --bench-runs 2 --out "$WORK/int8"
[ -f "$WORK/int8/calibration.json" ] && cp "$WORK/int8/calibration.json" "$OUT_DIR/calibration.json"

if [ "$DRY_RUN" = 1 ]; then
    skip build "dry-run: a TensorRT build needs tensorrt and a CUDA GPU"
else
    step build "${TIR[@]}" build --bundle "$BUNDLE" --precision "$BUILD_PRECISIONS" --size "$SIZE" \
        --calib "$WORK/int8"
fi

backends=("$TRT")
[ "$TRT" = onnxruntime ] || backends+=(onnxruntime)
step bench-model "${TIR[@]}" bench --mode model --model "$BUNDLE" "${TASK_ARGS[@]}" --backend "${backends[@]}" \
    --precision fp32,fp16,int8 --size "$SIZE" --frames "$FRAMES" --warmup 5 --no-progress \
    --json "$OUT_DIR/bench-model.json"

step bench-trt-style "${TIR[@]}" bench --mode both --model "$BUNDLE" "${TASK_ARGS[@]}" --backend "$TRT" \
    --trt-style --size "$SIZE" --frames "$FRAMES" --warmup 5 --no-progress \
    --json "$OUT_DIR/bench-trt-style.json"

write_summary
echo "gpu_check.sh: done in $(( $(date +%s) - T0 ))s; summary $OUT_DIR/summary.json" | tee -a "$LOG"
rm -rf "$WORK"
exit "$FAILED"
