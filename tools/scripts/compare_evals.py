"""Compare two per-camera `tir eval --json` results: two folders of one-camera files
(tools/scripts/camera_gates.sh), or two files of one or more sets each: router accuracy, clean-frame
identity (median / p5 dB) and each task's automatic-routing gain.

Usage: python3 tools/scripts/compare_evals.py BEFORE AFTER [--tol 0.01]   (both folders or both files)
Prints one line per camera whose numbers moved by more than --tol, then a count.
"""
import argparse
import json
import sys
from pathlib import Path


def summary(s: dict) -> dict:
    """{'router': %, 'clean': (median, p5), task: gain_auto dB} of one set's result."""
    out = {"router": s.get("router", {}).get("accuracy_tasks")}
    ci = s.get("clean_identity", {})
    out["clean"] = (ci.get("median"), ci.get("p5"))
    for t, v in s.get("per_task", {}).items():
        out[t] = v.get("gain_auto")
    return out


def cameras(path: Path) -> dict:
    """{camera: summary}: a folder's files (one set each, named by the file), or a file's sets (by set)."""
    if path.is_dir():
        out = {}
        for f in sorted(path.glob("*.json")):
            sets = json.loads(f.read_text())["sets"]
            (s,) = sets.values() if isinstance(sets, dict) else sets
            out[f.stem] = summary(s)
        return out
    sets = json.loads(path.read_text())["sets"]
    items = sets.items() if isinstance(sets, dict) else ((s.get("set", str(i)), s) for i, s in enumerate(sets))
    return {name: summary(s) for name, s in items}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--tol", type=float, default=0.01)
    a = p.parse_args(argv)
    before, after = Path(a.before), Path(a.after)
    for path in (before, after):
        if not path.exists():
            p.error(f"{path} does not exist")
    if before.is_dir() != after.is_dir():
        p.error("give two folders of per-camera JSON files or two JSON files, not one of each")
    cb, ca = cameras(before), cameras(after)
    if not cb:
        p.error(f"{before}: no camera results in it")
    moved = 0
    for name, b in cb.items():
        if name not in ca:
            print(f"{name}: missing in {after}")
            continue
        x = ca[name]
        diffs = []
        for k in b:
            vb, va = b[k], x.get(k)
            if isinstance(vb, tuple):
                if any(u is not None and w is not None and abs(u - w) > a.tol for u, w in zip(vb, va)):
                    diffs.append(f"{k} {vb[0]:.1f}/{vb[1]:.1f} -> {va[0]:.1f}/{va[1]:.1f}")
            elif k == "router" and vb is not None and va is not None and abs(vb - va) > a.tol / 100:
                diffs.append(f"router {100 * vb:.1f} % -> {100 * va:.1f} %")
            elif k != "router" and vb is not None and va is not None and abs(vb - va) > a.tol:
                diffs.append(f"{k} {vb:+.2f} -> {va:+.2f} dB")
        if diffs:
            moved += 1
            print(f"{name}: " + "; ".join(diffs))
    print(f"{moved} camera(s) moved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
