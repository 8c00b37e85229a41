"""Compare two folders of per-camera `tir eval --json` files (tools/scripts/camera_gates.sh):
router accuracy, clean-frame identity (median / p5 dB) and each task's automatic-routing gain.

Usage: python3 tools/scripts/compare_evals.py BEFORE_DIR AFTER_DIR [--tol 0.01]
Prints one line per camera whose numbers moved by more than --tol, then a count.
"""
import argparse
import json
import sys
from pathlib import Path


def summary(path: Path) -> dict:
    """{'router': %, 'clean': (median, p5), task: gain_auto dB} of one file's single set."""
    sets = json.loads(path.read_text())["sets"]
    (s,) = sets.values() if isinstance(sets, dict) else sets
    out = {"router": s.get("router", {}).get("accuracy_tasks")}
    ci = s.get("clean_identity", {})
    out["clean"] = (ci.get("median"), ci.get("p5"))
    for t, v in s.get("per_task", {}).items():
        out[t] = v.get("gain_auto")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--tol", type=float, default=0.01)
    a = p.parse_args(argv)
    moved = 0
    for fb in sorted(Path(a.before).glob("*.json")):
        fa = Path(a.after) / fb.name
        if not fa.exists():
            print(f"{fb.stem}: missing in {a.after}")
            continue
        b, x = summary(fb), summary(fa)
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
            print(f"{fb.stem}: " + "; ".join(diffs))
    print(f"{moved} camera(s) moved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
