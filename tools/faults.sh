#!/usr/bin/env bash
# Fault injection against a running `tir run`: one line per fault, PASS or FAIL, exit status =
# number of FAILs. Usage: tools/faults.sh [KIND ...]   (default: every kind below)
#
# Each fault kind is one function `fault_<kind>`; add new kinds the same way (they get the
# server's $PORT, $TOKEN, $WORK and $TIR, and call pass/fail once per fault they replay).
# Kinds (issue 10): security: malformed_http, cross_origin_post, tampered_bundle; data loss and
# silent failure: runtime (the pytest 'faults' tests: injected ENOSPC, SIGTERM/SIGINT/SIGHUP at
# start-up and while streaming, a second signal during shutdown, exit with snapshot requests in
# flight, a replay folder removed and restored, damaged PNGs), disk_full (a real 2 MB tmpfs,
# needs root), soak (only when named: `tools/faults.sh soak`, SOAK_S seconds, default 600).
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/tir" ]]; then TIR="$ROOT/.venv/bin/tir"; PY="$ROOT/.venv/bin/python"
else TIR="$(command -v tir)"; PY="$(command -v python3)"; fi
[[ -n "$TIR" ]] || { echo "FAIL setup: no tir on PATH and no $ROOT/.venv; install with pip install -e ." >&2; exit 1; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tir-faults.XXXXXX")"
TOKEN="faults-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
FAILS=0
SERVER_PID=""

pass() { echo "PASS $1: $2"; }
fail() { echo "FAIL $1: $2"; FAILS=$((FAILS + 1)); }

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_server: tir run on the synthetic camera with the shipped model, on a free port with a known token.
start_server() {
    PORT="$(free_port)"
    "$TIR" run --source "synthetic://?size=160x120&fps=15" --quiet --duration 300 \
        --output "http://127.0.0.1:$PORT?token=$TOKEN" >"$WORK/server.out" 2>"$WORK/server.err" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    echo "FAIL setup: tir run did not serve http://127.0.0.1:$PORT ($(tail -n1 "$WORK/server.err"))"
    exit 1
}

# raw_status BYTES: send raw request bytes (printf format) and print the reply's status code.
raw_status() {
    "$PY" - "$PORT" "$1" <<'EOF'
import socket, sys
port, data = int(sys.argv[1]), sys.argv[2].encode().decode("unicode_escape").encode("latin-1")
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.sendall(data)
    reply = b""
    while b"\r\n" not in reply:
        chunk = s.recv(256)
        if not chunk:
            break
        reply += chunk
print(reply.split(b" ")[1].decode() if reply.startswith(b"HTTP/") else "none")
EOF
}

server_alive() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")" == 200 ]]; }

expect_status() {  # NAME "ALLOWED CODES" RAW
    local got
    got="$(raw_status "$3")"
    if [[ " $2 " == *" $got "* ]]; then pass "$1" "HTTP $got"; else fail "$1" "HTTP $got, expected one of $2"; fi
}

fault_malformed_http() {
    local H="Host: 127.0.0.1:$PORT\\r\\n" T="X-Tir-Token: $TOKEN\\r\\n"
    expect_status malformed-content-length-negative "400" "POST /ffc HTTP/1.1\\r\\n$H${T}Content-Length: -1\\r\\n\\r\\n"
    expect_status malformed-content-length-text "400" "POST /ffc HTTP/1.1\\r\\n$H${T}Content-Length: abc\\r\\n\\r\\n"
    expect_status malformed-content-length-twice "400" "POST /ffc HTTP/1.1\\r\\n$H${T}Content-Length: 1\\r\\nContent-Length: 2\\r\\n\\r\\nab"
    # 400 MB announced, none sent: the answer must come without the server waiting for the body
    expect_status oversized-body-announced "413" "POST /ffc HTTP/1.1\\r\\n$H${T}Content-Length: 400000000\\r\\n\\r\\n"
    expect_status long-request-line "400 414" "GET /$(printf 'a%.0s' $(seq 1 20000)) HTTP/1.1\\r\\n$H\\r\\n"
    expect_status too-many-headers "400 431" "GET / HTTP/1.1\\r\\n$H$(for i in $(seq 1 200); do printf 'X-%d: y\\r\\n' "$i"; done)\\r\\n"
    expect_status garbage-request "400" "\\x00\\x01garbage\\r\\n\\r\\n"
    expect_status path-traversal "404" "GET /../../etc/passwd HTTP/1.1\\r\\n$H\\r\\n"
    expect_status path-traversal-encoded "404" "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\\r\\n$H\\r\\n"
    if server_alive && ! grep -q Traceback "$WORK/server.err"; then
        pass malformed-http-aftermath "server answers, no traceback on its console"
    else
        fail malformed-http-aftermath "server down or traceback in $(head -c 300 "$WORK/server.err")"
    fi
}

fault_cross_origin_post() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Origin: http://evil.example' \
        -H 'Content-Type: text/plain' --data 'x' "http://127.0.0.1:$PORT/ffc")"
    [[ "$code" == 403 ]] && pass cross-origin-post "403" || fail cross-origin-post "HTTP $code, expected 403"
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Origin: http://evil.example' \
        -H "X-Tir-Token: $TOKEN" "http://127.0.0.1:$PORT/ffc")"
    [[ "$code" == 403 ]] && pass cross-origin-post-with-token "403" || fail cross-origin-post-with-token "HTTP $code, expected 403"
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/ffc")"
    [[ "$code" == 403 ]] && pass post-without-token "403" || fail post-without-token "HTTP $code, expected 403"
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "Host: rebound.example:$PORT" "http://127.0.0.1:$PORT/stats.json")"
    [[ "$code" == 421 ]] && pass dns-rebinding-host "421" || fail dns-rebinding-host "HTTP $code, expected 421"
    # with the token from the page's own origin the request goes through (409: no camera here)
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Origin: http://127.0.0.1:$PORT" \
        -H "X-Tir-Token: $TOKEN" "http://127.0.0.1:$PORT/ffc")"
    [[ "$code" == 409 ]] && pass same-origin-post-with-token "409 (passes the checks; no camera control)" \
        || fail same-origin-post-with-token "HTTP $code, expected 409"
}

# run_bundle NAME DIR PATTERN: tir run on the bundle must exit 2 with one stderr line matching PATTERN.
run_bundle() {
    local err code
    err="$("$TIR" run --source "synthetic://?size=160x120&realtime=0&frames=2" --model "$2" --frames 1 --quiet \
        --output "http://127.0.0.1:0" 2>&1 >/dev/null)"
    code=$?
    if [[ $code == 2 && "$err" == *"$3"* && "$err" != *Traceback* ]]; then pass "$1" "exit 2: ${err:0:160}"
    else fail "$1" "exit $code: ${err:0:200}"; fi
}

fault_tampered_bundle() {
    local shipped
    shipped="$("$PY" -c 'from tir.engines.bundle import default_bundle_path as d; print(d() or "")')"
    [[ -n "$shipped" ]] || { fail tampered-bundle "no shipped bundle to copy"; return; }
    local b="$WORK/bundle"
    edit() { rm -rf "$b"; cp -r "$shipped" "$b"; "$PY" -c "$1" "$b"; }
    edit 'import sys; p=sys.argv[1]+"/route-noise.onnx"; d=bytearray(open(p,"rb").read()); d[-9]^=1; open(p,"wb").write(d)'
    run_bundle tampered-route "$b" "tampered or mismatched bundle: route-noise.onnx sha256"
    edit 'import sys; open(sys.argv[1]+"/model.pt","ab").write(b"x")'
    run_bundle tampered-checkpoint "$b" "tampered or mismatched bundle: model.pt sha256"
    edit 'import json,sys; p=sys.argv[1]+"/manifest.json"; m=json.load(open(p)); m["router"]["threshold"]=99; json.dump(m,open(p,"w"))'
    run_bundle manifest-threshold-out-of-range "$b" "router.threshold 99 must be a cosine similarity in [-1, 1]"
    edit 'import json,sys; p=sys.argv[1]+"/manifest.json"; m=json.load(open(p)); m["router"]["tasks"]=m["router"]["tasks"][:3]; json.dump(m,open(p,"w"))'
    run_bundle manifest-router-tasks-cut "$b" "router.tasks lists 3 classes but router.codebook has 8 rows"
    edit 'import json,sys; p=sys.argv[1]+"/manifest.json"; m=json.load(open(p)); m["multiple"]=0; m["router"]["temperature"]=-5; json.dump(m,open(p,"w"))'
    run_bundle manifest-multiple-and-temperature "$b" "multiple 0 must be a power of two"
    local err code
    edit 'import sys; open(sys.argv[1]+"/model.pt","ab").write(b"x")'
    err="$("$TIR" learn --bundle "$b" --spec vignetting --name vig --work-dir "$WORK/learn" 2>&1 >/dev/null)"
    code=$?
    if [[ $code == 2 && "$err" == *"model.pt sha256"* ]]; then pass learn-tampered-checkpoint "exit 2"
    else fail learn-tampered-checkpoint "exit $code: ${err:0:200}"; fi
}

fault_runtime() {
    if (cd "$ROOT" && "$PY" -m pytest -q -m faults -p no:cacheprovider >"$WORK/pytest.out" 2>&1); then
        pass runtime "$(tail -n1 "$WORK/pytest.out")"
    else
        fail runtime "$(tail -n3 "$WORK/pytest.out" | tr '\n' ' ')"
    fi
}

fault_disk_full() {
    if [[ "$(id -u)" -ne 0 ]] || ! command -v mount >/dev/null; then
        pass disk-full "skipped: needs root to mount a tmpfs (the runtime kind injects ENOSPC)"; return
    fi
    local dir="$WORK/tmpfs" code
    mkdir -p "$dir"
    if ! mount -t tmpfs -o size=2m tmpfs "$dir" 2>/dev/null; then
        pass disk-full "skipped: cannot mount a tmpfs here (the runtime kind injects ENOSPC)"; return
    fi
    "$TIR" run --duration 8 --port 0 --quiet --record "$dir/rec" >"$WORK/disk.log" 2>&1
    code=$?
    if "$PY" - "$dir/rec" "$code" <<'PYEOF' >"$WORK/disk.check" 2>&1
import sys
from tir.edge.outputs.recorder import read_recording
folder, code = sys.argv[1], int(sys.argv[2])
raw, index = read_recording(folder, "raw")
restored, _ = read_recording(folder, "restored")
assert code == 3, f"exit {code}, expected 3 (recording failed)"
assert len(raw) == len(restored) == len(index) >= 1, (len(raw), len(restored), len(index))
print(f"exit {code}, {len(index)} frames kept, bit-exact readable")
PYEOF
    then pass disk-full "$(cat "$WORK/disk.check")"; else fail disk-full "$(tail -n2 "$WORK/disk.check" | tr '\n' ' ')"; fi
    umount "$dir" 2>/dev/null || true
}

fault_soak() {
    if "$PY" -m tir.tools.soak --seconds "${SOAK_S:-600}" --csv "$WORK/soak.csv" >"$WORK/soak.out" 2>&1; then
        pass soak "$(tail -n1 "$WORK/soak.out")"
    else
        fail soak "$(tail -n2 "$WORK/soak.out" | tr '\n' ' ')"
    fi
}

KINDS=("$@")
[[ ${#KINDS[@]} -gt 0 ]] || KINDS=(malformed_http cross_origin_post tampered_bundle runtime disk_full)
NEEDS_SERVER=0
for kind in "${KINDS[@]}"; do
    declare -F "fault_$kind" >/dev/null || { echo "FAIL $kind: unknown fault kind; known: $(declare -F | sed -n 's/.*fault_//p' | tr '\n' ' ')"; exit 1; }
    [[ $kind == malformed_http || $kind == cross_origin_post ]] && NEEDS_SERVER=1
done
[[ $NEEDS_SERVER == 1 ]] && start_server
for kind in "${KINDS[@]}"; do "fault_$kind"; done
exit "$FAILS"
