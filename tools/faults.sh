#!/usr/bin/env bash
# Fault injection for tir run (issue 10): replays each kind of fault and checks the behaviour.
#
#   tools/faults.sh            # the pytest 'faults' tests + a real full disk when it may mount a tmpfs
#   tools/faults.sh --soak 600 # also the soak: tir run for 600 s with a viewer, RSS/latency every 10 s
#
# Kinds: disk full (injected ENOSPC in the tests; a real 2 MB tmpfs here when run as root),
# SIGTERM/SIGINT/SIGHUP at start-up and while streaming, a second signal during shutdown,
# exit with snapshot requests in flight (SIGABRT check), a replay folder removed and restored
# (NO SIGNAL, back-off, recovery), damaged PNGs (counted, nothing on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SOAK=0
[ "${1:-}" = "--soak" ] && SOAK=${2:-600}

echo "== pytest -m faults"
"$PY" -m pytest -q -m faults

if [ "$(id -u)" -eq 0 ] && command -v mount >/dev/null; then
    echo "== real disk full: tir run --record into a 2 MB tmpfs"
    DIR=$(mktemp -d)
    trap 'umount "$DIR" 2>/dev/null || true; rmdir "$DIR"' EXIT
    if mount -t tmpfs -o size=2m tmpfs "$DIR" 2>/dev/null; then
        set +e
        "$PY" -m tir.tools run --duration 8 --port 0 --quiet --record "$DIR/rec" > "$DIR.log" 2>&1
        code=$?
        set -e
        tail -n 2 "$DIR.log"
        "$PY" - "$DIR/rec" "$code" <<'PYEOF'
import sys
from tir.edge.outputs.recorder import read_recording
folder, code = sys.argv[1], int(sys.argv[2])
raw, index = read_recording(folder, "raw")
restored, _ = read_recording(folder, "restored")
assert code == 3, f"exit {code}, expected 3 (recording failed)"
assert len(raw) == len(restored) == len(index) >= 1, (len(raw), len(restored), len(index))
print(f"disk full: exit {code}, {len(index)} frames kept, bit-exact readable")
PYEOF
        rm -f "$DIR.log"
    else
        echo "   (cannot mount a tmpfs here: skipped; the ENOSPC tests above cover it)"
    fi
else
    echo "== real disk full: skipped (needs root to mount a tmpfs; the ENOSPC tests above cover it)"
fi

if [ "$SOAK" != 0 ]; then
    echo "== soak: $SOAK s"
    "$PY" -m tir.tools.soak --seconds "$SOAK" --csv soak.csv
fi
echo "== faults: all passed"
